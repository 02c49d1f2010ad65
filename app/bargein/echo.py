"""EchoGuard: removes the agent's own voice from the caller's leg before the speech detector decides.

Theory of operation
-------------------
On a speakerphone the caller's microphone hears the agent, and without a guard the detector hears the agent
"barge in" on itself. The guard keeps the agent's audio indexed by play time (`played(pcm16, start_t)`, fed
from the playback ledger's timing) and, per 20 ms caller frame (`process(frame, t)`, `t` the frame's arrival
time, so the frame covers samples [t*8000 - 160, t*8000)):

1. Bulk delay. Every `reestimate_s` while the agent is heard, GCC-PHAT between the last second of the
   caller leg and the agent's audio, both decimated to 4 kHz, over lags `min_delay_ms..max_delay_ms`. PHAT
   whitening keeps the peak sharp through the band limit, clipping and reverb. A peak that does not stand
   out of the correlation floor (double talk, silence) leaves the estimate alone.
2. Echo path. A partitioned-block frequency-domain NLMS filter (block = one 20 ms frame, `partitions`
   blocks: 80 ms of taps) starts `lead_ms` before the estimated delay, so it covers the direct path, the
   reverb's first 70 ms and a delay error of a few ms either way; the drift between estimates is absorbed
   by adaptation. A new delay estimate shifts the taps by the change instead of starting over. The gradient
   is constrained (overlap-save), every partition every frame: with 4 partitions that is two small FFTs.
3. Double talk. Adaptation freezes while the caller's leg is much louder than the echo can be: louder than
   `dt_ratio` times the larger of the filter's echo estimate and (echo-path gain x agent energy), with a
   hangover. The echo-path gain is learnt while converged and starts at 0 dB, so an unconverged filter
   still adapts on echo at any realistic loss. The caller's voice is never muted: the filter only
   subtracts its estimate of the echo, and a frozen filter keeps subtracting the echo alone.
4. Residual echo. ERLE (echo energy in / residual out) is tracked on echo-only frames; the residual echo in
   a frame is estimated as the echo estimate's energy / ERLE. `echo_fraction` is that residual's share of
   the cleaned frame's energy (0: all caller or line; 1: all leftover echo), for the detector to discount
   a candidate that is mostly echo. Optionally (`suppress`) the cleaned frame is also attenuated by
   sqrt(1 - echo_fraction), floored, which removes residual echo and leaves double talk almost untouched.

When no agent audio has played within `max_delay_ms + tail` the frame is returned as is (one comparison).

Pure and synchronous: no clock reads (times are arguments), no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
FRAME = 160
I16 = npt.NDArray[np.int16]
F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]

_RING = 1 << 15  # 4.1 s of history for both legs: estimation window + max delay, with room to spare
_DECIM = 2


@dataclass(frozen=True)
class EchoConfig:
    """The guard's settings; defaults cover the issue's 20-400 ms delay and a 64 ms+ reverb tail."""

    min_delay_ms: float = 20.0
    max_delay_ms: float = 400.0
    lead_ms: float = 12.0  # filter starts this long before the estimated delay
    partitions: int = 4  # 20 ms each: 80 ms of taps
    mu: float = 1.0
    constrain_every: int = 4
    reestimate_s: float = 0.5
    window_s: float = 0.5  # caller-leg history correlated per estimate: short, as drift smears the peak
    min_peak_ratio: float = 6.0  # GCC peak over the correlation's RMS floor: two such estimates must agree
    sure_peak_ratio: float = 12.0  # ... or one this clear is taken alone
    agree_ms: float = 2.0
    jump_ms: float = 3.0  # a GCC delay this far from the current one moves the filter at once
    converged_erle: float = 2.0  # 3 dB: from here on the filter's own peak tap tracks the drift
    dt_ratio: float = 4.0  # 6 dB: caller leg this much louder than the echo could be -> double talk
    dt_hangover_frames: int = 5
    active_tail_ms: float = 150.0  # keep running this long after the last echo could have arrived
    suppress: bool = True
    suppress_floor: float = 0.03  # -30 dB at most

    def __post_init__(self) -> None:
        if not 0 < self.min_delay_ms < self.max_delay_ms:
            raise ValueError("need 0 < min_delay_ms < max_delay_ms")
        if self.partitions < 1 or not 0 < self.mu < 2:
            raise ValueError("need partitions >= 1 and 0 < mu < 2")


def _energy(x: F64) -> float:
    """Sum of squares. Not `x @ x`: that goes to BLAS, whose threads cost milliseconds on a busy host."""
    return float(np.einsum("i,i->", x, x))


class _Ring:
    """Samples indexed by absolute sample number (play time x 8000); unwritten spans read as zeros.

    Holds the newest 4 s: the agent's audio must be recorded when it is sent (a few hundred ms ahead of
    playing), not a whole reply at once, or its start is overwritten before its echo comes back.
    """

    def __init__(self) -> None:
        # float32: the rings are most of a call's memory (2 x 128 KB), and int16 samples fit exactly.
        self.buf = np.zeros(_RING, np.float32)
        self.end = 0  # one past the last sample written

    def write(self, start: int, x: F64) -> None:
        if start > self.end:  # a gap (nothing played): stale samples there must read as silence
            self._fill(self.end, np.zeros(min(start - self.end, _RING)))
        if len(x) > _RING:  # only the newest _RING samples can be kept
            start, x = start + len(x) - _RING, x[-_RING:]
        self._fill(start, x)
        self.end = max(self.end, start + len(x))

    def _fill(self, start: int, x: F64) -> None:
        i = start % _RING
        k = min(len(x), _RING - i)
        self.buf[i : i + k] = x[:k]
        self.buf[: len(x) - k] = x[k:]

    def read(self, start: int, n: int) -> F64:
        i = start % _RING
        if i + n <= _RING:
            out = self.buf[i : i + n].astype(np.float64)
        else:
            out = np.concatenate((self.buf[i:], self.buf[: n - (_RING - i)])).astype(np.float64)
        if start + n > self.end:  # not written yet (not played yet): silence, not what was there 4 s ago
            out[max(0, self.end - start) :] = 0.0
        if start < self.end - _RING:
            out[: min(n, self.end - _RING - start)] = 0.0
        return out


class EchoGuard:
    """One call's echo canceller: `played()` the agent's audio by play time, `process()` each caller frame."""

    def __init__(self, config: EchoConfig | None = None) -> None:
        self.config = c = config or EchoConfig()
        self._ref = _Ring()
        self._mic = _Ring()
        self._last_play_end: float | None = None
        p, bins = c.partitions, FRAME + 1
        self._w: C128 = np.zeros((p, bins), np.complex128)
        self._x: C128 = np.zeros((p, bins), np.complex128)  # row 0: newest reference block spectrum
        self._x_start: int | None = None  # where row 0's block starts in the reference
        self.delay: int | None = None  # bulk delay in samples (filter starts at delay - lead)
        self._next_estimate = 0.0
        self._gain2 = 1.0  # echo-path energy gain, learnt; 0 dB until then
        self._erle = 1.0  # echo energy / residual energy, smoothed over echo-only frames
        self._dt_left = 0
        self._frames = 0
        self.double_talk = False
        self.peak_ratio = 0.0  # the last delay estimate's GCC peak over its floor
        self._candidate: int | None = None  # the last GCC lag, awaiting confirmation

    # -- the agent's side ------------------------------------------------------------------------
    def played(self, pcm16: I16, start_t: float) -> None:
        """The agent's audio `pcm16` starts playing at `start_t` (seconds, the caller-frame clock)."""
        if len(pcm16) == 0:
            return
        start = round(start_t * SAMPLE_RATE)
        self._ref.write(start, pcm16.astype(np.float64))
        end_t = start_t + len(pcm16) / SAMPLE_RATE
        self._last_play_end = end_t if self._last_play_end is None else max(self._last_play_end, end_t)

    def active(self, t: float) -> bool:
        """Agent audio played recently enough that its echo may be in a frame arriving at `t`."""
        c = self.config
        return (
            self._last_play_end is not None and t - self._last_play_end < (c.max_delay_ms + c.active_tail_ms) / 1000.0
        )

    # -- the caller's side -----------------------------------------------------------------------
    def process(self, mic_pcm16_frame: I16, t: float) -> tuple[I16, float]:
        """Clean one caller frame arriving at `t`: (frame with the echo estimate removed, echo_fraction)."""
        n = len(mic_pcm16_frame)
        end = round(t * SAMPLE_RATE)
        if not self.active(t):
            return mic_pcm16_frame, 0.0
        mic = mic_pcm16_frame.astype(np.float64)
        self._mic.write(end - n, mic)
        if n != FRAME:
            return mic_pcm16_frame, 0.0  # the filter's block is one telephony frame; others pass as they are
        if t >= self._next_estimate:
            self._next_estimate = t + self.config.reestimate_s
            # GCC catches jumps (a jitter buffer re-sizing) wherever they land; the converged filter's own
            # peak follows small moves more precisely than GCC can through drift and reverb.
            if not self._estimate_delay(end) and self.delay is not None and self._erle >= self.config.converged_erle:
                self._recentre()
        if self.delay is None:
            e, fraction = self._before_lock(mic, end)
        else:
            e, fraction = self._cancel(mic, end)
        return np.clip(np.round(e), -32768, 32767).astype(np.int16), fraction

    def _before_lock(self, mic: F64, end: int) -> tuple[F64, float]:
        """No delay yet (the first ~0.5-1 s of agent audio): bound the echo by the loudest it could be.

        The bound is the agent's mean energy over the whole delay range times the echo-path gain (0 dB until
        measured): a frame under it may be all echo, one `dt_ratio` over it is the caller. Until the
        first lock, a caller quieter than the agent is attenuated like echo; that is the price of not
        stopping on our own voice in the first second of every reply.
        """
        c = self.config
        dmin = round(c.min_delay_ms * SAMPLE_RATE / 1000)
        dmax = round(c.max_delay_ms * SAMPLE_RATE / 1000)
        ref_e = _energy(self._ref.read(end - dmax - FRAME, dmax - dmin + FRAME)) / (dmax - dmin + FRAME)
        mic_e = _energy(mic) / FRAME
        bound = self._gain2 * ref_e
        self.double_talk = mic_e > c.dt_ratio * bound + 1.0
        if self.double_talk or bound <= 1.0:
            return mic, 0.0
        fraction = min(1.0, bound / max(mic_e, 1e-3))
        if c.suppress:
            mic = mic * max(c.suppress_floor, math.sqrt(1.0 - fraction))
        return mic, fraction

    def _cancel(self, mic: F64, end: int) -> tuple[F64, float]:
        c = self.config
        assert self.delay is not None
        start = end - FRAME - self.delay + round(c.lead_ms * SAMPLE_RATE / 1000)
        # Overlap-save: the newest block's spectrum covers [previous block, this block].
        ref2 = self._ref.read(start - FRAME, 2 * FRAME)
        if self._x_start is not None and start == self._x_start + FRAME:
            self._x = np.roll(self._x, 1, axis=0)
            self._x[0] = np.fft.rfft(ref2)
        else:  # a new delay or a gap in the frames: the older rows no longer line up, so rebuild them all
            p = c.partitions
            older = self._ref.read(start - p * FRAME, (p + 1) * FRAME)
            for i in range(p):
                self._x[i] = np.fft.rfft(older[(p - 1 - i) * FRAME : (p + 1 - i) * FRAME])
        self._x_start = start
        y = np.fft.irfft((self._w * self._x).sum(axis=0), 2 * FRAME)[FRAME:]
        e = mic - y
        ref_e = _energy(ref2[FRAME:]) / FRAME
        mic_e = _energy(mic) / FRAME
        y_e = _energy(y) / FRAME
        e_e = _energy(e) / FRAME
        # Double talk: the caller's leg is louder than any echo of this frame's reference could be.
        bound = max(y_e, self._gain2 * ref_e)
        if mic_e > c.dt_ratio * bound + 1.0:
            self._dt_left = c.dt_hangover_frames
        else:
            self._dt_left = max(0, self._dt_left - 1)
        self.double_talk = self._dt_left > 0
        if not self.double_talk and ref_e > 1.0:
            self._adapt(e)
            if y_e > 1.0:
                self._erle = 0.9 * self._erle + 0.1 * min(1000.0, mic_e / max(e_e, 1e-3))
                if self._erle > 4.0:  # converged enough (6 dB) that y measures the echo path
                    self._gain2 = 0.95 * self._gain2 + 0.05 * min(1.0, y_e / ref_e)
        residual = max(y_e, self._gain2 * ref_e) / max(self._erle, 1.0)
        fraction = min(1.0, residual / max(e_e, 1e-3))
        if c.suppress and fraction > 0.0:
            e = e * max(c.suppress_floor, math.sqrt(1.0 - fraction))
        return e, fraction

    def _adapt(self, e: F64) -> None:
        c = self.config
        err = np.fft.rfft(np.concatenate((np.zeros(FRAME), e)))
        power = (self._x.real**2 + self._x.imag**2).sum(axis=0)
        step = c.mu / (power + 1e-3 * (float(power.mean()) + 1.0))
        self._w += np.conj(self._x) * (err * step)
        # Gradient constraint: keep each partition's taps to its own 160 (linear, not circular convolution).
        # Applied to the weights every `constrain_every` frames rather than to every update: the updates in
        # between wrap only a little, and the two FFTs are a third of the frame's cost (numpy per-call cost).
        self._frames += 1
        if self._frames % c.constrain_every == 0:
            taps = np.fft.irfft(self._w, 2 * FRAME, axis=1)
            taps[:, FRAME:] = 0.0
            self._w = np.fft.rfft(taps, axis=1)

    # -- bulk delay ------------------------------------------------------------------------------
    def _estimate_delay(self, end: int) -> bool:
        """Run GCC-PHAT; True if it moved the delay by more than `jump_ms`."""
        c = self.config
        win = round(c.window_s * SAMPLE_RATE)
        dmin = round(c.min_delay_ms * SAMPLE_RATE / 1000)
        dmax = round(c.max_delay_ms * SAMPLE_RATE / 1000)
        mic = self._mic.read(end - win, win)
        ref = self._ref.read(end - win - dmax, win + dmax)
        if _energy(mic) < win or _energy(ref) < win:
            return False  # too quiet to say
        m = mic.reshape(-1, _DECIM).mean(axis=1)
        r = ref.reshape(-1, _DECIM).mean(axis=1)
        size = 1 << int(math.ceil(math.log2(len(m) + len(r))))
        cross = np.conj(np.fft.rfft(m, size)) * np.fft.rfft(r, size)
        # PHAT weighting, regularised: bins the band limit emptied would otherwise add pure noise.
        mag = np.abs(cross)
        cc = np.fft.irfft(cross / (mag + 0.05 * float(mag.mean()) + 1e-9), size)
        # cc[k] = sum_i m[i] r[i + k]; mic[i] echoes ref[i + dmax - lag], so k = (dmax - lag) / decim.
        k_lo, k_hi = 0, (dmax - dmin) // _DECIM
        seg = cc[k_lo : k_hi + 1]
        k = int(np.argmax(seg))
        floor = float(np.sqrt(np.mean(seg * seg))) or 1e-12
        self.peak_ratio = float(seg[k] / floor)
        if self.peak_ratio < c.min_peak_ratio:
            return False
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
            return False
        if self.delay is not None and abs(lag - self.delay) <= c.jump_ms * SAMPLE_RATE / 1000:
            return False
        if self.delay is None:
            # First lock: the echo path's gain from the window's levels (mostly echo, or GCC would not
            # have locked), doubled for margin, so double talk is told from echo before the filter converges.
            aligned = ref[dmax - lag : dmax - lag + win]
            gain2 = 2.0 * _energy(mic) / max(_energy(aligned), 1.0)
            self._gain2 = min(1.0, max(1e-3, gain2))
        self._set_delay(lag)
        return True

    def _recentre(self) -> None:
        """Follow drift with the converged filter's strongest tap: keep it `lead_ms` into the filter."""
        assert self.delay is not None
        taps = np.fft.irfft(self._w, 2 * FRAME, axis=1)[:, :FRAME].reshape(-1)
        peak = int(np.argmax(np.abs(taps)))
        shift = peak - round(self.config.lead_ms * SAMPLE_RATE / 1000)
        if abs(shift) > 2:
            self._set_delay(self.delay + shift)

    def _set_delay(self, lag: int) -> None:
        if self.delay is None:
            self.delay = lag
            return
        shift = lag - self.delay
        if abs(shift) <= 2:
            return  # within what adaptation follows on its own
        # The taps model echo at ref[n - delay + lead - k]; a later delay moves every tap `shift` earlier.
        p = self.config.partitions
        taps = np.fft.irfft(self._w, 2 * FRAME, axis=1)[:, :FRAME].reshape(-1)
        moved = np.zeros_like(taps)
        if shift > 0:
            moved[: len(taps) - shift] = taps[shift:] if shift < len(taps) else 0.0
        else:
            moved[-shift:] = taps[: len(taps) + shift] if -shift < len(taps) else 0.0
        blocks = np.zeros((p, 2 * FRAME))
        blocks[:, :FRAME] = moved.reshape(p, FRAME)
        self._w = np.fft.rfft(blocks, axis=1)
        self.delay = lag
        self._erle = 1.0  # a jump means the filter was wrong for a while: trust the level bound until it re-converges
