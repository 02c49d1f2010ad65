"""Pure audio helpers: G.711 mu-law <-> PCM16, levels in dBFS, resampling, framing. No I/O, no clocks.

Telephony media streams carry 8 kHz mu-law, one byte per sample; everything inside bargein works on int16
numpy arrays. The codec is two lookup tables built once at import from the G.711 formula (the same arithmetic
as CPython's audioop, which is deprecated and gone from the 3.13 stdlib), so a 20 ms frame costs one
fancy-index.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Pcm16 = npt.NDArray[np.int16]

SILENCE_DBFS = -120.0
"""Level reported for digital silence, where the logarithm would be minus infinity."""

_FULL_SCALE = 32768.0
_ULAW_BIAS = 0x84
# G.711 clips the 14-bit magnitude here; with the bias added it is exactly the top of segment 7.
_ULAW_CLIP = 8159


def _build_ulaw_decode_table() -> Pcm16:
    code = ~np.arange(256, dtype=np.int32) & 0xFF  # codes are transmitted bit-inverted
    exponent = (code & 0x70) >> 4
    magnitude = (((code & 0x0F) << 3) + _ULAW_BIAS) << exponent
    linear = np.where(code & 0x80, _ULAW_BIAS - magnitude, magnitude - _ULAW_BIAS)
    table = linear.astype(np.int16)
    table.flags.writeable = False
    return table


def _build_ulaw_encode_table() -> npt.NDArray[np.uint8]:
    # Index i is the int16 sample whose bit pattern, read as uint16, equals i; so the table is addressed by
    # pcm.view(np.uint16) with no sign arithmetic per sample.
    sample = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    # G.711 mu-law works on 14-bit samples; the floor shift maps -1..-4 to -1, as the reference coder does.
    value14 = sample >> 2
    negative = value14 < 0
    magnitude = np.minimum(np.abs(value14), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    # Segment = position of the highest set bit above the 6-bit first segment (magnitude >= 33, so >= 0).
    segment = np.floor(np.log2(magnitude)).astype(np.int32) - 5
    segment = np.clip(segment, 0, 7)
    mantissa = (magnitude >> (segment + 1)) & 0x0F
    # At the clip point the magnitude spills into a ninth segment; the coder saturates to the largest code.
    overflow = magnitude > 0x1FFF
    mantissa = np.where(overflow, 0x0F, mantissa)
    code = (segment << 4) | mantissa
    code = np.where(negative, code ^ 0x7F, code ^ 0xFF)
    table: npt.NDArray[np.uint8] = code.astype(np.uint8)
    table.flags.writeable = False
    return table


_ULAW_TO_PCM = _build_ulaw_decode_table()
_PCM_TO_ULAW = _build_ulaw_encode_table()


def ulaw_to_pcm16(data: bytes) -> Pcm16:
    """Decode G.711 mu-law bytes (one byte per sample, any length) into int16 samples."""
    return _ULAW_TO_PCM[np.frombuffer(data, dtype=np.uint8)]


def pcm16_to_ulaw(pcm: Pcm16) -> bytes:
    """Encode int16 samples as G.711 mu-law bytes, one byte per sample."""
    samples = np.asarray(pcm, dtype=np.int16)
    return _PCM_TO_ULAW[samples.view(np.uint16)].tobytes()


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
