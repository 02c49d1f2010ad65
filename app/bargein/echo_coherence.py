"""EchoCoherence: how much of the caller leg the agent's audio at the locked delay explains, before the filter can.

Why (issue 12)
--------------
Until the echo filter converges (the first second or so of a reply, and again after the echo path jumps) the
guard could bound the echo only by levels: a frame no louder than the agent's audio could make it was taken
for echo. A caller who talks over the start of a reply near the echo's level (a quiet talker, a loud
speakerphone) was reported as echo, attenuated, and the candidate turned away. Levels cannot tell them apart;
what can is whether the caller leg *follows* the agent's audio at the echo's delay. An echo is a filtered
copy of the reference, a caller is not.

What
----
Per 20 ms frame, the last two caller frames (a 40 ms window) and the reference windows at the locked delay
and `lags - 1` further 20 ms steps later in the echo (so a lock that GCC put early on a voiced agent's side
peak, as it does for long delays soon after the echo starts, still finds the echo in one of them) are taken
to spectra, and per bin the cross- and auto-spectra are smoothed over frames (`alpha` a frame: ~80 ms). The
share of the caller leg's energy that a per-bin gain from the reference can explain is, per lag,

    sum_f |S_xr(f)|^2 / S_rr(f)  over  sum_f S_xx(f)

(the magnitude-squared coherence weighted by the caller leg's spectrum). For an echo, the reference at the
right lag explains it, up to the loudspeaker's clipping and the room's tail; a caller's voice, uncorrelated
with the agent's audio, leaves only the estimate's bias (about alpha / (2 - alpha) a bin). The largest
share over the lags is returned.

Measured on the pool (echo_eval's calls, caller 0.3 s into the reply, frames before the filter converged, each
against its true echo share): echo alone 0.77 / 0.86 (5th percentile / median, 134 frames: the filter soon
converges there); frames the caller dominates (true echo share under 0.2) 0.22 / 0.58 (median / 95th
percentile, 2747 frames); frames that are echo with a caller in them fall between.

The guard uses the share to cap the echo fraction it reports (what `echo_share` and the candidate check see),
not the attenuation: a frame of echo under noise is mostly unexplained too, and passed whole its echo's speech
raises candidates that the noise's share then lets through.

A share is only as good as the lock: at a wrong lag an echo looks like a caller. `best` (the highest share
since the last reset, after `settle` frames) says whether this lock has ever shown the echo; the guard trusts
the share after a lock whose GCC peak was clear, or once `best` confirms the lock.

Cost: one FFT call on `lags + 1` rows and ~20 numpy calls on arrays of `lags` x 161 bins, each writing into a
buffer this object owns (26 us against 36 us for the same expressions allocating their results, measured side by
side on the loaded 2-core VM); the guard runs it only while its filter has not converged. Pure: numpy in, a
float out.
"""

from __future__ import annotations

import numpy as np

from app.bargein.echo_config import C128, F64, FRAME
from app.bargein.echo_fft import rfft


class EchoCoherence:
    """Smoothed spectra of the reference at `lags` lags and of the caller leg: `update()` -> explained share."""

    def __init__(self, alpha: float, lags: int) -> None:
        self.alpha = alpha
        self.lags = lags
        bins = FRAME + 1
        self._sxy: C128 = np.zeros((lags, bins), np.complex128)  # per lag: reference x caller leg
        self._sxx: F64 = np.zeros((lags, bins))  # per lag: the reference's power
        self._syy: F64 = np.zeros(bins)  # the caller leg's power
        self._rows: F64 = np.zeros((lags + 1, 2 * FRAME))  # scratch: the windows, one FFT call for all
        self._spec: C128 = np.zeros((lags + 1, bins), np.complex128)  # scratch: their spectra ...
        self._t: C128 = np.zeros((lags, bins), np.complex128)  # ... the cross-spectra's step ...
        self._sq: F64 = np.zeros((lags + 1, 2 * bins))  # ... squares of real and imaginary parts ...
        self._pw: F64 = np.zeros((lags + 1, bins))  # ... |X|^2 per row ...
        self._den: F64 = np.zeros((lags, bins))  # ... and the regularised reference power
        self.frames = 0  # updates since the last reset
        self.best = 0.0  # the highest share since the last reset, from the `settle`-th update on

    def reset(self) -> None:
        """A new delay: what was learnt at the old one says nothing about the new."""
        self._sxy[:] = 0.0
        self._sxx[:] = 0.0
        self._syy[:] = 0.0
        self.frames = 0
        self.best = 0.0

    def update(self, ref: F64, mic2: F64, settle: int = 6) -> float:
        """Add a frame; return the share in [0, 1] of the caller leg's recent energy the reference explains.

        `ref`: the reference, (lags + 1) frames ending where the last caller frame's echo starts at the
        locked delay; `mic2`: the last two caller frames. The first frames after a reset read high whatever
        they hold (a per-bin gain fits a single frame exactly), so `best` counts from the `settle`-th on.
        """
        a = self.alpha
        n = self.lags
        rows = self._rows
        for j in range(n):  # row j: the window at the delay + j frames (newest reference first)
            rows[j] = ref[(n - 1 - j) * FRAME : (n + 1 - j) * FRAME]
        rows[n] = mic2
        # In place, into scratch buffers: the same operations, in the same order, as the plain expressions in
        # the comments (the per-call allocations were a third of this update's cost).
        spec = rfft(rows, 2 * FRAME, self._spec)
        x, m = spec[:n], spec[n]
        # sxy += a * (conj(x) * m - sxy)
        t = np.conjugate(x, out=self._t)
        t *= m
        t -= self._sxy
        t *= a
        self._sxy += t
        # |X|^2 of every row, the reference's and the caller leg's: re^2 + im^2 (squares interleaved, then paired)
        sq = np.square(spec.view(np.float64), out=self._sq)
        pw = np.add(sq[:, 0::2], sq[:, 1::2], out=self._pw)
        # sxx += a * (|x|^2 - sxx); syy += a * (|m|^2 - syy)
        np.subtract(pw[:n], self._sxx, out=pw[:n])
        pw[:n] *= a
        self._sxx += pw[:n]
        np.subtract(pw[n], self._syy, out=pw[n])
        pw[n] *= a
        self._syy += pw[n]
        total = float(np.add.reduce(self._syy))
        if total <= 0.0:
            return 0.0
        # Regularised: a bin the reference leaves empty explains nothing (not 0 / 0).
        floor = 1e-3 * total / len(self._syy) + 1e-9
        # explained = sum over bins of |sxy|^2 / (sxx + floor), per lag
        sq = np.square(self._sxy.view(np.float64), out=self._sq[:n])
        num = np.add(sq[:, 0::2], sq[:, 1::2], out=self._pw[:n])
        num /= np.add(self._sxx, floor, out=self._den)
        explained = np.add.reduce(num, axis=1)
        share = min(1.0, float(explained.max()) / total)
        self.frames += 1
        if self.frames >= settle:
            self.best = max(self.best, share)
        return share
