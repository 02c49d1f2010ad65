"""Outbox: the ordered writer of agent audio and markers, paced a little ahead of real time.

Audio is queued per turn and sent in chunks of `chunk_ms`, each followed by a marker from the playback ledger.
Pacing keeps about `lead_ms` of audio buffered at the edge: enough to ride out scheduling jitter, little enough
that a clear has little to throw away. A clear never waits behind queued audio: `drop()` empties the queue
synchronously and the session writes the clear itself.

The queue's length in audio is kept as a running count (`queued_ms`), so a producer can hold back until there
is room (`wait_for_room`): the pacer and `drop()` signal it whenever the queue shrinks. That bounds what one
turn can queue, and so the memory a long LLM reply can take, without ever blocking a clear.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from app.bargein.playback import PlaybackLedger
from app.call.events import CallEvents, MarkSent
from app.clock import Clock
from providers.telephony.base import TelephonyProtocol

logger = logging.getLogger(__name__)

Send = Callable[[str], Awaitable[None]]
# Told of every chunk sent: (turn id, mu-law audio, when it starts playing at the edge on the planned timeline).
# The echo guard keeps the agent's audio by play time from this.
OnSent = Callable[[int, bytes, float], None]


# The chunk sent while the ledger still needs round-trip samples: 40 ms, two caller frames' worth.
_PROBE_BYTES = 40 * 8


class Outbox:
    def __init__(
        self,
        protocol: TelephonyProtocol,
        send: Send,
        ledger: PlaybackLedger,
        clock: Clock,
        chunk_ms: int,
        lead_ms: int,
        events: CallEvents | None = None,
    ) -> None:
        self._protocol = protocol
        self._send = send
        self.ledger = ledger
        self._clock = clock
        self._chunk_bytes = max(1, chunk_ms * 8)  # mu-law at 8 kHz: 8 bytes per ms
        self._lead_ms = float(lead_ms)
        # Chunks are views into the turn's audio, which the turn keeps anyway (to resend after a false stop):
        # slicing bytes would hold a second copy of everything queued, 8 KB per second of it, per call.
        self._queue: deque[tuple[int, memoryview]] = deque()
        self._queued_bytes = 0  # sum of the queued chunks' lengths, kept as they come and go
        self._wake = asyncio.Event()
        self._room = asyncio.Event()  # set whenever the queue shrinks: a chunk sent, or everything dropped
        self.sent_chunks = 0
        self.on_sent: OnSent | None = None
        # No audio goes out before this (the hard silence after a barge-in); the loop's clock.
        self.not_before = 0.0
        self._events = events if events is not None else CallEvents()

    @property
    def has_queued(self) -> bool:
        return bool(self._queue)

    @property
    def queued_ms(self) -> float:
        """Audio queued and not yet sent, in ms."""
        return self._queued_bytes / 8.0

    async def wait_for_room(self, audio_ms: float, limit_ms: float) -> None:
        """Return once `audio_ms` more audio keeps the queue within `limit_ms`, or the queue is empty.

        The empty-queue case lets audio longer than the limit through on its own, so a waiter always ends.
        Cancelling the waiter (barge-in: `drop()` then the turn's cancel) ends the wait at once.
        """
        while self._queue and self._queued_bytes / 8.0 + audio_ms > limit_ms:
            self._room.clear()
            await self._room.wait()

    def enqueue(self, turn_id: int, ulaw: bytes) -> None:
        """Queue a turn's audio (mu-law 8 kHz); it goes out in chunks with a marker after each."""
        step = self._chunk_bytes
        view = memoryview(ulaw)
        for i in range(0, len(ulaw), step):
            self._queue.append((turn_id, view[i : i + step]))
        self._queued_bytes += len(ulaw)
        self._wake.set()

    def drop(self) -> int:
        """Forget every queued chunk (barge-in); returns how many were dropped."""
        dropped = len(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        self._room.set()
        return dropped

    async def run(self) -> None:
        """The pacing loop; runs for the life of the stream."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                now = self._clock.now()
                ahead = self.ledger.buffered_ms(now)
                # The margin: a wait shorter than the clock can add at this time of day would never move a
                # virtual clock (a replay), and is nothing on a real one.
                if ahead > self._lead_ms + 1e-6:
                    await asyncio.sleep((ahead - self._lead_ms) / 1000.0)
                    continue
                if now < self.not_before - 1e-6:
                    await asyncio.sleep(self.not_before - now)
                    continue
                turn_id, view = self._queue.popleft()
                if len(view) > _PROBE_BYTES and self.ledger.needs_rtt_samples:
                    # The call's first markers come after short chunks, so the round-trip estimate is trusted
                    # early (see PlaybackLedger.needs_rtt_samples); the rest of the chunk stays first in line.
                    self._queue.appendleft((turn_id, view[_PROBE_BYTES:]))
                    view = view[:_PROBE_BYTES]
                chunk = view.tobytes()  # one chunk's copy, only while it is sent
                self._queued_bytes -= len(chunk)
                self._room.set()
                play_at = now + ahead / 1000.0
                name = self.ledger.chunk_sent(turn_id, len(chunk) / 8.0, now)
                # Both writes reach the transport before anything else runs: uvicorn writes synchronously.
                await self._send(self._protocol.media(chunk))
                await self._send(self._protocol.mark(name))
                self.sent_chunks += 1
                if self.on_sent is not None:
                    self.on_sent(turn_id, chunk, play_at)
                if self._events.active:
                    self._events.emit(MarkSent(now, name, turn_id, len(chunk) / 8.0))
