"""Clocks: logic takes `now` from a Clock that is passed in, so tests can run on a fake one.

One clock, one scheduler. Every timer of a call (the call timer's VAD and turn tick, the outbox's pacing, the
Silero batch flush, the LLM and TTS timeouts, turn-end silence) is an `asyncio.sleep` / `asyncio.timeout` /
`call_later` on the event loop, so the loop is the one scheduler, and the Clock the call reads must be the clock
that loop schedules on. In the server that is `MonotonicClock`: asyncio's loop schedules on `time.monotonic()`
itself, and uvloop on libuv's CLOCK_MONOTONIC in milliseconds (so we read `time.monotonic()` directly, for
sub-millisecond barge-in timings). In a replay it is `LoopClock` on the virtual-time loop (app/replay/vloop.py),
which then drives a whole call deterministically. Nothing in the call logic reads the wall clock: record
timestamps come from the injected `wall`, which a replay derives from the virtual clock.
"""

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
