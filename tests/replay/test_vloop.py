"""The virtual-time loop: timers fire in order at virtual times, executor work costs no virtual time."""

from __future__ import annotations

import asyncio
import time

from app.clock import LoopClock
from app.replay.vloop import RESOLUTION_S, VirtualEventLoop, run_virtual


def test_sleeps_take_virtual_time_only() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(300)
        return start, loop.time()

    began = time.perf_counter()
    start, end = run_virtual(main())
    assert (start, end) == (0.0, 300.0)
    assert time.perf_counter() - began < 1.0


def test_executor_work_costs_no_virtual_time_and_timeouts_do_not_fire_during_it() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(0.001):  # real work of 50 ms must not trip a 1 ms virtual timeout
            await loop.run_in_executor(None, time.sleep, 0.05)
        mid = loop.time()
        await asyncio.sleep(1.5)
        return mid, loop.time()

    assert run_virtual(main()) == (0.0, 1.5)


def test_timers_fire_in_order_and_the_run_is_deterministic() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, float]] = []

        async def worker(name: str, period: float, n: int) -> None:
            for _ in range(n):
                await asyncio.sleep(period)
                seen.append((name, loop.time()))

        await asyncio.gather(worker("a", 0.02, 50), worker("b", 0.05, 20), worker("c", 0.032, 30))
        return seen

    first = run_virtual(main())
    assert first == run_virtual(main())
    assert [t for _, t in first] == sorted(t for _, t in first)


def test_a_sleep_below_float_resolution_still_moves_time() -> None:
    # Code that sleeps `deadline - now` can ask for less than a float can add at this magnitude; a virtual loop
    # that did not round it up would run that timer at the same instant forever.
    async def main() -> float:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        while loop.time() < deadline:  # noqa: ASYNC110 - the pattern under test
            await asyncio.sleep(max(deadline - loop.time(), 1e-18))
        await asyncio.sleep(1e-18)
        return loop.time()

    assert run_virtual(main(), start=1000.0) >= 1001.0 + RESOLUTION_S / 2


def test_loop_clock_reads_the_loop() -> None:
    loop = VirtualEventLoop(start=42.0)
    try:
        assert LoopClock(loop).now() == 42.0
        loop.run_until_complete(asyncio.sleep(8))
        assert LoopClock(loop).now() == 50.0
    finally:
        loop.close()
