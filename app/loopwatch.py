"""LoopWatch: how long the event loop was held by one callback, measured from inside the loop.

A task sleeps `interval_s` again and again; when it wakes later than asked, something held the loop for
the difference (a long callback, a blocking call, a big collection). That lateness is what every other call
on the process waited: a frame that arrived during it got its barge-in decision that much later. The watch
costs one timer wake-up per interval (100 a second at 10 ms), nothing per call.
"""

from __future__ import annotations

import asyncio
import contextlib
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

    def summary(self) -> dict[str, float]:
        return self.stalls.summary()

    async def _run(self) -> None:
        now, interval = self._now, self._interval_s
        while True:
            asked = now() + interval
            await asyncio.sleep(interval)
            late_ms = max(0.0, (now() - asked) * 1000.0)
            self.stalls.add(late_ms)
            if self._on_stall is not None:
                self._on_stall(late_ms)
