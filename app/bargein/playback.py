"""PlaybackLedger: what the caller has actually heard, from the provider's marker acknowledgements.

Theory of operation
-------------------
The agent's audio goes out in chunks; after each chunk we send a marker (Twilio `mark`, Plivo `checkpoint`)
named ``g{generation}s{seq}``. The ledger remembers, per marker, where the chunk ends in the turn's audio
(milliseconds from the start of the turn), when the chunk was sent, and when it would finish playing if the
edge were next door (the *planned* end: the edge plays in order at real time, so a chunk ends ``duration``
after the later of its own send and the previous chunk's planned end). The provider acknowledges a marker once
the audio before it has played, so the last acknowledged marker is a lower bound of what was heard.

The network sits between us and the edge: a one-way delay ``d`` each way, so the round trip ``rtt = 2d``.
Chunks reach the edge ``d`` after we send them and the edge's whole playback runs ``d`` behind the planned
timeline; an acknowledgement leaves the edge when the audio before it has played and reaches us ``d`` later.
So every acknowledgement is one sample of the round trip::

    rtt sample = ack arrival - the marker's planned end

(with the edge idle this is send-to-ack minus the chunk's own audio; with audio buffered the planned end
accounts for the queue ahead of it). The estimate is the median of the last `_RTT_SAMPLES` samples of the call:
robust to jitter and to an acknowledgement we read late. Until `_RTT_MIN_SAMPLES` acknowledgements have come
back it is 0 (no correction): one or two acks cannot tell a round trip from an edge that was slow to start.
The split is taken as symmetric, ``d = rtt / 2``.

The edge's playback position at edge time ``T`` (one shared timeline) is then walked forward from the last
acknowledgement: it played marker ``k`` (position ``E_k``) at ``planned_end_k + d`` (the call's median lag, not
this one ack's, so one ack that met a slow network or was read late does not move the cut; and never after the
ack arrived), and each later chunk starts at the later of the previous chunk's end and its own arrival at the
edge (send + ``d``; the edge may have run dry). Until the estimate is trusted, marker ``k`` played when its
ack arrived, as before.
Never past what was sent, and never past the first unacknowledged marker by more than the time its
acknowledgement could still be in flight (a lost or slow acknowledgement must not let the estimate run on).

- `heard(now)`: what the caller has heard at ``now``: the position at edge time ``now``.
- `clear(now)`: the clear we just sent reaches the edge ``d`` later, and the caller hears audio until then, so
  the cut is the position at edge time ``now + d``. Without this the cut trails the caller by a round trip
  (the acknowledgement arrives ``d`` late and the clear lands ``d`` late). With ``rtt = 0`` (loopback) this is
  the old estimate: last ack + real time since, capped at the next marker.

What it cannot tell apart: an edge that starts playing late (its own jitter buffer) looks exactly like network
delay, and is split half and half like it; and the clear's own delay is the mean, not the one it met (with
40 +/- 15 ms each way the cut lands within about +/- 30 ms of what was heard).

A clear then bumps the generation: every marker still pending belongs to an old generation. Twilio echoes
pending marks when it clears, and those echoes look exactly like "played" echoes (telephony-protocols.md 1.3),
so echoes of an old generation are ignored (and give no round-trip sample); Plivo never acknowledges
checkpoints cut by clearAudio (2.3), so nothing may wait for them. Either way nothing pending survives a clear.

Pure and synchronous: the caller passes `now` in.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from statistics import median

_RTT_SAMPLES = 15  # acknowledgements the round-trip estimate is the median of (about 2.4 s at 160 ms chunks)
_RTT_MIN_SAMPLES = 3  # acknowledgements before the estimate is trusted


@dataclass(slots=True)
class _Marker:
    name: str
    turn_id: int
    start_ms: float  # turn position where this chunk starts
    end_ms: float  # turn position where this chunk ends (the marker's position)
    sent_at: float
    planned_end: float  # when the chunk would finish playing on an edge with no network in between


@dataclass(frozen=True, slots=True)
class HeardPosition:
    """How much of a turn's audio the caller heard."""

    turn_id: int | None
    audio_ms: float
    acked_ms: float  # the part confirmed by an acknowledgement; audio_ms - acked_ms is the real-time estimate
    sent_ms: float  # how much of the turn had been sent
    rtt_ms: float = 0.0  # the round-trip estimate the position was corrected by


class PlaybackLedger:
    """Chunks sent, markers acknowledged, the call's round trip, and the heard position of the current turn."""

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
        self._acked_planned_end = 0.0
        self._edge_end = 0.0  # when the edge will have played everything sent so far (planned: no network)
        self._rtt_samples: deque[float] = deque(maxlen=_RTT_SAMPLES)

    # -- sending ---------------------------------------------------------------------------------
    def chunk_sent(self, turn_id: int, duration_ms: float, now: float) -> str:
        """Record a chunk of `turn_id` that was just sent; returns the marker name to send after it."""
        if turn_id != self._turn_id:
            self._start_turn(turn_id, now)
        self._seq += 1
        name = f"g{self.generation}s{self._seq}"
        start = self._turn_sent_ms
        self._turn_sent_ms += duration_ms
        self._edge_end = max(self._edge_end, now) + duration_ms / 1000.0
        self._pending[name] = _Marker(name, turn_id, start, self._turn_sent_ms, now, self._edge_end)
        return name

    def _start_turn(self, turn_id: int, now: float) -> None:
        self._turn_id = turn_id
        self._turn_sent_ms = 0.0
        self._turn_first_sent_at = now
        self._acked_ms = 0.0
        self._acked_at = None

    def resume(self, turn_id: int, from_ms: float, now: float) -> None:
        """The turn goes on after a clear, from `from_ms` of its audio: the next chunk sent starts there."""
        self._start_turn(turn_id, now)
        self._turn_sent_ms = from_ms
        self._acked_ms = from_ms

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
        self._rtt_samples.append(max(0.0, now - marker.planned_end))
        if marker.turn_id == self._turn_id:
            self._acked_ms = marker.end_ms
            self._acked_at = now
            self._acked_planned_end = marker.planned_end
        return True

    @property
    def needs_rtt_samples(self) -> bool:
        """Fewer acknowledgements back or on their way than the estimate needs: the outbox sends short chunks.

        With the usual 160 ms chunks a call's first three acknowledgements come back only after about half a
        second of audio has played (plus the round trip), and a barge-in before that was cut a round trip
        short (measured over 40 +/- 15 ms each way: 4 of 99 cuts 80-100 ms early, all in the first ~600 ms).
        Short chunks at the start of the call bring the samples in within the first ~150 ms of audio.
        """
        return len(self._rtt_samples) + len(self._pending) < _RTT_MIN_SAMPLES

    @property
    def rtt_s(self) -> float:
        """The call's round-trip estimate in seconds (0 until `_RTT_MIN_SAMPLES` acknowledgements came back)."""
        return median(self._rtt_samples) if len(self._rtt_samples) >= _RTT_MIN_SAMPLES else 0.0

    def playing(self, now: float) -> bool:
        """Audio of the current generation is (probably) still playing at the edge.

        Pending markers mean audio is queued; the grace bounds how long a lost acknowledgement can keep the call
        in "speaking" (Plivo does not acknowledge checkpoints whose audio did not play fully).
        """
        return bool(self._pending) and now < self._edge_end + self._ack_grace_s

    # -- the heard position ----------------------------------------------------------------------
    def heard(self, now: float) -> HeardPosition:
        """The current turn's heard position at `now` (see the module docstring)."""
        return self._position(now, now)

    def clear(self, now: float) -> HeardPosition:
        """A clear was just sent: the heard position when it reaches the edge; then a new generation."""
        heard = self._position(now, now + self.rtt_s / 2.0)
        self.generation += 1
        self._pending.clear()
        self._edge_end = now
        self._turn_id = None
        return heard

    def _position(self, now: float, edge_time: float) -> HeardPosition:
        """The turn's position at `edge_time` on the edge, from what we know at `now`."""
        rtt = self.rtt_s
        if self._turn_id is None:
            return HeardPosition(None, 0.0, 0.0, 0.0, rtt * 1000.0)
        one_way = rtt / 2.0
        base = self._acked_ms
        # When the edge finished playing the acknowledged audio: its planned end plus the call's one-way delay
        # (the edge plays that far behind the plan), and no later than the ack's arrival. The call's median,
        # not this one ack's own lag, so an ack that met a slow network (or that we read late) does not move
        # the cut; until the estimate is trusted, the ack's arrival. Before any ack: the turn's first send,
        # reaching the edge one way later.
        if self._acked_at is not None:
            at = self._acked_at
            if len(self._rtt_samples) >= _RTT_MIN_SAMPLES:
                at = min(at, self._acked_planned_end + one_way)
        else:
            at = self._turn_first_sent_at + one_way
        position = base
        pending = [m for m in self._pending.values() if m.turn_id == self._turn_id]
        for marker in pending:
            # A chunk cannot start playing before it reached the edge (the edge may have run dry).
            start = max(at, marker.sent_at + one_way)
            if edge_time <= start:
                break
            duration_ms = marker.end_ms - position
            played_ms = min(duration_ms, (edge_time - start) * 1000.0)
            position += played_ms
            at = start + duration_ms / 1000.0
            if played_ms < duration_ms:
                break
        if pending:
            # The first unacknowledged marker had not played by `now - one_way` (else its ack would be here).
            cap = pending[0].end_ms + max(0.0, edge_time - now + one_way) * 1000.0
            position = min(position, cap)
        return HeardPosition(self._turn_id, position, base, self._turn_sent_ms, rtt * 1000.0)
