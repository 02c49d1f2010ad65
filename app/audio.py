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

__all__ = ["SILENCE_DBFS", "Pcm16", "dbfs", "pcm16_to_ulaw", "peak_dbfs", "split_frames", "ulaw_to_pcm16"]

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
