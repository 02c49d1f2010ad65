"""LoopWatch: how long the event loop was held by one callback, measured from inside the loop.

A task sleeps `interval_s` again and again; when it wakes later than asked, something held the loop for
the difference (a long callback, a blocking call, a big collection). That lateness is what every other call
on the process waited: a frame that arrived during it got its barge-in decision that much later. The watch
costs one timer wake-up per interval (100 a second at 10 ms), nothing per call.

Lateness has two causes, told apart with the loop thread's CPU time: our code held the loop (the thread was
running the whole time), or the machine did not give the process a core (the thread was runnable but off the
CPU: on a 2-core box beside a load generator, the kernel can leave it waiting for tens of ms). `stalls` is
the lateness; `held` is the part of it the thread spent on the CPU, i.e. what our own code can be blamed for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from app.metrics import LagRecorder

INTERVAL_S = 0.010


class LoopWatch:
    """Records every wake-up's lateness in ms; `summary()` gives count, p50, p99, p99.9 and max."""

    def __init__(self, now: Callable[[], float], interval_s: float = INTERVAL_S,
                 on_stall: Callable[[float], None] | None = None) -> None:
        self._now = now
        self._interval_s = interval_s
        self._on_stall = on_stall
        self.stalls = LagRecorder(capacity=1 << 16)
        self.held = LagRecorder(capacity=1 << 16)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def reset(self) -> None:
        self.stalls.reset()
        self.held.reset()

    def summary(self) -> dict[str, float]:
        return self.stalls.summary()

    def held_summary(self) -> dict[str, float]:
        return self.held.summary()

    async def _run(self) -> None:
        now, interval, cpu = self._now, self._interval_s, time.thread_time
        while True:
            started, cpu_started = now(), cpu()
            await asyncio.sleep(interval)
            elapsed, cpu_used = now() - started, cpu() - cpu_started
            late_ms = max(0.0, (elapsed - interval) * 1000.0)
            # Off-CPU time covers the idle wait in epoll as well as time spent waiting for a core; whatever
            # of the lateness it cannot explain, the loop thread spent running something.
            off_cpu_ms = max(0.0, (elapsed - cpu_used) * 1000.0)
            self.stalls.add(late_ms)
            self.held.add(max(0.0, late_ms - off_cpu_ms))
            if self._on_stall is not None:
                self._on_stall(late_ms)
