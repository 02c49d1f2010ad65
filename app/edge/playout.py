"""The edge's playback buffer: the agent's audio played out at 8,000 samples/s on the edge's own clock.

Playout is modelled exactly rather than drained tick by tick: a continuous run that started at `t0` at byte
`b0` has played `b0 + floor((now - t0) * 8000)` bytes at `now`, so a clear cuts at the precise sample and
there is no drift. The playout task only wakes when the next mark falls due, which keeps 100 concurrent
calls cheap.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

SAMPLE_RATE = 8000
# A float product such as (t0 + n/8000 - t0) * 8000 can land a hair under n; without this a mark due exactly
# now would wait one more loop turn.
_EPS = 1e-6


@dataclass(slots=True)
class MarkRecord:
    """A Twilio `mark` / Plivo `checkpoint` the server sent, and what became of it."""

    name: str
    received_at: float
    position: int  # byte offset in the received agent stream that must have played first
    played_at: float | None = None  # when the audio before it finished playing (None if it was cut)
    acked_at: float | None = None  # when the echo / playedStream left the edge
    cleared: bool = False  # pending at a clear: echoed at once (Twilio) or never acknowledged (Plivo)


@dataclass(frozen=True, slots=True)
class PlayedSpan:
    """One continuous stretch of agent audio the caller heard."""

    start: float
    end: float
    first_byte: int  # offsets into the received agent stream, end exclusive; mu-law is one byte per sample
    end_byte: int
    ended_by: Literal["drained", "clear", "hangup", "playing"]

    @property
    def samples(self) -> int:
        return self.end_byte - self.first_byte


@dataclass(frozen=True, slots=True)
class DroppedRange:
    """Agent audio a clear threw away before it played."""

    at: float
    first_byte: int
    end_byte: int


class Playout:
    """The edge's playback buffer on its own clock; synchronous, every method takes `now`."""

    def __init__(self, *, max_buffer_s: float = 600.0, keep_audio: bool = True) -> None:
        self._max_buffer = int(max_buffer_s * SAMPLE_RATE)
        self._keep_audio = keep_audio
        self._audio = bytearray()
        self.received = 0  # bytes ever queued (dropped ones included): the end of the agent stream
        self.played = 0  # bytes consumed by playback or by a clear
        self._run: tuple[float, int] | None = None  # (t0, b0) of the run in progress
        self._pending: deque[MarkRecord] = deque()
        self.spans: list[PlayedSpan] = []
        self.dropped: list[DroppedRange] = []
        self.first_audio_at: float | None = None

    @property
    def buffered(self) -> int:
        return self.received - self.played

    @property
    def pending_marks(self) -> list[MarkRecord]:
        return list(self._pending)

    def audio(self, now: float, data: bytes) -> bool:
        """Queue agent audio; False if the buffer is full and the edge discards it."""
        self.advance(now)
        if self.received - self.played + len(data) > self._max_buffer:
            return False
        if not data:
            return True
        if self._keep_audio:
            self._audio += data
        if self._run is None:
            # The buffer had run dry, so playback resumes the moment audio arrives.
            self._run = (now, self.received)
            if self.first_audio_at is None:
                self.first_audio_at = now
        self.received += len(data)
        return True

    def marker(self, now: float, record: MarkRecord) -> list[MarkRecord]:
        """Queue a mark behind the audio received so far; returns the marks now due (maybe this one)."""
        self._pending.append(record)
        return self.take_due(now)

    def advance(self, now: float) -> None:
        """Play up to `now`. Marks are left for `take_due`, so reading the log never swallows an ack."""
        if self._run is None:
            return
        t0, b0 = self._run
        pos = b0 + int(max(0.0, now - t0) * SAMPLE_RATE + _EPS)
        if pos >= self.received:
            pos = self.received
            self.spans.append(PlayedSpan(t0, t0 + (pos - b0) / SAMPLE_RATE, b0, pos, "drained"))
            self._run = None
        self.played = max(self.played, pos)

    def take_due(self, now: float) -> list[MarkRecord]:
        """The marks whose audio has finished playing by `now`, with `played_at` set."""
        self.advance(now)
        due: list[MarkRecord] = []
        while self._pending and self._pending[0].position <= self.played:
            mark = self._pending.popleft()
            played_at = self._time_of(mark.position)
            mark.played_at = mark.received_at if played_at is None else max(mark.received_at, played_at)
            due.append(mark)
        return due

    def _time_of(self, position: int) -> float | None:
        """When byte `position` of the agent stream finished playing (None if it never played)."""
        if self._run is not None and position >= self._run[1]:
            t0, b0 = self._run
            return t0 + (position - b0) / SAMPLE_RATE
        for span in reversed(self.spans):
            if span.first_byte < position <= span.end_byte:
                return span.start + (position - span.first_byte) / SAMPLE_RATE
            if span.end_byte < position:
                break
        return None

    def next_due(self) -> float | None:
        """When the oldest pending mark falls due (-inf if it already has), or None if nothing is pending."""
        if not self._pending:
            return None
        if self._pending[0].position <= self.played:
            return float("-inf")
        if self._run is None:
            return None
        t0, b0 = self._run
        return t0 + (self._pending[0].position - b0) / SAMPLE_RATE

    def clear(self, now: float) -> tuple[list[MarkRecord], list[MarkRecord]]:
        """Empty the buffer at `now`: (marks that had played before the clear, marks cut by it)."""
        due = self.take_due(now)
        self._stop_run(now, "clear")
        if self.played < self.received:
            self.dropped.append(DroppedRange(now, self.played, self.received))
        self.played = self.received
        cut = list(self._pending)
        self._pending.clear()
        for mark in cut:
            mark.cleared = True
        return due, cut

    def hangup(self, now: float) -> None:
        """The call ended: nothing more is heard."""
        self.advance(now)
        self._stop_run(now, "hangup")

    def _stop_run(self, now: float, why: Literal["clear", "hangup"]) -> None:
        if self._run is not None:
            t0, b0 = self._run
            if self.played > b0:
                self.spans.append(PlayedSpan(t0, max(t0, now), b0, self.played, why))
            self._run = None

    def spans_until(self, now: float) -> list[PlayedSpan]:
        self.advance(now)
        spans = list(self.spans)
        if self._run is not None:
            t0, b0 = self._run
            spans.append(PlayedSpan(t0, now, b0, self.played, "playing"))
        return spans

    def render(self, now: float, t0: float, n: int) -> bytes:
        """The mu-law byte playing at each of the times `t0 + i / 8000` (i < n); mu-law silence where nothing
        played. This is what the caller's loudspeaker put out, sample by sample, on any grid (the echo path
        reads it on the caller frame grid)."""
        self._need_audio()
        out = bytearray(b"\xff" * n)
        t1 = t0 + n / SAMPLE_RATE
        for span in reversed(self.spans_until(now)):
            if span.end <= t0:
                break
            if span.start >= t1:
                continue
            lo = max(0, math.ceil((span.start - t0) * SAMPLE_RATE - _EPS))
            hi = min(n, math.ceil((span.end - t0) * SAMPLE_RATE - _EPS))
            # Playout runs at exactly 8,000 bytes a second, so consecutive samples are consecutive bytes.
            b = span.first_byte + int(max(0.0, t0 + lo / SAMPLE_RATE - span.start) * SAMPLE_RATE + _EPS)
            hi = min(hi, lo + span.end_byte - b)
            if hi > lo:
                out[lo:hi] = self._audio[b : b + hi - lo]
        return bytes(out)

    def received_audio(self) -> bytes:
        self._need_audio()
        return bytes(self._audio)

    def heard(self, now: float, since: float | None = None, until: float | None = None) -> bytes:
        """The mu-law bytes that played between `since` and `until` (clock times), in play order."""
        self._need_audio()
        out = bytearray()
        for span in self.spans_until(now):
            lo = span.first_byte
            hi = span.end_byte
            if since is not None:
                lo = max(lo, span.first_byte + int(max(0.0, since - span.start) * SAMPLE_RATE + _EPS))
            if until is not None:
                hi = min(hi, span.first_byte + int(max(0.0, until - span.start) * SAMPLE_RATE + _EPS))
            if hi > lo:
                out += self._audio[lo:hi]
        return bytes(out)

    def position_at(self, now: float, t: float) -> int | None:
        """The byte of the agent stream playing at clock time `t`, or None if nothing was heard then."""
        for span in self.spans_until(now):
            if span.start <= t < span.end:
                return min(span.end_byte - 1, span.first_byte + int((t - span.start) * SAMPLE_RATE + _EPS))
        return None

    def _need_audio(self) -> None:
        if not self._keep_audio:
            raise RuntimeError("this call was started with keep_audio=False")
