"""LoopWatch: how long the event loop was held by one callback, measured from inside the loop.

A timer fires every `interval_s`; when it fires later than asked, something held the loop for
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._started = 0.0
        self._cpu_started = 0.0

    def start(self) -> None:
        if self._handle is None:
            self._loop = asyncio.get_running_loop()
            self._arm()

    async def stop(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()

    def reset(self) -> None:
        self.stalls.reset()
        self.held.reset()

    def summary(self) -> dict[str, float]:
        return self.stalls.summary()

    def held_summary(self) -> dict[str, float]:
        return self.held.summary()

    # A plain timer callback, not a task: a task's wake-up costs a coroutine resume and a sleep future each
    # time (measured: 55-65 us a wake-up here, 6 ms of CPU a second), a callback a few microseconds.
    def _arm(self) -> None:
        assert self._loop is not None
        self._started, self._cpu_started = self._now(), time.thread_time()
        self._handle = self._loop.call_at(self._loop.time() + self._interval_s, self._wake)

    def _wake(self) -> None:
        elapsed, cpu_used = self._now() - self._started, time.thread_time() - self._cpu_started
        late_ms = max(0.0, (elapsed - self._interval_s) * 1000.0)
        # Off-CPU time covers the idle wait in epoll as well as time spent waiting for a core; whatever of the
        # lateness it cannot explain, the loop thread spent running something.
        off_cpu_ms = max(0.0, (elapsed - cpu_used) * 1000.0)
        self.stalls.add(late_ms)
        self.held.add(max(0.0, late_ms - off_cpu_ms))
        if self._on_stall is not None:
            self._on_stall(late_ms)
        self._arm()
