"""SampleRing: one leg of the call (the agent's audio or the caller's) by absolute sample number.

The guard keeps both legs on one clock, the caller-frame clock in samples (play time x 8000), so the echo
path is a delay between two indices. Each leg is a ring of `RING` samples, 4.1 s: the delay estimator's
window, the longest delay and the outbox's send-ahead, with room to spare. The agent's audio is written when
the server sends it (ahead of its play time, with gaps between chunks), and cut back when a clear stops it;
so a read must tell written samples from stale ones: an unwritten span, whether not played yet, never played
or over 4 s old, reads as silence, not as what the ring held there before. A reader that keeps something it
computed from a leg (the guard keeps block energies between frames) learns from `changed_from` whether a
write or a clear has since changed samples under it: the agent's audio can be written late, or cut.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import numpy as np

from app.bargein.echo_config import F64

RING = 1 << 15  # 4.1 s of history for both legs: estimation window + max delay + send-ahead, with room to spare
UNCHANGED = 1 << 62  # `SampleRing.changed_from` when nothing has changed


def energy(x: F64) -> float:
    """Sum of squares of a 1-D float64 array (a 160-320 sample dot product: far under BLAS's threading size)."""
    return float(np.dot(x, x))


class SampleRing:
    """Samples indexed by absolute sample number (play time x 8000); unwritten spans read as zeros."""

    def __init__(self) -> None:
        # float32: the rings are most of a call's memory (2 x 128 KB), and int16 samples fit exactly.
        self.buf = np.zeros(RING, np.float32)
        self.end = 0  # one past the last sample written
        # The lowest sample number any write or truncate has changed since a reader set this to UNCHANGED: what
        # a reader caches of the ring (the guard's level bound) holds for samples under it.
        self.changed_from = UNCHANGED

    def write(self, start: int, x: F64) -> None:
        i = start % RING
        if start == self.end and i + len(x) <= RING:  # the usual case: the next frame, no wrap
            if start < self.changed_from:  # (min() costs a call: this runs for every frame of both legs)
                self.changed_from = start
            self.buf[i : i + len(x)] = x
            self.end += len(x)
            return
        self.changed_from = min(self.changed_from, start, self.end)  # a gap from `end` is filled with silence
        if start > self.end:  # a gap (nothing played): stale samples there must read as silence
            self._fill(self.end, np.zeros(min(start - self.end, RING)))
        if len(x) > RING:  # only the newest RING samples can be kept
            start, x = start + len(x) - RING, x[-RING:]
        self._fill(start, x)
        self.end = max(self.end, start + len(x))

    def truncate(self, end: int) -> None:
        """Forget everything from sample `end` on (it was never played)."""
        if end < self.end:
            self.changed_from = min(self.changed_from, end)
            self.end = end

    def _fill(self, start: int, x: F64) -> None:
        i = start % RING
        k = min(len(x), RING - i)
        self.buf[i : i + k] = x[:k]
        self.buf[: len(x) - k] = x[k:]

    def read(self, start: int, n: int, out: F64 | None = None) -> F64:
        """Samples `start`..`start + n` as float64 (into `out`, of length `n`, if given)."""
        i = start % RING
        if out is None:
            if i + n <= RING:
                out = self.buf[i : i + n].astype(np.float64)
            else:
                out = np.concatenate((self.buf[i:], self.buf[: n - (RING - i)])).astype(np.float64)
        elif i + n <= RING:
            out[:] = self.buf[i : i + n]  # float32 to float64: exact, as astype
        else:
            out[: RING - i] = self.buf[i:]
            out[RING - i :] = self.buf[: n - (RING - i)]
        if start + n > self.end:  # not written yet (not played yet): silence, not what was there 4 s ago
            out[max(0, self.end - start) :] = 0.0
        if start < self.end - RING:
            out[: min(n, self.end - RING - start)] = 0.0
        return out
