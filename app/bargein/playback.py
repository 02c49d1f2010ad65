"""PlaybackLedger: what the caller has actually heard, from the provider's marker acknowledgements.

Theory of operation
-------------------
The agent's audio goes out in chunks; after each chunk we send a marker (Twilio `mark`, Plivo `checkpoint`)
named ``g{generation}s{seq}``. The ledger remembers, per marker, where the chunk ends in the turn's audio
(milliseconds from the start of the turn) and when the chunk was sent. The provider acknowledges a marker once
the audio before it has played, so the last acknowledged marker is a lower bound of what was heard.

Between acknowledgements the edge keeps playing at real time, so at any instant the heard position is::

    base + (now - max(ack_time, next_chunk_sent_at)), capped at the next unacknowledged marker

where ``base`` is the last acknowledged marker's position (or 0 before the first acknowledgement). With markers
every 100-200 ms this puts a cut within a few ms of what the edge really played, without a marker per frame.

A clear (barge-in) freezes that estimate, then bumps the generation: every marker still pending belongs to an
old generation. Twilio echoes pending marks when it clears, and those echoes look exactly like "played" echoes
(telephony-protocols.md 1.3), so echoes of an old generation are ignored; Plivo never acknowledges checkpoints cut
by clearAudio (2.3), so nothing may wait for them. Either way nothing pending survives a clear.

Pure and synchronous: the caller passes `now` in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class _Marker:
    name: str
    turn_id: int
    start_ms: float  # turn position where this chunk starts
    end_ms: float  # turn position where this chunk ends (the marker's position)
    sent_at: float


@dataclass(frozen=True, slots=True)
class HeardPosition:
    """How much of a turn's audio the caller heard."""

    turn_id: int | None
    audio_ms: float
    acked_ms: float  # the part confirmed by an acknowledgement; audio_ms - acked_ms is the real-time estimate
    sent_ms: float  # how much of the turn had been sent


class PlaybackLedger:
    """Chunks sent, markers acknowledged, and the heard position of the current turn."""

    def __init__(self, generation: int = 0, ack_grace_s: float = 1.0) -> None:
        self.generation = generation
        self._ack_grace_s = ack_grace_s
        self._seq = 0
        self._pending: OrderedDict[str, _Marker] = OrderedDict()
        self._turn_id: int | None = None
        self._turn_sent_ms = 0.0
        self._turn_first_sent_at = 0.0
        self._acked_ms = 0.0
        self._acked_at: float | None = None
        self._edge_end = 0.0  # when the edge will have played everything sent so far (estimate)

    # -- sending ---------------------------------------------------------------------------------
    def chunk_sent(self, turn_id: int, duration_ms: float, now: float) -> str:
        """Record a chunk of `turn_id` that was just sent; returns the marker name to send after it."""
        if turn_id != self._turn_id:
            self._start_turn(turn_id, now)
        self._seq += 1
        name = f"g{self.generation}s{self._seq}"
        start = self._turn_sent_ms
        self._turn_sent_ms += duration_ms
        self._pending[name] = _Marker(name, turn_id, start, self._turn_sent_ms, now)
        self._edge_end = max(self._edge_end, now) + duration_ms / 1000.0
        return name

    def _start_turn(self, turn_id: int, now: float) -> None:
        self._turn_id = turn_id
        self._turn_sent_ms = 0.0
        self._turn_first_sent_at = now
        self._acked_ms = 0.0
        self._acked_at = None

    def buffered_ms(self, now: float) -> float:
        """Audio sent but (by our estimate) not yet played at the edge: what pacing keeps near the lead."""
        return max(0.0, self._edge_end - now) * 1000.0

    # -- acknowledgements ------------------------------------------------------------------------
    def ack(self, name: str, now: float) -> bool:
        """A marker was acknowledged. False if it is stale (old generation, unknown, or already passed)."""
        marker = self._pending.get(name)
        if marker is None:
            return False
        # Playout is in order, so every marker sent before this one has played too.
        while self._pending:
            first_name, first = self._pending.popitem(last=False)
            if first_name == name:
                break
        if marker.turn_id == self._turn_id:
            self._acked_ms = marker.end_ms
            self._acked_at = now
        return True

    def playing(self, now: float) -> bool:
        """Audio of the current generation is (probably) still playing at the edge.

        Pending markers mean audio is queued; the grace bounds how long a lost acknowledgement can keep the call
        in "speaking" (Plivo does not acknowledge checkpoints whose audio did not play fully).
        """
        return bool(self._pending) and now < self._edge_end + self._ack_grace_s

    # -- the heard position ----------------------------------------------------------------------
    def heard(self, now: float) -> HeardPosition:
        """The current turn's heard position at `now` (see the module docstring)."""
        if self._turn_id is None:
            return HeardPosition(None, 0.0, 0.0, 0.0)
        base = self._acked_ms
        base_at = self._acked_at if self._acked_at is not None else self._turn_first_sent_at
        nxt = next(iter(self._pending.values()), None)
        if nxt is None or nxt.turn_id != self._turn_id:
            return HeardPosition(self._turn_id, base, base, self._turn_sent_ms)
        # The next chunk cannot have started playing before it was sent (the edge may have run dry).
        started = max(base_at, nxt.sent_at)
        estimate = base + max(0.0, now - started) * 1000.0
        return HeardPosition(self._turn_id, min(estimate, nxt.end_ms), base, self._turn_sent_ms)

    def clear(self, now: float) -> HeardPosition:
        """A clear was just sent: freeze the heard position and start a new generation."""
        heard = self.heard(now)
        self.generation += 1
        self._pending.clear()
        self._edge_end = now
        self._turn_id = None
        return heard
