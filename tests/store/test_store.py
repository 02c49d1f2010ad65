"""The call store on both backends (a SQLite file, a real PostgreSQL): records round-trip, a used stream token is
refused by another replica's store, the schema is created once however often the stores start, and the writer
keeps a call going when the store fails."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from app.call.registry import CallRegistry
from app.clock import FakeClock
from app.metrics import Metrics
from app.store import open_store
from app.store.base import SCHEMA_VERSION, CallStore, StoreError, Write, call_row
from app.store.writer import StoreWriter
from app.stream_tokens import StreamTokens
from app.transcript import BargeInEvent, CallRecord

CALL = "CA" + "1" * 32


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (the suite's tests call asyncio.run themselves)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def a_record(call_id: str = CALL, started_at: float = 1_700_000_000.0) -> CallRecord:
    record = CallRecord(call_id=call_id, provider="twilio", started_at=started_at, stream_ids=["MZ1"])
    greeting = record.new_turn("agent", started_at + 0.1)
    greeting.text = greeting.heard_text = "Hello, thanks for"
    greeting.intended_text = "Hello, thanks for calling."
    greeting.interrupted = True
    greeting.heard_chars, greeting.heard_audio_ms, greeting.audio_ms = 17, 980.5, 2100.0
    greeting.ended_at = started_at + 1.2
    caller = record.new_turn("user", started_at + 1.0)
    caller.text = "where is my order"
    caller.ended_at = started_at + 2.5
    record.bargeins.append(BargeInEvent(
        id="b1", turn_id=greeting.id, at=started_at + 1.1, confidence=0.97, sustained_ms=64.0, peak_dbfs=-20.5,
        clear_sent_ms=1.2, tts_stopped_ms=1.5, llm_closed_ms=None, total_ms=3.0, cut_word_index=3,
        cut_char_offset=17, heard_audio_ms=980.5, outcome="stopped", reason="caller", settled_ms=120.0,
    ))
    record.bargeins.append(BargeInEvent(
        id="b2", turn_id=None, at=started_at + 3.0, confidence=0.91, sustained_ms=70.0, peak_dbfs=-25.0,
        clear_sent_ms=1.0, tts_stopped_ms=None, llm_closed_ms=None, total_ms=2.0, cut_word_index=None,
        cut_char_offset=None, heard_audio_ms=None, outcome="resumed", reason="backchannel",
    ))
    record.invalid_frames = 2
    record.generation = 1
    return record


async def opened(url: str) -> CallStore:
    store = open_store(url)
    assert store is not None
    await store.start()
    return store


def writer_for(store: CallStore) -> StoreWriter:
    writer = StoreWriter(store, Metrics())
    writer.start()
    return writer


def comparable(record: CallRecord) -> dict[str, Any]:
    return record.to_json()


@in_loop
async def test_a_call_with_its_turns_and_bargeins_round_trips(store_url: str) -> None:
    store = await opened(store_url)
    writer = writer_for(store)
    try:
        record = a_record()
        writer.opened(record, fresh=True)
        record.ended_at, record.end_reason = record.started_at + 9.0, "stop"
        writer.closed(record)
        assert await writer.flush(5.0)
        got = await store.get_call(CALL)
        assert got is not None
        assert comparable(got) == comparable(record)
        assert got.history()[1].text == "where is my order"
        assert got.new_turn("agent", 0.0).id == 3  # a reloaded record numbers its next turn after the last
        assert await store.get_call("CA-unknown") is None
    finally:
        await writer.aclose()


@in_loop
async def test_recent_calls_newest_first_and_a_fresh_call_replaces_its_rows(store_url: str) -> None:
    store = await opened(store_url)
    try:
        records = [a_record(f"CA{i}", 1_700_000_000.0 + i) for i in range(5)]
        rows: list[Write] = []
        writer = StoreWriter(store, Metrics())
        for record in records:
            writer.opened(record, fresh=True)
            writer.closed(record)
        rows = [row for _, row in writer._pending]
        await store.write(rows)
        recent = await store.recent_calls(3)
        assert [r.call_id for r in recent] == ["CA4", "CA3", "CA2"]
        assert all(len(r.turns) == 2 and len(r.bargeins) == 2 for r in recent)
        # The same id as a new call (a provider reusing it): the old turns are not the new call's.
        await store.write([call_row(CallRecord("CA4", "plivo", 1_700_000_100.0), fresh=True)])
        again = await store.get_call("CA4")
        assert again is not None and again.provider == "plivo" and again.turns == [] and again.bargeins == []
    finally:
        await store.aclose()


@in_loop
async def test_a_used_token_is_refused_by_another_replica(store_url: str) -> None:
    """Two store instances on one URL are two replicas: the claim succeeds once, whoever asks."""
    a, b = await opened(store_url), await opened(store_url)
    try:
        now = time.time()
        assert await a.claim_token("twilio", CALL, now, now + 100)
        assert not await b.claim_token("twilio", CALL, now, now + 100)
        assert not await a.claim_token("twilio", CALL, now, now + 100)
        assert await b.claim_token("plivo", CALL, now, now + 100)  # bound to the provider
        # Racing replicas: exactly one of many simultaneous claims wins.
        results = await asyncio.gather(*(s.claim_token("twilio", "CA-race", now, now + 100) for s in (a, b) * 5))
        assert results.count(True) == 1
        # Once forgotten (past the replay window), the row can be claimed again, and is deleted by the sweep.
        assert await b.claim_token("twilio", CALL, now + 101, now + 200)
        assert await a.forget_tokens(now + 150) == 2  # plivo's and the race's, not the re-claimed one
        assert not await a.claim_token("twilio", CALL, now + 150, now + 300)
    finally:
        await a.aclose()
        await b.aclose()


@in_loop
async def test_stream_tokens_claim_across_replicas(store_url: str) -> None:
    """StreamTokens.claim on two replicas sharing the secret and the store: a token opens one stream, once."""
    a_store, b_store = await opened(store_url), await opened(store_url)
    try:
        a = StreamTokens(b"shared-secret", 60.0, time.time, store=a_store)
        b = StreamTokens(b"shared-secret", 60.0, time.time, store=b_store)
        token = a.issue("twilio", CALL)
        assert await a.claim("twilio", CALL, token)
        assert not await b.claim("twilio", CALL, token)  # refused on the other replica
        assert b.consume("twilio", CALL, token) is False  # ... and remembered there without the store
        # Without the store, the other replica would have let it in: this is what the store adds.
        assert StreamTokens(b"shared-secret", 60.0, time.time).consume("twilio", CALL, token)
        other = a.issue("twilio", "CA-other")
        assert await b.claim("twilio", "CA-other", other)  # a token issued on A opens a stream on B once
        assert not await b.claim("twilio", "CA-other", "0" * 60)  # a forged one never
    finally:
        await a_store.aclose()
        await b_store.aclose()


@in_loop
async def test_schema_creation_is_idempotent(store_url: str) -> None:
    first = await opened(store_url)
    await first.write([call_row(a_record())])
    await first.aclose()
    # Replicas starting at once, on a schema that exists: no error, one version row, the data kept.
    stores = [open_store(store_url) for _ in range(3)]
    await asyncio.gather(*(s.start() for s in stores if s is not None))
    try:
        assert await _schema_versions(store_url) == list(range(1, SCHEMA_VERSION + 1))
        assert (await stores[0].get_call(CALL)) is not None  # type: ignore[union-attr]
    finally:
        for s in stores:
            await s.aclose()  # type: ignore[union-attr]


@in_loop
async def test_schema_created_once_by_replicas_starting_together(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(3)]
    await asyncio.gather(*(s.start() for s in stores if s is not None))
    try:
        assert await _schema_versions(store_url) == list(range(1, SCHEMA_VERSION + 1))
    finally:
        for s in stores:
            await s.aclose()  # type: ignore[union-attr]


async def _schema_versions(url: str) -> list[int]:
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url[len("sqlite:///"):]) as db:
            return [r[0] for r in db.execute("SELECT version FROM bargein_schema ORDER BY version")]
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT version FROM bargein_schema ORDER BY version")]
    finally:
        await conn.close()


class FlakyStore:
    """A real store behind a switch: while `down`, every call fails as a store that is unreachable does."""

    def __init__(self, inner: CallStore) -> None:
        self.inner = inner
        self.down = True
        self.attempts = 0
        self.shared = inner.shared

    async def start(self) -> None:
        await self.inner.start()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def write(self, batch: Sequence[Write]) -> None:
        self.attempts += 1
        if self.down:
            raise StoreError("connection refused")
        await self.inner.write(batch)

    async def claim_token(self, provider: str, call_id: str, now: float, forget_at: float) -> bool:
        if self.down:
            raise StoreError("connection refused")
        return await self.inner.claim_token(provider, call_id, now, forget_at)

    async def forget_tokens(self, now: float) -> int:
        return await self.inner.forget_tokens(now)

    async def forget_calls(self, before: float, limit: int) -> int:
        return await self.inner.forget_calls(before, limit)

    async def get_call(self, call_id: str) -> CallRecord | None:
        if self.down:
            raise StoreError("connection refused")
        return await self.inner.get_call(call_id)

    async def recent_calls(self, limit: int) -> list[CallRecord]:
        if self.down:
            raise StoreError("connection refused")
        return await self.inner.recent_calls(limit)


@in_loop
async def test_a_failing_store_never_reaches_the_call(tmp_path: Any) -> None:
    """While the store is down the registry goes on in memory, reads answer from memory, failures are counted;
    when it is back, the queued rows arrive."""
    flaky = FlakyStore(await opened(f"sqlite:///{tmp_path}/calls.db"))
    metrics = Metrics()
    writer = StoreWriter(flaky, metrics)
    writer.start()
    registry = CallRegistry(100, 3600.0, FakeClock(), writer)
    try:
        record, is_new = registry.open(CALL, "twilio", "stream-key", 1_700_000_000.0)
        assert is_new
        turn = record.new_turn("agent", 1_700_000_000.1)
        turn.text, turn.ended_at = "Hello", 1_700_000_001.0
        writer.sync(record)
        assert registry.close(record, "stream-key", "stop", 1_700_000_002.0)
        await asyncio.sleep(0.5)
        assert flaky.attempts >= 2  # retried
        assert writer.pending > 0
        errors = metrics.registry.get_sample_value("bargein_store_errors_total", {"op": "write"})
        assert errors is not None and errors >= 2
        assert [r.call_id for r in await registry.recent_shared(10)] == [CALL]  # from memory
        assert (await registry.lookup(CALL)) is record
        tokens = StreamTokens(b"k", 60.0, time.time, store=flaky)
        assert await tokens.claim("twilio", CALL, tokens.issue("twilio", CALL))  # falls back to this process
        flaky.down = False
        assert await writer.flush(10.0)
        stored = await flaky.inner.get_call(CALL)
        assert stored is not None and stored.end_reason == "stop" and [t.text for t in stored.turns] == ["Hello"]
    finally:
        await writer.aclose()


@in_loop
async def test_the_writer_queues_only_ended_turns_until_the_call_closes(tmp_path: Any) -> None:
    store = await opened(f"sqlite:///{tmp_path}/calls.db")
    writer = writer_for(store)
    registry = CallRegistry(100, 3600.0, FakeClock(), writer)
    try:
        record, _ = registry.open(CALL, "twilio", "key", 1_700_000_000.0)
        agent = record.new_turn("agent", 1_700_000_000.1)
        user = record.new_turn("user", 1_700_000_000.5)
        user.text, user.ended_at = "hi", 1_700_000_001.0  # the caller's turn ends while the agent's goes on
        writer.sync(record)
        assert await writer.flush(5.0)
        stored = await store.get_call(CALL)
        assert stored is not None and [t.id for t in stored.turns] == [user.id] and stored.ended_at is None
        agent.text = "partial"
        registry.close(record, "key", "stop", 1_700_000_003.0)
        assert await writer.flush(5.0)
        stored = await store.get_call(CALL)
        assert stored is not None and [t.text for t in stored.turns] == ["partial", "hi"]
        assert stored.end_reason == "stop"
        assert writer.written == 4  # the header, turn 2; at the close turn 1 and the header: each row once
    finally:
        await writer.aclose()


@in_loop
async def test_a_bargein_whose_words_came_later_is_written_again_with_their_kind(tmp_path: Any) -> None:
    store = await opened(f"sqlite:///{tmp_path}/calls.db")
    writer = writer_for(store)
    try:
        record = a_record()
        writer.opened(record, fresh=True)
        writer.sync(record)
        assert await writer.flush(5.0)
        written = writer.written
        # the caller's turn after the stop is heard: the bookkeeper replaces the barge-in with its kind
        record.bargeins[0] = dataclasses.replace(record.bargeins[0], kind="correction")
        writer.sync(record)
        writer.sync(record)  # nothing new: nothing written again
        assert await writer.flush(5.0)
        stored = await store.get_call(CALL)
        assert stored is not None and [b.kind for b in stored.bargeins] == ["correction", None]
        assert writer.written == written + 1
    finally:
        await writer.aclose()


def test_put_is_cheap_and_never_waits() -> None:
    """The call path's cost: snapshotting a turn and queueing it (no I/O, no await)."""

    async def run() -> float:
        store = open_store("sqlite:///:memory:")
        assert store is not None
        writer = StoreWriter(store, Metrics())  # not started: nothing drains, so only the queueing is timed
        registry = CallRegistry(100_000, 3600.0, FakeClock(), writer)
        record, _ = registry.open(CALL, "twilio", "key", 0.0)
        n = 2000
        t0 = time.perf_counter()
        for i in range(n):
            turn = record.new_turn("user", float(i))
            turn.text, turn.ended_at = "a sentence the caller said", float(i) + 0.5
            writer.sync(record)
        return (time.perf_counter() - t0) / n

    per_turn = asyncio.run(run())
    assert per_turn < 200e-6, per_turn  # measured 2 us (p50) hot, ~40 us right after the loop slept


@in_loop
async def test_a_call_reconnecting_to_another_replica_continues_the_stored_record(store_url: str) -> None:
    """Replica B, asked to open a call A served (a stream reconnecting elsewhere, or after a restart), continues
    A's record: the same turns, numbered on from them, and nothing A stored is overwritten."""
    a_writer, b_writer = writer_for(await opened(store_url)), writer_for(await opened(store_url))
    a = CallRegistry(100, 3600.0, FakeClock(), a_writer)
    b = CallRegistry(100, 3600.0, FakeClock(), b_writer)
    try:
        record, _ = a.open(CALL, "twilio", "stream-on-a", 1_700_000_000.0)
        for text in ("Hello", "hi"):
            turn = record.new_turn("agent" if text == "Hello" else "user", 1_700_000_000.0)
            turn.text, turn.ended_at = text, 1_700_000_001.0
        a.close(record, "stream-on-a", "stop", 1_700_000_002.0)
        assert await a_writer.flush(5.0)
        await b.prefetch(CALL)
        again, is_new = b.open(CALL, "twilio", "stream-on-b", 1_700_000_010.0)
        assert not is_new  # no second greeting, and the LLM gets the conversation so far
        assert [t.text for t in again.history()] == ["Hello", "hi"]
        reply = again.new_turn("agent", 1_700_000_011.0)
        assert reply.id == 3
        reply.text, reply.ended_at = "Your order ships today", 1_700_000_012.0
        b.close(again, "stream-on-b", "stop", 1_700_000_013.0)
        assert await b_writer.flush(5.0)
        stored = await b_writer.store.get_call(CALL)
        assert stored is not None and [t.text for t in stored.turns] == ["Hello", "hi", "Your order ships today"]
        await b.prefetch("CA-never-seen")  # nothing stored: nothing held
        assert b.get("CA-never-seen") is None
    finally:
        await a_writer.aclose()
        await b_writer.aclose()


@in_loop
async def test_calls_past_retention_go_with_their_turns_and_bargeins(store_url: str, monkeypatch: Any) -> None:
    """CALL_STORE_RETENTION_DAYS: the writer deletes calls that started before it, in short transactions (a
    batch of 2 here, so the backlog takes several), and keeps the recent ones and everything of theirs."""
    import app.store.writer as writer_module

    monkeypatch.setattr(writer_module, "FORGET_CALLS_BATCH", 2)
    now = 1_800_000_000.0
    day = 86400.0
    store = await opened(store_url)
    old = [a_record(f"CAold{i}", now - 40 * day + i) for i in range(5)]
    recent = a_record("CArecent", now - 29 * day)
    filler = StoreWriter(store, Metrics())
    for record in [*old, recent]:
        filler.opened(record, fresh=True)
        filler.closed(record)
    await store.write([row for _, row in filler._pending])
    metrics = Metrics()
    writer = StoreWriter(store, metrics, wall=lambda: now, retention_s=30 * day)
    writer.start()  # the first pass runs at once
    try:
        for _ in range(100):
            if metrics.registry.get_sample_value("bargein_store_forgotten_calls_total") == 5.0:
                break
            await asyncio.sleep(0.05)
        assert metrics.registry.get_sample_value("bargein_store_forgotten_calls_total") == 5.0
        assert [r.call_id for r in await store.recent_calls(10)] == ["CArecent"]
        kept = await store.get_call("CArecent")
        assert kept is not None and len(kept.turns) == 2 and len(kept.bargeins) == 2
        # A call id used again after its old rows went starts clean: no turn or barge-in row was left behind.
        await store.write([call_row(CallRecord("CAold0", "twilio", now), fresh=False)])
        again = await store.get_call("CAold0")
        assert again is not None and again.turns == [] and again.bargeins == []
    finally:
        await writer.aclose()


@in_loop
async def test_retention_zero_keeps_every_call(tmp_path: Any) -> None:
    store = await opened(f"sqlite:///{tmp_path}/calls.db")
    await store.write([call_row(a_record("CAancient", 1_000.0))])
    writer = StoreWriter(store, Metrics(), retention_s=0.0)
    writer.start()
    try:
        await asyncio.sleep(0.2)
        assert [r.call_id for r in await store.recent_calls(10)] == ["CAancient"]
    finally:
        await writer.aclose()
