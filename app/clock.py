"""Clocks: logic takes `now` from a Clock that is passed in, so tests can run on a fake one."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...


class MonotonicClock:
    """The real clock. CLOCK_MONOTONIC is system-wide on Linux, so two processes on one machine agree on it."""

    def now(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        self._now += seconds
        return self._now

    def set(self, value: float) -> None:
        self._now = value


class LoopClock:
    """The running event loop's time: the clock of a call whose timers run on that loop.

    On a normal loop this is CLOCK_MONOTONIC (asyncio's `time()` is `time.monotonic()`); on the replay's
    virtual-time loop (app/replay/vloop.py) it is virtual, so a call's decisions and its timers share one clock.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop  # None: whichever loop is running when asked

    def now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()
