"""app/bench/tts_queue.py: its pure parts, and one tiny run of each load on the real engine."""

from __future__ import annotations

import asyncio

from app.bench.tts_queue import arrivals, burst, clause, percentile, steady, summarise


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 50) == 10.0 and percentile(values, 95) == 19.0 and percentile(values, 100) == 20.0
    assert percentile([7.0], 95) == 7.0
    stats = summarise("burst", 20, 0, [v / 1000.0 for v in values])
    assert (stats.jobs, stats.p50_ms, stats.p95_ms, stats.max_ms) == (20, 10.0, 19.0, 20.0)


def test_arrivals_are_seeded_sorted_and_inside_the_run() -> None:
    times = arrivals(calls=10, interval_s=4.0, duration_s=20.0, seed=3)
    assert times == sorted(times) and times == arrivals(10, 4.0, 20.0, seed=3)
    assert all(0.0 <= t < 20.0 for t in times)
    assert 25 <= len(times) <= 80  # about calls x duration / interval = 50
    assert len({clause(i) for i in range(100)}) == 100  # every request a different text: nothing shared


def test_each_load_measures_one_wait_per_clause() -> None:
    async def both() -> tuple[int, int]:
        b = await burst(4, 0)
        s = await steady(3, 0, interval_s=0.2, duration_s=0.5, service_s=0.005)
        assert b.p50_ms <= b.p95_ms <= b.max_ms and s.utilisation is not None
        return b.jobs, s.jobs

    jobs_burst, jobs_steady = asyncio.run(asyncio.wait_for(both(), 30))
    assert jobs_burst == 4 and jobs_steady >= 3
