"""The caller's recent audio, kept so the recognizer hears a turn from its first word.

Theory of operation
-------------------
The detector fires some 60-200 ms after the caller starts talking, and the caller's turn is only known to
have started once it has; a recognizer fed from that moment would miss the first word ("wait", "no").
`CallerAudio` keeps the caller's mu-law as it arrives, in one byte buffer on a sample clock: sample `n` arrived
`(total - n) / 8000` s before the latest frame. `between(t0, t1)` cuts out the audio of a stretch of call
time, so a turn's audio starts a pre-roll before the detector's speech start.

What is kept is bounded: the longest stretch anyone asks for (`keep_s`, a turn the recognizer takes whole),
trimmed lazily (at twice that) so a frame costs an append. Times map to samples through the latest frame's
arrival, so network jitter moves a cut by at most one frame (20 ms), which the pre-roll covers.
"""

from __future__ import annotations

SAMPLE_RATE = 8000


class CallerAudio:
    """The caller's last `keep_s` of mu-law, addressable by call time."""

    __slots__ = ("_buf", "_first", "_total", "_latest_at", "_keep")

    def __init__(self, keep_s: float) -> None:
        self._buf = bytearray()
        self._first = 0  # sample number of _buf[0]
        self._total = 0  # samples received so far
        self._latest_at = 0.0  # arrival of the latest frame (its last sample)
        self._keep = max(1, int(keep_s * SAMPLE_RATE))

    def push(self, ulaw: bytes, at: float) -> None:
        """A caller frame that arrived at `at` (its last sample is at `at`)."""
        self._buf += ulaw
        self._total += len(ulaw)
        self._latest_at = at
        if len(self._buf) > 2 * self._keep:
            cut = len(self._buf) - self._keep
            del self._buf[:cut]
            self._first += cut

    @property
    def kept_s(self) -> float:
        return len(self._buf) / SAMPLE_RATE

    def _sample_at(self, t: float) -> int:
        return self._total - round((self._latest_at - t) * SAMPLE_RATE)

    def between(self, t0: float, t1: float) -> bytes:
        """The audio from call time `t0` to `t1` (clipped to what is kept)."""
        lo = max(self._sample_at(t0), self._first)
        hi = min(self._sample_at(t1), self._total)
        if hi <= lo:
            return b""
        return bytes(self._buf[lo - self._first:hi - self._first])
