"""LoopWatch on a real event loop: a callback that holds the loop shows up as a stall, on the CPU or off it."""

from __future__ import annotations

import asyncio
import time

from app.clock import MonotonicClock
from app.loopwatch import LoopWatch


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def _watch_while(block: object) -> LoopWatch:
    watch = LoopWatch(MonotonicClock().now, interval_s=0.005)
    watch.start()
    await asyncio.sleep(0.05)  # a few quiet wake-ups first
    watch.reset()
    await asyncio.sleep(0.012)
    block()  # type: ignore[operator]
    await asyncio.sleep(0.03)
    await watch.stop()
    return watch


def test_a_busy_callback_is_a_stall_held_on_the_cpu() -> None:
    watch = asyncio.run(_watch_while(lambda: _spin(0.06)))
    assert watch.summary()["max"] >= 50.0
    assert watch.held_summary()["max"] >= 40.0  # the thread ran the whole time: our code's fault


def test_a_thread_off_the_cpu_is_a_stall_but_not_held() -> None:
    # time.sleep stands in for the kernel not scheduling the process: the loop is late, but nothing of ours ran.
    watch = asyncio.run(_watch_while(lambda: time.sleep(0.06)))
    assert watch.summary()["max"] >= 50.0
    assert watch.held_summary()["max"] < 20.0


def test_a_quiet_loop_has_no_stall() -> None:
    watch = asyncio.run(_watch_while(lambda: None))
    assert watch.summary()["count"] >= 3
    assert watch.held_summary()["max"] < 20.0
