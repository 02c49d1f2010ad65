"""FrameClock: where each caller frame sits in the caller leg's history, on the caller's own 20 ms schedule.

Why not at its arrival: live frames arrive a few ms late and bunched after a busy loop turn, and a frame
placed at its arrival is misaligned against the agent's audio by its own lateness, a different amount every
frame, which no echo filter can follow. This, not the echo path, is why the live canceller barely converged
(ERLE ~0-3 dB live against 7-23 dB offline; offline with live-like arrivals -3..0 dB, on the schedule back to
the steady figure; on steady frames 5-6 dB against ~1 dB with live-like lateness on the simulated path).

The edge sends frames on an even 20 ms schedule and a frame never arrives before it was sent, so the
schedule is the earliest arrivals: frame k ends at `base + k * n`, `base` the smallest `arrival - k * n` seen,
let creep later by `_CREEP` samples a frame so a clock that runs slower than ours is followed. After a gap in
the frames the guard saw (longer than `_IDLE_S`: it was idle, the agent silent) the frames it did not see are
counted in from the arrival, as whole frames. A schedule that went wrong (no frame within 0.9 frame of it for
`_RESYNC_FRAMES`) is moved to the earliest of them.

Pure: arrival times are arguments.
"""

from __future__ import annotations

import math

from app.bargein.echo_config import SAMPLE_RATE

_IDLE_S = 0.2  # a longer gap between the frames process() saw: the guard was idle (no loop stalls this long)
_RESYNC_FRAMES = 25  # 0.5 s of frames all nearly a frame late or more: the frame schedule is off, move it
_CREEP = 0.02  # samples a frame the schedule may drift later: 125 ppm, more than two telephony clocks differ


class FrameClock:
    """The caller's frame schedule: `end(t, n)` is where a frame of `n` samples arriving at `t` ends."""

    def __init__(self, steady: bool = True) -> None:
        self.steady = steady  # False: frames at their arrival (for A/B runs: EchoConfig.frame_clock)
        self._base: float | None = None  # frame k ends at base + k * FRAME
        self._k = 0
        self._t = -math.inf  # arrival of the last frame placed
        self._at = 0  # the base in whole samples, as used
        self._min_late, self._seen = math.inf, 0  # the earliest lateness over the last frames

    def end(self, t: float, n: int) -> int:
        """The sample number just past this caller frame (`n` samples, arrived at `t`)."""
        arrival = t * SAMPLE_RATE
        if not self.steady:
            return round(arrival)
        if self._base is None:
            self._base, self._k = arrival - n, 1
            self._at = round(self._base)
        else:
            self._k += 1
            late = arrival - (self._base + self._k * n)
            if t - self._t > _IDLE_S and late > 0:  # frames the guard did not see: count them in
                self._k += int(late / n + 0.25)
        self._t = t
        late = arrival - (self._base + self._k * n)
        if late < 0:
            self._base += late
        else:
            self._base += min(late, _CREEP)
        # No frame of the last `_RESYNC_FRAMES` came within 0.9 frame of the schedule: the schedule is wrong
        # (a loop stall over `_IDLE_S` counted frames in that were only late, or frames went uncounted), and the
        # creep alone would take minutes to follow. Move it to the earliest of them.
        self._min_late = min(self._min_late, max(late, 0.0))
        self._seen += 1
        if self._seen >= _RESYNC_FRAMES:
            if self._min_late > 0.9 * n:  # uncounted frames: a whole frame or more; load: less
                self._base += self._min_late
            self._min_late, self._seen = math.inf, 0
        # Whole samples, moved only by a whole sample or more: a schedule flickering by one sample between
        # frames misaligns the filter's blocks against each other (measured: 29 dB ERLE fell to 9 dB).
        if abs(self._base - self._at) >= 1.0:
            self._at = round(self._base)
        return self._at + self._k * n
