"""Fixtures for the call-store tests: a store URL for each backend (SQLite file, real PostgreSQL database)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.pg import Postgres, start_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pg = start_postgres()
    yield pg
    pg.stop()


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def pg_url(postgres: Postgres) -> Iterator[str]:
    """A fresh, empty database on the test PostgreSQL, dropped afterwards."""
    if postgres.url is None:
        pytest.skip(f"PostgreSQL unavailable: {postgres.reason}")
    name = f"bargein_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(postgres.url, f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the server named by the env var may be down
        pytest.skip(f"PostgreSQL at {postgres.url.split('@')[-1]} unavailable: {exc}")
    base, _, _ = postgres.url.rpartition("/")
    yield f"{base}/{name}"
    asyncio.run(_admin(postgres.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store, once for each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/calls.db"
    return str(request.getfixturevalue("pg_url"))
