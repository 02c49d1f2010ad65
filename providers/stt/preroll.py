"""A pre-roll ring buffer: the last second or two of the caller's audio, kept so a recognizer can hear it late.

The barge-in detector fires some hundreds of milliseconds after the caller starts speaking (it needs sustained
speech to tell it from noise), and a turn's recognizer session is opened then; without this buffer the first
words, "wait, no", would never reach it. The call feeds every inbound frame here as it arrives; when a session
opens, `replay(session, from_ms)` feeds it the frames from a little before the speech began, then the call goes
on feeding live frames.

Pure: frames and times in, frames out; no clock, no I/O.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from providers.stt.base import AudioEncoding, bytes_per_ms


class _Feedable(Protocol):
    def feed(self, audio: bytes, at_ms: float) -> None: ...


class PreRoll:
    """The most recent `capacity_ms` of frames, each with the call time of its first sample."""

    def __init__(self, capacity_ms: float = 1500.0, encoding: AudioEncoding = "mulaw") -> None:
        if capacity_ms <= 0:
            raise ValueError("capacity_ms must be positive")
        self.capacity_ms = capacity_ms
        self._bytes_per_ms = bytes_per_ms(encoding)
        self._frames: deque[tuple[bytes, float]] = deque()

    def _end_ms(self, frame: bytes, at_ms: float) -> float:
        return at_ms + len(frame) / self._bytes_per_ms

    def push(self, frame: bytes, at_ms: float) -> None:
        """Keep `frame`; frames that ended more than `capacity_ms` before this one's end are dropped."""
        self._frames.append((frame, at_ms))
        horizon = self._end_ms(frame, at_ms) - self.capacity_ms
        while self._frames and self._end_ms(*self._frames[0]) <= horizon:
            self._frames.popleft()

    def since(self, from_ms: float) -> list[tuple[bytes, float]]:
        """The kept frames that end after `from_ms` (the one holding `from_ms` included), oldest first."""
        return [(f, t) for f, t in self._frames if self._end_ms(f, t) > from_ms]

    def replay(self, session: _Feedable, from_ms: float) -> int:
        """Feed `session` the kept frames from `from_ms` on; returns how many were fed."""
        frames = self.since(from_ms)
        for frame, at_ms in frames:
            session.feed(frame, at_ms)
        return len(frames)

    @property
    def oldest_ms(self) -> float | None:
        """Where the kept audio starts, or None when empty."""
        return self._frames[0][1] if self._frames else None

    def clear(self) -> None:
        self._frames.clear()
