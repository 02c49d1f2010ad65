"""Call-store figures for the report: the call path's cost to queue an ended turn, queued -> committed latency
(turns one at a time, and 100 calls' turns at once), and a token claim's round trip, on SQLite and on a
throwaway PostgreSQL (tests/store/pg.py: fsync off, so its figures leave out the disk).

    .venv/bin/python -m tests.store.measure
"""

from __future__ import annotations

import asyncio
import tempfile
import time

from app.call.registry import CallRegistry
from app.clock import FakeClock
from app.metrics import Metrics
from app.store import open_store
from app.store.writer import StoreWriter
from tests.store.pg import start_postgres

TEXT = "where is my order please"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ms(values: list[float], p: float) -> str:
    return f"{pct(values, p) * 1000:.2f} ms"


async def measure(url: str, label: str) -> None:
    store = open_store(url)
    assert store is not None
    await store.start()
    writer = StoreWriter(store, Metrics())
    writer.start()
    registry = CallRegistry(100_000, 3600.0, FakeClock(), writer)
    # One completed turn every 20 ms: each is written on its own.
    record, _ = registry.open("CA-idle", "twilio", "k", time.time())
    await writer.flush(5)
    writer.lag_s.clear()
    queueing: list[float] = []
    for _ in range(200):
        turn = record.new_turn("user", time.time())
        turn.text, turn.ended_at = TEXT, time.time()
        t0 = time.perf_counter()
        writer.sync(record)
        queueing.append(time.perf_counter() - t0)
        await asyncio.sleep(0.02)
    await writer.flush(5)
    alone = list(writer.lag_s)
    # 100 calls complete a turn at the same moment.
    records = [registry.open(f"CA-b{i}", "twilio", f"k{i}", time.time())[0] for i in range(100)]
    await writer.flush(5)
    writer.lag_s.clear()
    for r in records:
        turn = r.new_turn("user", time.time())
        turn.text, turn.ended_at = TEXT, time.time()
        writer.sync(r)
    await writer.flush(10)
    burst = list(writer.lag_s)
    claims: list[float] = []
    for i in range(200):
        t0 = time.perf_counter()
        await store.claim_token("twilio", f"CA-t{i}", time.time(), time.time() + 100)
        claims.append(time.perf_counter() - t0)
    await writer.aclose()
    print(f"{label}\n"
          f"  queueing an ended turn on the loop: p50 {pct(queueing, 50) * 1e6:.1f} us, "
          f"p99 {pct(queueing, 99) * 1e6:.1f} us\n"
          f"  queued -> committed, one turn at a time: p50 {ms(alone, 50)}, p99 {ms(alone, 99)}, "
          f"max {max(alone) * 1000:.2f} ms\n"
          f"  queued -> committed, 100 turns at once: p50 {ms(burst, 50)}, max {max(burst) * 1000:.2f} ms\n"
          f"  token claim round trip: p50 {ms(claims, 50)}, p99 {ms(claims, 99)}")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await measure(f"sqlite:///{tmp}/calls.db", "SQLite file (WAL, synchronous=NORMAL)")
    pg = start_postgres()
    if pg.url is None:
        print(f"PostgreSQL: not measured ({pg.reason})")
        return
    try:
        await measure(pg.url, "PostgreSQL 15 on loopback")
    finally:
        pg.stop()


if __name__ == "__main__":
    asyncio.run(main())
