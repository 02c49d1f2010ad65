"""SqliteStore: the call store in one SQLite file, driven by the standard library's sqlite3 in one thread.

Why the standard library and one thread of our own rather than aiosqlite: aiosqlite is the same thing (one
thread per connection, each call handed over and awaited), but a call per statement. Here the thread runs a
whole batch (every row the writer has waiting, one transaction, one commit) in one hand-over, so a burst of
turns from a hundred calls costs one commit and one wake-up of the loop, and no dependency is added. Every
method runs in that thread, which alone holds the connection (sqlite3's default same-thread check stays on).

Durability. WAL journal with synchronous=NORMAL: a committed transaction is in the WAL file before COMMIT
returns, so it survives the process being killed (kill -9, a crash, an OOM kill); what NORMAL gives up against
FULL is only the last transactions on a power loss or kernel crash, for no fsync on every commit. Several
processes may share the file (WORKERS > 1 on one host): WAL lets readers run beside the one writer, and
busy_timeout makes a writer wait its turn instead of failing.

URLs: sqlite:///relative/path.db (three slashes, relative to the working directory), sqlite:////abs/path.db
(four: absolute), as SQLAlchemy spells them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

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

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000  # another process's transaction is waited for this long before the write fails


def sqlite_path(url: str) -> str:
    """The file a sqlite:// URL names: sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError("CALL_STORE_URL: a SQLite URL names a file: sqlite:///relative.db or sqlite:////absolute.db")
    return url[len(prefix):]


class SqliteStore:
    shared = False  # one host: processes on it share the file, other hosts cannot

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bargein-sqlite")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise StoreError("the SQLite store is not open")
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.rollback()
                raise StoreError(f"SQLite: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def start(self) -> None:
        def connect() -> None:
            try:
                parent = Path(self.path).parent
                parent.mkdir(parents=True, exist_ok=True)
                # isolation_level=None: no implicit transactions; each batch says BEGIN and COMMIT itself.
                db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000.0)
                # Switching to WAL takes an exclusive lock that SQLite's busy handler does not wait for: replicas
                # opening one new file together retry it (on the store's own thread, never the event loop).
                for attempt in range(100):
                    try:
                        db.execute("PRAGMA journal_mode=WAL")
                        break
                    except sqlite3.OperationalError:
                        if attempt == 99:
                            raise
                        time.sleep(0.02)
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                self._migrate(db)
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"cannot open the SQLite store {self.path!r}: {exc}") from exc
            self._db = db

        await asyncio.get_running_loop().run_in_executor(self._pool, connect)

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock first: two processes starting together migrate one after the other.
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS bargein_schema (version INTEGER NOT NULL)")
            row = db.execute("SELECT MAX(version) FROM bargein_schema").fetchone()
            current = int(row[0] or 0)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in migration_statements(version, real="REAL", json_type="TEXT"):
                    db.execute(statement)
                db.execute("INSERT INTO bargein_schema (version) VALUES (?)", (version,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def aclose(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._pool, close)
        self._pool.shutdown(wait=True)

    async def write(self, batch: Sequence[Write]) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            for row in batch:
                _apply(db, row)
            db.execute("COMMIT")

        await self._run(write)

    async def claim_token(self, provider: str, call_id: str, now: float, forget_at: float) -> bool:
        def claim(db: sqlite3.Connection) -> bool:
            # One statement: inserted, or took over a row already forgotten; else someone used the token.
            cursor = db.execute(
                "INSERT INTO bargein_stream_tokens (provider, call_id, used_at, forget_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (provider, call_id) DO UPDATE SET used_at = excluded.used_at, "
                "forget_at = excluded.forget_at WHERE bargein_stream_tokens.forget_at <= ?",
                (provider, call_id, now, forget_at, now),
            )
            return cursor.rowcount == 1

        return await self._run(claim)

    async def forget_tokens(self, now: float) -> int:
        def forget(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM bargein_stream_tokens WHERE forget_at <= ?", (now,)).rowcount

        return await self._run(forget)

    async def forget_calls(self, before: float, limit: int) -> int:
        def forget(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            ids = [r[0] for r in db.execute(
                "SELECT call_id FROM bargein_calls WHERE started_at < ? ORDER BY started_at LIMIT ?",
                (before, max(limit, 0)))]
            for table in ("bargein_turns", "bargein_bargeins", "bargein_calls"):
                db.executemany(f"DELETE FROM {table} WHERE call_id = ?", [(call_id,) for call_id in ids])
            db.execute("COMMIT")
            return len(ids)

        return await self._run(forget)

    async def get_call(self, call_id: str) -> CallRecord | None:
        def get(db: sqlite3.Connection) -> CallRecord | None:
            row = db.execute(
                "SELECT call_id, provider, started_at, ended_at, end_reason, data FROM bargein_calls "
                "WHERE call_id = ?", (call_id,),
            ).fetchone()
            return None if row is None else _load(db, row)

        return await self._run(get)

    async def recent_calls(self, limit: int) -> list[CallRecord]:
        def recent(db: sqlite3.Connection) -> list[CallRecord]:
            rows = db.execute(
                "SELECT call_id, provider, started_at, ended_at, end_reason, data FROM bargein_calls "
                "ORDER BY started_at DESC LIMIT ?", (max(limit, 0),),
            ).fetchall()
            return [_load(db, row) for row in rows]

        return await self._run(recent)


def _apply(db: sqlite3.Connection, row: Write) -> None:
    match row:
        case CallRow():
            if row.fresh:
                db.execute("DELETE FROM bargein_turns WHERE call_id = ?", (row.call_id,))
                db.execute("DELETE FROM bargein_bargeins WHERE call_id = ?", (row.call_id,))
            db.execute(
                "INSERT INTO bargein_calls (call_id, provider, started_at, ended_at, end_reason, data) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (call_id) DO UPDATE SET provider = excluded.provider, "
                "started_at = excluded.started_at, ended_at = excluded.ended_at, "
                "end_reason = excluded.end_reason, data = excluded.data",
                (row.call_id, row.provider, row.started_at, row.ended_at, row.end_reason, dumps(row.data)),
            )
        case TurnRow():
            db.execute(
                "INSERT INTO bargein_turns (call_id, turn_id, data) VALUES (?, ?, ?) "
                "ON CONFLICT (call_id, turn_id) DO UPDATE SET data = excluded.data",
                (row.call_id, row.turn_id, dumps(row.data)),
            )
        case BargeInRow():
            db.execute(
                "INSERT INTO bargein_bargeins (call_id, seq, data) VALUES (?, ?, ?) "
                "ON CONFLICT (call_id, seq) DO UPDATE SET data = excluded.data",
                (row.call_id, row.seq, dumps(row.data)),
            )


def _load(db: sqlite3.Connection, row: tuple[str, str, float, float | None, str | None, str]) -> CallRecord:
    call_id = row[0]
    turns = [r[0] for r in db.execute(
        "SELECT data FROM bargein_turns WHERE call_id = ? ORDER BY turn_id", (call_id,))]
    bargeins = [r[0] for r in db.execute(
        "SELECT data FROM bargein_bargeins WHERE call_id = ? ORDER BY seq", (call_id,))]
    return record_from_rows(row[0], row[1], row[2], row[3], row[4], row[5], turns, bargeins)
