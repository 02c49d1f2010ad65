"""Bulk delay: where in the agent's audio the echo on the caller's leg comes from (GCC-PHAT), and its budget.

The echo filter spans only 80 ms of taps, while the echo's delay (network, jitter buffers, the room) is
anywhere in `min_delay_ms..max_delay_ms`; so the delay is found first and the filter placed on it. GCC-PHAT
between the caller leg and the agent's audio, both decimated to 4 kHz, over that lag range: PHAT whitening
keeps the peak sharp through the band limit, clipping and reverb. A peak that does not stand out of the
correlation floor (double talk, silence) leaves the estimate alone, and one peak under drift or double talk
can be a stray: `DelayTracker` acts on a peak that is clear (`sure_peak_ratio`) or confirmed by the next
estimate, and moves a locked delay only on two agreeing estimates whose peak the current delay has lost.

When to look (the first try `lock_first_s` after the agent's audio starts, retries, re-estimates) is the
guard's; how many looks all calls of the process may take at once is `GccBudget`'s: one GCC costs ~0.15-0.4 ms
(0.14 ms against 0.27 ms before its FFTs went through `echo_fft`, two of them in one call: side by side, 2-core VM).

Pure: sample positions and times are arguments.
"""

from __future__ import annotations

import functools

import numpy as np

from app.bargein.echo_config import F64, SAMPLE_RATE, EchoConfig
from app.bargein.echo_fft import irfft, rfft
from app.bargein.echo_ring import SampleRing, energy

_DECIM = 2


@functools.cache  # a handful of sizes per process (the window grows to `window_s`); the search is ~6 us
def fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: pocketfft is as fast there as at a power of two, and up to ~45% shorter."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p235 = p35
            while p235 < n:
                p235 *= 2
            best = min(best, p235)
            p35 *= 3
        p5 *= 5
    return best


class GccBudget:
    """How many delay estimates (GCC-PHAT, 0.15-0.4 ms each) all calls may run per `per_s` of the callers'
    time: 100 calls starting together would otherwise run theirs in the same loop turns and hold the loop up
    to 50 ms (hold mode, measured). A call refused now tries again on its next frame. Times are arguments."""

    def __init__(self, runs: int = 4, per_s: float = 0.02) -> None:
        self.runs, self.per_s = runs, per_s
        self._slot = -1
        self._left = runs

    def take(self, t: float) -> bool:
        slot = int(t // self.per_s)
        if slot != self._slot:
            self._slot, self._left = slot, self.runs
        if self._left <= 0:
            return False
        self._left -= 1
        return True


# One per process: the loop all calls share is what the budget protects.
SHARED_GCC_BUDGET = GccBudget()


def gcc_windows(
    mic: SampleRing, ref: SampleRing, end: int, run_start: float, config: EchoConfig
) -> tuple[F64, F64, int]:
    """The caller leg's last stretch before `end` and the agent's audio that could echo in it: (mic, ref, win).

    No older than the agent's audio (its stretch started at `run_start`) can have echoed: early tries
    correlate less silence, and cost less.
    """
    c = config
    since_s = end / SAMPLE_RATE - run_start - c.min_delay_ms / 1000
    win = round(min(c.window_s, max(0.2, since_s)) * SAMPLE_RATE) // _DECIM * _DECIM
    dmax = round(c.max_delay_ms * SAMPLE_RATE / 1000)
    return mic.read(end - win, win), ref.read(end - win - dmax, win + dmax), win


def gcc_phat(mic: F64, ref: F64, win: int, config: EchoConfig) -> tuple[int, float, F64] | None:
    """GCC-PHAT of the caller leg `mic` against the agent's audio `ref` (as `gcc_windows` gives them) over the
    delay range: (peak index, peak over the correlation's RMS floor, the correlation over the range); None if
    either side is too quiet to say."""
    c = config
    dmin = round(c.min_delay_ms * SAMPLE_RATE / 1000)
    dmax = round(c.max_delay_ms * SAMPLE_RATE / 1000)
    if energy(mic) < win or energy(ref) < win:
        return None  # too quiet to say
    # Both legs decimated (_DECIM is 2: pairs averaged, (a + b) * 0.5 being the pairs' mean to the bit) into one
    # zero-padded array, so one FFT call transforms both (row by row the same numbers as two calls).
    nm, nr = len(mic) // _DECIM, len(ref) // _DECIM
    legs = np.zeros((2, nr))
    np.add(mic[0::2], mic[1::2], out=legs[0, :nm])
    np.add(ref[0::2], ref[1::2], out=legs[1])
    legs *= 0.5
    size = fft_size(nm + nr)
    spec = rfft(legs, size, np.empty((2, size // 2 + 1), np.complex128))
    cross = np.conjugate(spec[0], out=spec[0])
    cross *= spec[1]
    # PHAT weighting, regularised: bins the band limit emptied would otherwise add pure noise.
    mag = np.abs(cross)
    mag += 0.05 * (float(np.add.reduce(mag)) / len(mag))  # mag.mean(), without its wrapper
    mag += 1e-9  # in two steps, as the expression it replaces: one combined constant would round differently
    cc = irfft(np.divide(cross, mag, out=cross), np.empty(size))
    # cc[k] = sum_i m[i] r[i + k]; mic[i] echoes ref[i + dmax - lag], so k = (dmax - lag) / decim.
    seg = cc[0 : (dmax - dmin) // _DECIM + 1]
    k = int(np.argmax(seg))
    floor = float(np.sqrt(float(np.add.reduce(seg * seg)) / len(seg))) or 1e-12
    return k, float(seg[k] / floor), seg


class DelayTracker:
    """Turns GCC-PHAT peaks into delay decisions: a clear or confirmed peak locks, a confirmed jump moves."""

    def __init__(self, config: EchoConfig) -> None:
        self.config = config
        self.peak_ratio = 0.0  # the last delay estimate's GCC peak over its floor
        self._candidate: int | None = None  # the last GCC lag, awaiting confirmation

    def propose(self, found: tuple[int, float, F64], delay: int | None) -> int | None:
        """The delay (samples) to move to after this GCC result, given the current `delay`; None: stay."""
        c = self.config
        k, self.peak_ratio, seg = found
        dmax = round(c.max_delay_ms * SAMPLE_RATE / 1000)
        if self.peak_ratio < c.min_peak_ratio:
            return None
        # Parabolic interpolation of the peak to a fraction of a decimated sample.
        frac = 0.0
        if 0 < k < len(seg) - 1:
            a, b, d = seg[k - 1], seg[k], seg[k + 1]
            den = a - 2 * b + d
            frac = 0.5 * (a - d) / den if den != 0 else 0.0
        lag = dmax - round((k + frac) * _DECIM)
        # One GCC peak under drift or double talk can be a stray; act on it when it is clear or confirmed.
        agree = self._candidate is not None and abs(lag - self._candidate) <= c.agree_ms * SAMPLE_RATE / 1000
        self._candidate = lag
        if not (self.peak_ratio >= c.sure_peak_ratio or agree):
            return None
        if delay is not None:
            if abs(lag - delay) <= c.jump_ms * SAMPLE_RATE / 1000:
                return None
            # Moving a locked filter throws away what it learnt, and a voiced agent (periodic pitch, repeated
            # syllables) gives strong stray peaks: move only on two agreeing estimates, and only if the
            # current delay's correlation has really faded (measured: one lone peak moved a correct lock
            # 68 ms off, and the echo then passed as "double talk").
            k_now = (dmax - delay) // _DECIM
            if not agree or (0 <= k_now < len(seg) and seg[k_now] > c.keep_peak_share * seg[k]):
                return None
        return lag
