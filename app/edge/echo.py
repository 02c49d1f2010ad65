"""The agent's own voice coming back on the caller's leg, frame by frame: a streaming loudspeaker-room-phone path.

Theory of operation
-------------------
`app.offline.echo_path.echo_of` turns a whole signal into its echo; a live call needs the same path causally,
20 ms at a time, for 20 calls at once. The emulator renders what the caller's loudspeaker PLAYED during each
caller frame (its playout log, on the caller frame grid) and feeds it here; `frame()` returns the echo that
the caller's microphone picks up during that same frame. The stages, in order (as in the offline path):

1. the line to the caller: a 300-3400 Hz band pass (a windowed-sinc FIR, applied with the room below);
2. the loudspeaker's soft clipping: tanh driven to `drive` at the loudest sample played so far (the offline
   path uses the whole signal's peak; a running peak is its causal form);
3. the room (`echo_path.room_response`: direct path, early reflections, RT60 tail) and the band pass again,
   merged into one FIR applied by FFT overlap-save, one 20 ms block at a time;
4. the bulk delay `delay_ms` plus a drift within [0, `drift_ms`] (jumps every 3-8 s, as jitter buffers
   re-size, plus a 100 ppm clock skew), read from a delay line by linear interpolation;
5. the echo return loss: the echo's RMS is `erl_db` under the RMS of the audio played so far. The gain is the
   running ratio of the two energies (before the delay, so both cover the same audio), frozen once a few
   seconds of agent audio have passed; before enough audio has played, a gain measured at construction on
   band-limited noise stands in.

The output is float PCM; the emulator adds the caller's own audio and the mu-law encoder of the line does
the G.711 round trip. Pure numpy, no clock reads, deterministic for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.offline.echo_path import BAND_HIGH_HZ, BAND_LOW_HZ, room_response

SAMPLE_RATE = 8000
FRAME = 160
F64 = npt.NDArray[np.float64]
_BAND_TAPS = 129
_ROOM_MS = 250.0  # the RT60 tail is 60 dB down after rt60_ms (150): 250 ms keeps everything audible
_FIR_DELAY = 3 * (_BAND_TAPS - 1) / 2  # samples: three band passes in the chain
_SKEW_PPM = 100.0
_GAIN_FREEZE_S = 4.0  # seconds of agent audio after which the ERL gain stops moving
_MIN_ENERGY = 1e3  # below this much agent energy (about -80 dBFS for a frame) the default gain is kept


@dataclass(frozen=True, slots=True)
class EchoSpec:
    """One call's echo path: level under the agent (`erl_db`, negative), bulk delay and drift in ms."""

    erl_db: float
    delay_ms: float
    drift_ms: float = 20.0
    seed: int = 0
    rt60_ms: float = 150.0
    drive: float = 1.5

    def __post_init__(self) -> None:
        if self.delay_ms < FRAME * 1000 / SAMPLE_RATE * 2:
            raise ValueError("the echo path needs a delay of at least 40 ms (two caller frames)")
        if self.drift_ms < 0:
            raise ValueError("drift_ms must be >= 0")


def band_pass_fir(taps: int = _BAND_TAPS, low_hz: float = BAND_LOW_HZ, high_hz: float = BAND_HIGH_HZ) -> F64:
    """A linear-phase 300-3400 Hz band pass (Hamming-windowed sinc), unity gain in the pass band."""
    n = np.arange(taps) - (taps - 1) / 2
    lo, hi = low_hz / SAMPLE_RATE, high_hz / SAMPLE_RATE
    h = 2 * hi * np.sinc(2 * hi * n) - 2 * lo * np.sinc(2 * lo * n)
    h *= np.hamming(taps)
    centre = (low_hz + high_hz) / 2
    gain = abs(np.sum(h * np.exp(-2j * np.pi * centre / SAMPLE_RATE * np.arange(taps))))
    out: F64 = h / gain
    return out


class _OverlapSave:
    """A long FIR applied to consecutive 160-sample blocks by FFT overlap-save."""

    def __init__(self, h: F64, block: int = FRAME) -> None:
        self._block = block
        self._size = 1 << int(math.ceil(math.log2(len(h) + block - 1)))
        self._H = np.fft.rfft(h, self._size)
        self._hist = np.zeros(self._size - block)

    def __call__(self, x: F64) -> F64:
        buf = np.concatenate((self._hist, x))
        self._hist = buf[len(x) :]
        y: F64 = np.fft.irfft(np.fft.rfft(buf) * self._H, self._size)[-len(x) :]
        return y


class _Drift:
    """The delay's drift, sample by sample: a level that jumps every 3-8 s, plus a slow clock skew."""

    def __init__(self, drift_ms: float, seed: int) -> None:
        self._rng = np.random.default_rng(seed + 1)
        self._drift_ms = drift_ms
        self._level = float(self._rng.uniform(0.0, drift_ms)) if drift_ms else 0.0
        self._left = self._segment()
        self._n = 0

    def _segment(self) -> int:
        return int(self._rng.uniform(3.0, 8.0) * SAMPLE_RATE)

    def next(self, count: int) -> F64:
        out = np.empty(count)
        i = 0
        while i < count:
            take = min(count - i, self._left)
            out[i : i + take] = self._level
            i += take
            self._left -= take
            if self._left == 0:
                self._level = float(self._rng.uniform(0.0, self._drift_ms)) if self._drift_ms else 0.0
                self._left = self._segment()
        ramp = (self._n + np.arange(count)) / SAMPLE_RATE * _SKEW_PPM * 1e-3
        self._n += count
        total: F64 = np.clip(out + ramp, 0.0, self._drift_ms)
        return total


class StreamingEcho:
    """`frame(played)` -> the echo heard during that caller frame; `played` is what the loudspeaker played in it."""

    def __init__(self, spec: EchoSpec) -> None:
        self.spec = spec
        self._line = _OverlapSave(band_pass_fir())
        self._room = _OverlapSave(_room_fir(spec))
        self._drift = _Drift(spec.drift_ms, spec.seed)
        self._target = 10 ** (spec.erl_db / 20)
        self._peak = 0.0
        self._e_in = 0.0  # agent energy played so far
        self._e_out = 0.0  # pre-gain echo energy over the same audio
        self._played_s = 0.0
        self._gain = self._target * _calibrate(spec)
        self._frozen = False
        # The delay line holds the gained echo before the delay, newest sample last.
        longest = int((spec.delay_ms + spec.drift_ms) * SAMPLE_RATE / 1000) + 2 * FRAME + 2
        self._line_buf = np.zeros(longest + FRAME)

    @property
    def gain(self) -> float:
        return self._gain

    def frame(self, played: F64) -> F64:
        """One caller frame (160 samples) of echo; `played` is the agent audio that played in the same 160."""
        if len(played) != FRAME:
            raise ValueError(f"want {FRAME} samples, got {len(played)}")
        x = self._line(played)
        peak = float(np.max(np.abs(played)))
        self._peak = max(self._peak, peak)
        if self._peak > 0.0:
            d = self.spec.drive
            x = np.tanh(x * (d / self._peak)) * (self._peak / math.tanh(d))
        y = self._room(x)
        self._track_gain(played, y)
        # Into the delay line (newest at the end), then read each output sample `delay` samples back.
        self._line_buf = np.concatenate((self._line_buf[FRAME:], y * self._gain))
        # The three linear-phase band passes already delay the echo by their group delay: the bulk delay makes
        # up the rest, so the echo lags the played audio by delay_ms + drift in all.
        delay = (self.spec.delay_ms + self._drift.next(FRAME)) * SAMPLE_RATE / 1000 - _FIR_DELAY
        end = len(self._line_buf)  # the sample after the newest
        pos = (end - FRAME + np.arange(FRAME)) - delay
        out: F64 = np.interp(pos, np.arange(end, dtype=np.float64), self._line_buf, left=0.0, right=0.0)
        return out

    def _track_gain(self, played: F64, y: F64) -> None:
        if self._frozen:
            return
        e_in = float(np.dot(played, played))
        if e_in > 0.0:
            self._played_s += FRAME / SAMPLE_RATE
        self._e_in += e_in
        self._e_out += float(np.dot(y, y))
        if self._e_in > _MIN_ENERGY * 50 and self._e_out > 0.0:
            self._gain = self._target * math.sqrt(self._e_in / self._e_out)
        if self._played_s >= _GAIN_FREEZE_S:
            self._frozen = True


def _room_fir(spec: EchoSpec) -> F64:
    """The room and the band pass of the line back, as one FIR."""
    band = band_pass_fir()
    h: F64 = np.convolve(np.convolve(room_response(spec.rt60_ms, spec.seed, _ROOM_MS), band), band)
    return h


def _calibrate(spec: EchoSpec) -> float:
    """The chain's amplitude loss on band-limited noise: the gain used before the agent has said much."""
    rng = np.random.default_rng(12345)
    band = _OverlapSave(band_pass_fir())
    noise = np.concatenate([band(rng.standard_normal(FRAME) * 3000.0) for _ in range(100)])
    line, room = _OverlapSave(band_pass_fir()), _OverlapSave(_room_fir(spec))
    peak = float(np.max(np.abs(noise)))
    out = []
    for i in range(0, len(noise), FRAME):
        x = line(noise[i : i + FRAME])
        x = np.tanh(x * (spec.drive / peak)) * (peak / math.tanh(spec.drive))
        out.append(room(x))
    y = np.concatenate(out)[FRAME * 20 :]
    ref = noise[FRAME * 20 :]
    return math.sqrt(float(np.dot(ref, ref)) / max(float(np.dot(y, y)), 1e-9))
