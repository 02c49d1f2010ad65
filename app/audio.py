"""Pure audio helpers: G.711 mu-law <-> PCM16, levels in dBFS, resampling, framing. No I/O, no clocks.

Telephony media streams carry 8 kHz mu-law, one byte per sample; everything inside bargein works on int16
numpy arrays. The codec itself is `providers/mulaw.py` (two lookup tables built once at import from the G.711
formula, the same arithmetic as CPython's audioop, which is gone from the 3.13 stdlib), re-exported here.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from providers.mulaw import pcm16_to_ulaw, ulaw_to_pcm16

Pcm16 = npt.NDArray[np.int16]

__all__ = [
    "SILENCE_DBFS", "Pcm16", "dbfs", "pcm16_to_ulaw", "peak_dbfs", "scale_to_dbfs", "split_frames", "ulaw_to_pcm16",
    "white_noise",
]

SILENCE_DBFS = -120.0
"""Level reported for digital silence, where the logarithm would be minus infinity."""

_FULL_SCALE = 32768.0


def dbfs(pcm: Pcm16) -> float:
    """RMS level in dBFS, where a full-scale square wave is 0 dBFS (a full-scale sine is about -3.01)."""
    n = pcm.shape[0]
    if n == 0:
        return SILENCE_DBFS
    # A float64 dot product goes to BLAS without a temporary for the squares; int16 would overflow.
    x = pcm.astype(np.float64)
    energy = float(np.dot(x, x))
    if energy <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(energy / (n * _FULL_SCALE * _FULL_SCALE)))


def scale_to_dbfs(x: npt.NDArray[np.float64], level_dbfs: float) -> Pcm16:
    """`x` scaled to an RMS level in dBFS, as int16 (rounded, clipped)."""
    rms = float(np.sqrt(np.mean(x * x))) or 1.0
    y = x * (_FULL_SCALE * 10 ** (level_dbfs / 20) / rms)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def white_noise(seconds: float, level_dbfs: float, seed: int = 0, sample_rate: int = 8000) -> Pcm16:
    """Line hiss: Gaussian white noise at an RMS level in dBFS, the same samples for the same seed."""
    rng = np.random.default_rng(seed)
    return scale_to_dbfs(rng.standard_normal(int(seconds * sample_rate)), level_dbfs)


def peak_dbfs(pcm: Pcm16) -> float:
    """Peak absolute sample level in dBFS (-32768 is 0 dBFS)."""
    if pcm.shape[0] == 0:
        return SILENCE_DBFS
    # max(-min, max) in Python ints: abs() of int16 would wrap -32768 onto itself.
    peak = max(-int(pcm.min()), int(pcm.max()))
    if peak <= 0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(peak / _FULL_SCALE))


def split_frames(pcm: Pcm16, samples_per_frame: int, *, pad: bool = False) -> list[Pcm16]:
    """Cut audio into consecutive frames (views); the last is shorter, or zero-padded when `pad` is set."""
    if samples_per_frame <= 0:
        raise ValueError("samples_per_frame must be positive")
    frames = [pcm[i : i + samples_per_frame] for i in range(0, pcm.shape[0], samples_per_frame)]
    if pad and frames and frames[-1].shape[0] < samples_per_frame:
        last = np.zeros(samples_per_frame, dtype=np.int16)
        last[: frames[-1].shape[0]] = frames[-1]
        frames[-1] = last
    return frames
