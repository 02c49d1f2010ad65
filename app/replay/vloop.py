"""A virtual-time asyncio event loop: timers fire in order, instantly, and real work costs no virtual time.

Theory of operation. A call's timers all run on its event loop (`asyncio.sleep`, `asyncio.timeout`,
`call_later`) and the clock the call reads is that loop's `time()` (app/clock.py `LoopClock`). So a virtual
clock is simply a loop whose `time()` is virtual. `VirtualEventLoop` is a `SelectorEventLoop` whose selector is
wrapped; asyncio's `_run_once` asks the selector to wait `timeout` seconds, the time until the next timer,
whenever no callback is ready. The wrapper answers that wait in three ways, in order:

1. A real `select(0)`: sockets that are ready now are served (same-loop loopback I/O, e.g. an LLM server on
   the same loop, costs no virtual time).
2. If work is outstanding in an executor (`run_in_executor`: espeak-ng synthesises on a worker thread), a real
   `select` that blocks until that work completes: its completion reaches the loop through the self-pipe.
   Virtual time does not move, so synthesis, like every CPU cost on the loop itself (the Silero model run),
   takes zero virtual time and the result cannot depend on how fast the machine is.
3. Otherwise virtual time jumps to the next timer, and `_run_once` then finds it due.

With no timer, no executor work and nothing ready, the loop blocks in a real select, exactly like a normal
loop (something outside, a thread or a process, must wake it).

Virtual time starts at `start` (default 0) and only ever moves forward. A positive `call_later` delay is at
least RESOLUTION_S (1 ns, CLOCK_MONOTONIC's resolution): otherwise code that sleeps for `deadline - now`
could find the deadline still ahead by less than a float can add, and spin at one virtual instant forever.
Deterministic: the same program, with the same inputs, runs the same callbacks in the same order at the same
virtual times.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")

RESOLUTION_S = 1e-9


class _VirtualSelector(selectors.BaseSelector):
    """Delegates to a real selector; turns waits into virtual-time jumps (see the module docstring)."""

    def __init__(self, real: selectors.BaseSelector, loop: VirtualEventLoop) -> None:
        self._real = real
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self._loop
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if loop.executor_jobs:
            # Real work in a thread: wait for it for real, on a frozen virtual clock.
            return self._real.select(None)
        if timeout is None:
            return self._real.select(None)  # nothing scheduled at all: only the outside world can wake us
        loop.advance(timeout)
        loop.jumps += 1
        return []


class VirtualEventLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is virtual; see the module docstring."""

    def __init__(self, start: float = 0.0) -> None:
        real = selectors.DefaultSelector()
        self._virtual_now = float(start)
        self.executor_jobs = 0  # run_in_executor futures not yet done
        self.jumps = 0  # how many times virtual time jumped to a timer
        super().__init__(_VirtualSelector(real, self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._virtual_now += seconds

    def call_later(  # type: ignore[override]
        self, delay: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        # A real clock moves between two reads; a virtual one only when a timer is due. A positive delay too
        # small to move a float time (code that sleeps `deadline - now` computed from the clock) would be due
        # at once, forever, so it is rounded up to RESOLUTION_S, the real monotonic clock's resolution.
        if 0 < delay < RESOLUTION_S:
            delay = RESOLUTION_S
        return super().call_later(delay, callback, *args, context=context)

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self.executor_jobs += 1

        def done(_: asyncio.Future[T]) -> None:
            self.executor_jobs -= 1

        future.add_done_callback(done)
        return future


def run_virtual(main: Coroutine[Any, Any, T], start: float = 0.0) -> T:
    """Run a coroutine to completion on a fresh virtual-time loop (like `asyncio.run`)."""
    loop = VirtualEventLoop(start)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
