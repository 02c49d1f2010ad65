"""PostgresStore: the call store in PostgreSQL, through asyncpg, for several replicas on several hosts.

Why asyncpg: it speaks PostgreSQL's binary protocol natively on asyncio (no thread per query, no libpq), is
maintained by the MagicStack (uvloop) authors, and sends every value as a bind parameter of a prepared
statement, so there is no SQL text built from data anywhere. Its I/O runs on the event loop without blocking
it; the calls never await it (the writer task does, app/store/writer.py).

Replicas starting together migrate one at a time: the migration transaction takes a transaction-level
advisory lock first. Rows' `data` is JSONB, so an operator can query inside a turn.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import asyncpg

from app.store.base import (
    SCHEMA_VERSION,
    BargeInRow,
    CallRow,
    StoreError,
    TurnRow,
    Write,
    dumps,
    migration_statements,
    record_from_rows,
)
from app.transcript import CallRecord

_MIGRATION_LOCK = 0x62617267  # pg_advisory_xact_lock key for schema changes ("barg")
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 10.0

_CALL_COLUMNS = "call_id, provider, started_at, ended_at, end_reason, data::text AS data"


class PostgresStore:
    shared = True

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self._dsn = dsn
        self._min = min_size
        self._max = max_size
        self._pool: asyncpg.Pool | None = None

    def _need_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open")
        return self._pool

    async def start(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self._min, max_size=self._max, timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute("CREATE TABLE IF NOT EXISTS bargein_schema (version INTEGER NOT NULL)")
                current = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM bargein_schema"))
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    for statement in migration_statements(version, real="DOUBLE PRECISION", json_type="JSONB"):
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO bargein_schema (version) VALUES ($1)", version)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            raise StoreError(f"cannot open the PostgreSQL store: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def write(self, batch: Sequence[Write]) -> None:
        try:
            async with self._need_pool().acquire() as conn, conn.transaction():
                await _apply(conn, batch)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise StoreError(f"PostgreSQL write: {type(exc).__name__}: {exc}") from exc

    async def claim_token(self, provider: str, call_id: str, now: float, forget_at: float) -> bool:
        try:
            claimed = await self._need_pool().fetchval(
                "INSERT INTO bargein_stream_tokens (provider, call_id, used_at, forget_at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (provider, call_id) DO UPDATE SET used_at = excluded.used_at, "
                "forget_at = excluded.forget_at WHERE bargein_stream_tokens.forget_at <= $3 RETURNING 1",
                provider, call_id, now, forget_at,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise StoreError(f"PostgreSQL token claim: {type(exc).__name__}: {exc}") from exc
        return bool(claimed == 1)

    async def forget_tokens(self, now: float) -> int:
        try:
            status = await self._need_pool().execute(
                "DELETE FROM bargein_stream_tokens WHERE forget_at <= $1", now)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise StoreError(f"PostgreSQL token forget: {type(exc).__name__}: {exc}") from exc
        return int(str(status).rsplit(" ", 1)[-1])  # "DELETE <n>"

    async def forget_calls(self, before: float, limit: int) -> int:
        try:
            async with self._need_pool().acquire() as conn, conn.transaction():
                ids = [r["call_id"] for r in await conn.fetch(
                    "SELECT call_id FROM bargein_calls WHERE started_at < $1 ORDER BY started_at LIMIT $2 "
                    "FOR UPDATE SKIP LOCKED", before, max(limit, 0))]
                for table in ("bargein_turns", "bargein_bargeins", "bargein_calls"):
                    await conn.execute(f"DELETE FROM {table} WHERE call_id = ANY($1::text[])", ids)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise StoreError(f"PostgreSQL call forget: {type(exc).__name__}: {exc}") from exc
        return len(ids)

    async def get_call(self, call_id: str) -> CallRecord | None:
        try:
            async with self._need_pool().acquire() as conn:
                row = await conn.fetchrow(f"SELECT {_CALL_COLUMNS} FROM bargein_calls WHERE call_id = $1", call_id)
                return None if row is None else await _load(conn, row)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise StoreError(f"PostgreSQL read: {type(exc).__name__}: {exc}") from exc

    async def recent_calls(self, limit: int) -> list[CallRecord]:
        try:
            async with self._need_pool().acquire() as conn:
                rows = await conn.fetch(
                    f"SELECT {_CALL_COLUMNS} FROM bargein_calls ORDER BY started_at DESC LIMIT $1", max(limit, 0))
                return [await _load(conn, row) for row in rows]
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise StoreError(f"PostgreSQL read: {type(exc).__name__}: {exc}") from exc


_UPSERT_CALL = (
    "INSERT INTO bargein_calls (call_id, provider, started_at, ended_at, end_reason, data) "
    "VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (call_id) DO UPDATE SET "
    "provider = excluded.provider, started_at = excluded.started_at, ended_at = excluded.ended_at, "
    "end_reason = excluded.end_reason, data = excluded.data"
)
_UPSERT_TURN = (
    "INSERT INTO bargein_turns (call_id, turn_id, data) VALUES ($1, $2, $3::jsonb) "
    "ON CONFLICT (call_id, turn_id) DO UPDATE SET data = excluded.data"
)
_UPSERT_BARGEIN = (
    "INSERT INTO bargein_bargeins (call_id, seq, data) VALUES ($1, $2, $3::jsonb) "
    "ON CONFLICT (call_id, seq) DO UPDATE SET data = excluded.data"
)


async def _apply(conn: Any, batch: Sequence[Write]) -> None:
    # Runs of one kind of row go as one executemany (pipelined: one round trip, not one a row), in batch order.
    # Within a run of call rows, a fresh call's old turns and barge-ins are deleted first; no turn or barge-in
    # row sits inside the run, so that is the order the rows came in.
    for kind, group in itertools.groupby(batch, key=type):
        rows = list(group)
        if kind is CallRow:
            calls = [r for r in rows if isinstance(r, CallRow)]
            fresh = [r.call_id for r in calls if r.fresh]
            if fresh:
                await conn.execute("DELETE FROM bargein_turns WHERE call_id = ANY($1::text[])", fresh)
                await conn.execute("DELETE FROM bargein_bargeins WHERE call_id = ANY($1::text[])", fresh)
            await conn.executemany(_UPSERT_CALL, [
                (r.call_id, r.provider, r.started_at, r.ended_at, r.end_reason, dumps(r.data)) for r in calls])
        elif kind is TurnRow:
            await conn.executemany(_UPSERT_TURN, [
                (r.call_id, r.turn_id, dumps(r.data)) for r in rows if isinstance(r, TurnRow)])
        elif kind is BargeInRow:
            await conn.executemany(_UPSERT_BARGEIN, [
                (r.call_id, r.seq, dumps(r.data)) for r in rows if isinstance(r, BargeInRow)])


async def _load(conn: Any, row: Any) -> CallRecord:
    call_id = row["call_id"]
    turns = [r["data"] for r in await conn.fetch(
        "SELECT data::text AS data FROM bargein_turns WHERE call_id = $1 ORDER BY turn_id", call_id)]
    bargeins = [r["data"] for r in await conn.fetch(
        "SELECT data::text AS data FROM bargein_bargeins WHERE call_id = $1 ORDER BY seq", call_id)]
    return record_from_rows(call_id, row["provider"], row["started_at"], row["ended_at"], row["end_reason"],
                            row["data"], turns, bargeins)
