"""A simulated loudspeaker-room-phone echo path: the agent's own voice as it comes back on the caller's leg.

Theory of operation
-------------------
On a speakerphone (or a handset held loosely) the caller's microphone hears the agent's audio again. From
the server's side the path is, in order:

1. the phone line to the caller and the loudspeaker: a 300-3400 Hz band limit, then the loudspeaker's
   soft clipping (a tanh curve, the level driven up to where the curve bends);
2. the room: a direct path plus a few early reflections and an exponentially decaying diffuse tail
   (RT60 `rt60_ms`), drawn from `seed`;
3. the bulk delay: network, jitter buffers and the acoustic path, `delay_ms` plus a slow drift of up to
   `drift_ms` (the two ends' sample clocks and jitter buffers are not locked) applied as a time-varying
   fractional delay;
4. the caller's microphone and line back: the band limit again, the echo return loss (`erl_db`: echo
   level relative to the agent's level, e.g. -12 dB) and the G.711 mu-law round trip.

Everything is deterministic for a given seed; pure numpy, no I/O.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from app.audio import pcm16_to_ulaw, ulaw_to_pcm16

SAMPLE_RATE = 8000
I16 = npt.NDArray[np.int16]
F64 = npt.NDArray[np.float64]

BAND_LOW_HZ = 300.0
BAND_HIGH_HZ = 3400.0


def band_limit(x: F64, low_hz: float = BAND_LOW_HZ, high_hz: float = BAND_HIGH_HZ) -> F64:
    """A steep telephone band pass (8th-order-like magnitude, zero phase), applied in the frequency domain."""
    n = len(x)
    if n == 0:
        return x.copy()
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    freqs[0] = 1e-3
    gain = 1 / np.sqrt(1 + (low_hz / freqs) ** 8) / np.sqrt(1 + (freqs / high_hz) ** 16)
    return np.fft.irfft(np.fft.rfft(x) * gain, n)


def soft_clip(x: F64, drive: float = 1.5) -> F64:
    """Loudspeaker distortion: the peak is driven to `drive` on a tanh curve (harmonics on loud syllables)."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak == 0.0:
        return x.copy()
    y: F64 = np.tanh(x * (drive / peak)) * (peak / math.tanh(drive))
    return y


def room_response(rt60_ms: float, seed: int, length_ms: float = 300.0) -> F64:
    """A room impulse response: direct path, 3-5 early reflections, and a decaying diffuse tail."""
    rng = np.random.default_rng(seed)
    n = int(length_ms * SAMPLE_RATE / 1000)
    h = np.zeros(n)
    h[0] = 1.0
    for _ in range(int(rng.integers(3, 6))):
        at = int(rng.integers(int(0.002 * SAMPLE_RATE), int(0.025 * SAMPLE_RATE)))
        h[at] += rng.uniform(-0.5, 0.5)
    t = np.arange(n) / SAMPLE_RATE
    # RT60: the diffuse energy falls 60 dB in rt60 seconds, i.e. amplitude falls as exp(-6.9 t / rt60).
    # 0.08: the diffuse energy is about half the direct path's (DRR ~ +3 dB), as for a phone whose mic sits
    # a few cm from its loudspeaker; the 64 ms+ of it that a canceller must model still carries most of the rest.
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / (rt60_ms / 1000.0)) * 0.08
    tail[: int(0.005 * SAMPLE_RATE)] = 0.0  # the diffuse field builds up after the first reflections
    return h + tail


def drifting_delay(n: int, delay_ms: float, drift_ms: float, seed: int, skew_ppm: float = 100.0) -> F64:
    """Delay in samples for each output sample: delay_ms plus a drift that stays within [0, drift_ms].

    Two kinds of drift, both real: the two ends' sample clocks differ by `skew_ppm` (a slow ramp), and the
    jitter buffers on the way re-size now and then, which moves the whole echo by a jump (here every
    3-8 s, to anywhere in the drift range). A smooth wander of 20 ms within seconds would be a 0.4% clock
    error, far beyond any phone's; the jumps are what the echo guard's re-estimation has to follow.
    """
    rng = np.random.default_rng(seed + 1)
    offset = np.zeros(n)
    at, level = 0, rng.uniform(0.0, drift_ms)
    while at < n:
        length = int(rng.uniform(3.0, 8.0) * SAMPLE_RATE)
        offset[at : at + length] = level
        at += length
        level = rng.uniform(0.0, drift_ms)
    ramp = np.arange(n) / SAMPLE_RATE * skew_ppm * 1e-3  # ms: 100 ppm is 0.1 ms a second
    total = np.clip(offset + ramp, 0.0, drift_ms)
    return (delay_ms + total) * SAMPLE_RATE / 1000.0


def _rms(x: F64) -> float:
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


def echo_of(
    agent_pcm16_8k: I16,
    *,
    erl_db: float,
    delay_ms: float,
    drift_ms: float = 0.0,
    seed: int = 0,
    rt60_ms: float = 150.0,
    drive: float = 1.5,
) -> I16:
    """The agent's audio as its echo on the caller's leg, same length as the input (pad it for the tail).

    `erl_db` is the echo's RMS level relative to the agent's RMS level (negative: -6, -12, -18).
    """
    x = agent_pcm16_8k.astype(np.float64)
    n = len(x)
    if n == 0 or _rms(x) == 0.0:
        return np.zeros(n, np.int16)
    y = soft_clip(band_limit(x), drive)
    h = room_response(rt60_ms, seed)
    size = 1 << int(np.ceil(np.log2(n + len(h))))
    y = np.fft.irfft(np.fft.rfft(y, size) * np.fft.rfft(h, size), size)[:n]
    delays = drifting_delay(n, delay_ms, drift_ms, seed)
    # Fractional delay by linear interpolation: sample i of the output is the input at i - delay(i).
    y = np.interp(np.arange(n) - delays, np.arange(n), y, left=0.0, right=0.0)
    y = band_limit(y)
    # ERL against the agent's level over the same span: the echo's RMS is erl_db under the agent's RMS.
    y *= _rms(x) * 10 ** (erl_db / 20) / (_rms(y) or 1.0)
    pcm = np.clip(np.round(y), -32768, 32767).astype(np.int16)
    return ulaw_to_pcm16(pcm16_to_ulaw(pcm))


def with_caller(echo: I16, caller: I16, offset: int, caller_gain_db: float = 0.0) -> I16:
    """Double talk: caller speech from sample `offset` on, added over the echo, through mu-law again.

    Acoustically the two add at the caller's microphone before the line codec; the echo has been through
    mu-law once already, which costs far less than the second quantisation's noise matters here.
    """
    out = echo.astype(np.float64).copy()
    end = min(len(out), offset + len(caller))
    if end > offset:
        out[offset:end] += caller[: end - offset].astype(np.float64) * 10 ** (caller_gain_db / 20)
    pcm = np.clip(np.round(out), -32768, 32767).astype(np.int16)
    return ulaw_to_pcm16(pcm16_to_ulaw(pcm))
