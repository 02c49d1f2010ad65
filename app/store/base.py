"""The call store: call records and used stream tokens, kept where every replica can reach them.

Theory of operation. A call's record lives in memory while the call runs (app/call/registry.py), because the
call changes it on the event loop and must never wait for a disk or a network. What a store holds is a copy,
written behind the call: the registry and a per-call subscriber turn each change (a call opened or closed, a
turn completed, a barge-in settled) into a `Write` row, snapshotted on the loop, and hand it to the
`StoreWriter` (app/store/writer.py), which writes batches of them from a task of its own, one transaction
a batch. Every write is an upsert keyed by the row's identity, so writing a row twice, or a batch again after
a failure, leaves the same rows.

Rows keep the record's fields as JSON (`data`), beside the few columns a query needs (call id, provider,
start, end): a field added to `Turn` or `BargeInEvent` needs no migration, and an older row read by a newer
build gets the new field's default (`record_from_rows`).

Used stream tokens are one row per (provider, call id): claiming one is an insert that succeeds once, in one
statement, so two replicas racing for the same call cannot both win. A row is forgotten after `forget_at`
(the token's expiry plus the replay window, app/stream_tokens.py), and a claim may take over a forgotten row.

Two backends implement `CallStore`: SQLite (app/store/sqlite.py, one file, one writer thread) and
PostgreSQL (app/store/postgres.py, asyncpg, for several replicas). `open_store` (app/store/__init__.py)
picks one from CALL_STORE_URL.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.transcript import BargeInEvent, CallRecord, Turn


class StoreError(Exception):
    """The store could not do what was asked (connection, schema, a failed statement); the cause is chained."""


@dataclass(frozen=True, slots=True)
class CallRow:
    """A call's header. `fresh`: a new call under this id (its old turns and barge-ins are dropped first)."""

    call_id: str
    provider: str
    started_at: float
    ended_at: float | None
    end_reason: str | None
    data: dict[str, Any]  # stream_ids, invalid_frames, generation
    fresh: bool = False


@dataclass(frozen=True, slots=True)
class TurnRow:
    call_id: str
    turn_id: int
    data: dict[str, Any]  # the Turn's fields


@dataclass(frozen=True, slots=True)
class BargeInRow:
    call_id: str
    seq: int  # its place in the call's list of barge-ins (ids are strings, the order is the record's)
    data: dict[str, Any]  # the BargeInEvent's fields


Write = CallRow | TurnRow | BargeInRow


class CallStore(Protocol):
    """Where call records and used tokens are kept. Every method may raise StoreError."""

    @property
    def shared(self) -> bool:
        """True when other hosts may use the same store (PostgreSQL), so replicas elsewhere see its rows."""
        ...

    async def start(self) -> None:
        """Connect, and create or migrate the schema (idempotent; safe when replicas start together)."""
        ...

    async def aclose(self) -> None: ...

    async def write(self, batch: Sequence[Write]) -> None:
        """Apply the rows in order, in one transaction."""
        ...

    async def claim_token(self, provider: str, call_id: str, now: float, forget_at: float) -> bool:
        """True exactly once per (provider, call id) until `forget_at` (wall-clock seconds) has passed."""
        ...

    async def forget_tokens(self, now: float) -> int:
        """Delete used-token rows whose `forget_at` has passed; how many went."""
        ...

    async def forget_calls(self, before: float, limit: int) -> int:
        """Delete up to `limit` calls that started before `before` (wall-clock seconds), with their turns and
        barge-ins, oldest first, in one transaction; how many calls went."""
        ...

    async def get_call(self, call_id: str) -> CallRecord | None: ...

    async def recent_calls(self, limit: int) -> list[CallRecord]:
        """Up to `limit` calls, newest start first."""
        ...


# -- the schema ---------------------------------------------------------------------------------------------
# Each migration is a list of statements run in one transaction; the version reached is kept in
# bargein_schema. Append, never edit: a deployed database has run the old ones. `{json}` is the JSON column
# type (TEXT in SQLite, JSONB in PostgreSQL), `{real}` a double.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS bargein_calls (
            call_id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            started_at {real} NOT NULL,
            ended_at {real},
            end_reason TEXT,
            data {json} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS bargein_calls_started ON bargein_calls (started_at)",
        """CREATE TABLE IF NOT EXISTS bargein_turns (
            call_id TEXT NOT NULL,
            turn_id INTEGER NOT NULL,
            data {json} NOT NULL,
            PRIMARY KEY (call_id, turn_id)
        )""",
        """CREATE TABLE IF NOT EXISTS bargein_bargeins (
            call_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            data {json} NOT NULL,
            PRIMARY KEY (call_id, seq)
        )""",
        """CREATE TABLE IF NOT EXISTS bargein_stream_tokens (
            provider TEXT NOT NULL,
            call_id TEXT NOT NULL,
            used_at {real} NOT NULL,
            forget_at {real} NOT NULL,
            PRIMARY KEY (provider, call_id)
        )""",
        "CREATE INDEX IF NOT EXISTS bargein_stream_tokens_forget ON bargein_stream_tokens (forget_at)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def migration_statements(version: int, real: str, json_type: str) -> list[str]:
    """The statements of migration `version` (1-based) for a backend's column types."""
    return [s.format(real=real, json=json_type) for s in MIGRATIONS[version - 1]]


# -- rows from a record, and a record from rows ----------------------------------------------------------------
# A row is a shallow copy taken on the loop (a turn is still the call's to change): 0.7 us where
# dataclasses.asdict's deep copy costs 10. Shallow is enough while every field is a scalar (str, number, bool,
# None); a field holding a list or a dict would need copying here.
_TURN_ORDER = tuple(f.name for f in dataclasses.fields(Turn))
_BARGEIN_ORDER = tuple(f.name for f in dataclasses.fields(BargeInEvent))
_TURN_FIELDS = frozenset(_TURN_ORDER)
_BARGEIN_FIELDS = frozenset(_BARGEIN_ORDER)

def call_row(record: CallRecord, fresh: bool = False) -> CallRow:
    return CallRow(
        record.call_id, record.provider, record.started_at, record.ended_at, record.end_reason,
        {"stream_ids": list(record.stream_ids), "invalid_frames": record.invalid_frames,
         "generation": record.generation},
        fresh,
    )


def turn_row(call_id: str, turn: Turn) -> TurnRow:
    return TurnRow(call_id, turn.id, {name: getattr(turn, name) for name in _TURN_ORDER})


def bargein_row(call_id: str, seq: int, event: BargeInEvent) -> BargeInRow:
    return BargeInRow(call_id, seq, {name: getattr(event, name) for name in _BARGEIN_ORDER})


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=False)




def _known(data: dict[str, Any] | str, fields: frozenset[str]) -> dict[str, Any]:
    # A row written by a newer build may carry fields this one does not know: they are left out.
    values = json.loads(data) if isinstance(data, str) else data
    return {k: v for k, v in values.items() if k in fields}


def record_from_rows(
    call_id: str,
    provider: str,
    started_at: float,
    ended_at: float | None,
    end_reason: str | None,
    data: dict[str, Any] | str,
    turns: Sequence[dict[str, Any] | str],
    bargeins: Sequence[dict[str, Any] | str],
) -> CallRecord:
    """A CallRecord from its stored rows (turns in turn-id order, barge-ins in `seq` order)."""
    header = json.loads(data) if isinstance(data, str) else data
    record = CallRecord(
        call_id=call_id,
        provider=provider,
        started_at=started_at,
        stream_ids=list(header.get("stream_ids", [])),
        ended_at=ended_at,
        end_reason=end_reason,
        turns=[Turn(**_known(t, _TURN_FIELDS)) for t in turns],
        bargeins=[BargeInEvent(**_known(b, _BARGEIN_FIELDS)) for b in bargeins],
        invalid_frames=int(header.get("invalid_frames", 0)),
        generation=int(header.get("generation", 0)),
    )
    record._next_turn = max((t.id for t in record.turns), default=0) + 1
    return record
