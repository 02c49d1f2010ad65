"""The network between the provider edge and the server: a one-way delay and jitter in each direction.

Like TCP (a WebSocket rides on one), a link keeps order: a frame's delivery time is its send time plus a
delay drawn uniformly from ``[delay - jitter, delay + jitter]``, but never before the frame ahead of it, so a
later frame never overtakes an earlier one (it queues behind it instead, as head-of-line blocking does).
Draws come from a seeded generator, so a run is repeatable. The default is no network at all (loopback), and
`Network.cloud_to_carrier()` is a cloud region to a carrier edge: 40 ms +/- 15 ms each way, 80 ms round trip.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Clock = Callable[[], float]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Direction:
    """One direction's one-way delay, in ms: uniform in [delay_ms - jitter_ms, delay_ms + jitter_ms]."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.jitter_ms > self.delay_ms:
            raise ValueError(f"want 0 <= jitter <= delay, got {self.delay_ms} +/- {self.jitter_ms} ms")

    @property
    def direct(self) -> bool:
        return self.delay_ms == 0.0


@dataclass(frozen=True, slots=True)
class Network:
    """Both directions: `to_server` carries caller media and acknowledgements, `to_edge` the server's media,
    marks and clears."""

    to_server: Direction = field(default_factory=Direction)
    to_edge: Direction = field(default_factory=Direction)
    seed: int = 0

    @classmethod
    def cloud_to_carrier(cls, seed: int = 0, delay_ms: float = 40.0, jitter_ms: float = 15.0) -> Network:
        """A cloud region to a carrier edge: 40 ms +/- 15 ms each way by default."""
        both = Direction(delay_ms, jitter_ms)
        return cls(both, both, seed)

    def reseeded(self, offset: int) -> Network:
        """The same network with another seed (one per call, so calls do not share a delay sequence)."""
        return Network(self.to_server, self.to_edge, self.seed + offset)


class Link(Generic[T]):
    """One direction of the network: `put` frames in; `run` delivers each one, in order, once it is due."""

    def __init__(self, direction: Direction, seed: int, clock: Clock, deliver: Callable[[T], Awaitable[None]]):
        self._direction = direction
        self._rng = random.Random(seed)
        self._clock = clock
        self._deliver = deliver
        self._queue: asyncio.Queue[tuple[float, T]] = asyncio.Queue()
        self._last_due = float("-inf")
        self.delays_ms: list[float] = []  # each frame's actual one-way delay, queueing behind others included

    def put(self, item: T, now: float) -> float:
        """Send `item` at `now`; returns when it will arrive."""
        d = self._direction
        delay = d.delay_ms + (self._rng.uniform(-d.jitter_ms, d.jitter_ms) if d.jitter_ms else 0.0)
        due = max(now + delay / 1000.0, self._last_due)
        self._last_due = due
        self.delays_ms.append((due - now) * 1000.0)
        self._queue.put_nowait((due, item))
        return due

    async def run(self) -> None:
        """Deliver frames as they fall due, until cancelled or `deliver` raises."""
        while True:
            due, item = await self._queue.get()
            try:
                wait = due - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._deliver(item)
            finally:
                self._queue.task_done()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything put so far has been delivered; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._queue.join()
        except TimeoutError:
            return False
        return True
