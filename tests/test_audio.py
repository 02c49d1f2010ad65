"""app/audio.py: the mu-law codec against CPython's reference coder, levels, resampling, framing."""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np
import pytest

from app.audio import (
    SILENCE_DBFS,
    dbfs,
    pcm16_to_ulaw,
    peak_dbfs,
    split_frames,
    ulaw_to_pcm16,
)
from providers.resample import resample


@pytest.fixture(scope="module")
def audioop() -> ModuleType:
    # stdlib on 3.11/3.12 (deprecated, warns on import); the audioop-lts package provides it on 3.13.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module: ModuleType = pytest.importorskip("audioop")
    return module


ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def tone(freq_hz: float, rate: int, seconds: float, amplitude: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


# mu-law ---------------------------------------------------------------------------------------------------


def test_decode_matches_audioop_on_every_code(audioop: ModuleType) -> None:
    codes = bytes(range(256))
    expected = np.frombuffer(audioop.ulaw2lin(codes, 2), dtype=np.int16)
    assert np.array_equal(ulaw_to_pcm16(codes), expected)


def test_encode_matches_audioop_on_every_int16(audioop: ModuleType) -> None:
    expected = audioop.lin2ulaw(ALL_INT16.tobytes(), 2)
    assert pcm16_to_ulaw(ALL_INT16) == expected


def test_one_byte_per_sample_at_any_length() -> None:
    for n in (0, 1, 159, 160, 161, 1001):
        decoded = ulaw_to_pcm16(b"\x55" * n)
        assert decoded.dtype == np.int16 and len(decoded) == n
        assert len(pcm16_to_ulaw(np.zeros(n, dtype=np.int16))) == n


def test_round_trip_is_exact_except_negative_zero() -> None:
    codes = np.arange(256, dtype=np.uint8)
    again = np.frombuffer(pcm16_to_ulaw(ulaw_to_pcm16(codes.tobytes())), dtype=np.uint8)
    differs = codes[again != codes]
    # 0x7F decodes to 0, which encodes as 0xFF (positive zero).
    assert differs.tolist() == [0x7F]


def test_encode_accepts_strided_views() -> None:
    pcm = tone(440, 8000, 0.1)
    assert pcm16_to_ulaw(pcm[::2]) == pcm16_to_ulaw(pcm[::2].copy())


# levels ---------------------------------------------------------------------------------------------------


def test_dbfs_of_silence_and_empty_is_the_floor() -> None:
    assert dbfs(np.zeros(160, dtype=np.int16)) == SILENCE_DBFS
    assert dbfs(np.zeros(0, dtype=np.int16)) == SILENCE_DBFS
    assert peak_dbfs(np.zeros(160, dtype=np.int16)) == SILENCE_DBFS


def test_dbfs_of_full_scale_square_is_zero() -> None:
    square = np.tile(np.array([-32768, 32767], dtype=np.int16), 80)
    assert dbfs(square) == pytest.approx(0.0, abs=1e-3)
    assert peak_dbfs(square) == pytest.approx(0.0, abs=1e-9)


def test_dbfs_of_sine_is_peak_minus_3db() -> None:
    amplitude = 3276.8  # -20 dBFS peak
    pcm = tone(1000, 8000, 1.0, amplitude)
    assert dbfs(pcm) == pytest.approx(-20.0 - 3.0103, abs=0.02)
    assert peak_dbfs(pcm) == pytest.approx(-20.0, abs=0.01)


def test_dbfs_does_not_overflow_on_long_loud_input() -> None:
    loud = np.full(8000 * 60, -32768, dtype=np.int16)
    assert dbfs(loud) == pytest.approx(0.0, abs=1e-9)


# resampling -----------------------------------------------------------------------------------------------


def test_resample_length_and_dtype() -> None:
    for n in (0, 1, 2, 441, 22050, 22051):
        out = resample(np.ones(n, dtype=np.int16), 22050, 8000)
        assert out.dtype == np.int16
        assert len(out) == -(-n * 8000 // 22050)


def test_resample_same_rate_is_a_copy() -> None:
    pcm = tone(1000, 8000, 0.1)
    out = resample(pcm, 8000, 8000)
    assert np.array_equal(out, pcm) and out is not pcm


def test_downsample_keeps_1khz_and_kills_5khz() -> None:
    kept = resample(tone(1000, 22050, 1.0), 22050, 8000)[400:-400]
    assert 20 * np.log10(rms(kept) / (10000 / np.sqrt(2))) == pytest.approx(0.0, abs=0.1)
    # 5 kHz folds to 3 kHz at 8 kHz unless it is filtered out first.
    killed = resample(tone(5000, 22050, 1.0), 22050, 8000)[400:-400]
    assert rms(killed) < 10000 * 1e-3  # below -60 dB


def test_downsample_has_no_delay() -> None:
    out = resample(tone(1000, 22050, 0.5), 22050, 8000).astype(np.float64)
    ideal = 10000 * np.sin(2 * np.pi * 1000 * np.arange(len(out)) / 8000)
    assert np.max(np.abs(out - ideal)[200:-200]) <= 2.0


def test_upsample_keeps_a_tone() -> None:
    out = resample(tone(1000, 8000, 0.5), 8000, 16000)
    assert len(out) == 8000
    ideal = 10000 * np.sin(2 * np.pi * 1000 * np.arange(len(out)) / 16000)
    assert np.max(np.abs(out - ideal)[200:-200]) <= 2.0


def test_resample_keeps_dc_exactly() -> None:
    out = resample(np.full(4410, 1234, dtype=np.int16), 22050, 8000)
    assert set(out[100:-100].tolist()) == {1234}


def test_resample_clips_instead_of_wrapping() -> None:
    square = np.repeat(np.array([32767, -32768] * 20, dtype=np.int16), 50)
    out = resample(square, 22050, 8000)
    # Gibbs overshoot past full scale must saturate, not wrap to the opposite sign.
    assert out.max() == 32767 and out.min() == -32768


# framing --------------------------------------------------------------------------------------------------


def test_split_frames() -> None:
    pcm = np.arange(350, dtype=np.int16)
    frames = split_frames(pcm, 160)
    assert [len(f) for f in frames] == [160, 160, 30]
    assert np.array_equal(np.concatenate(frames), pcm)
    padded = split_frames(pcm, 160, pad=True)
    assert [len(f) for f in padded] == [160, 160, 160]
    assert not padded[-1][30:].any()
    assert split_frames(pcm[:0], 160) == []
    with pytest.raises(ValueError):
        split_frames(pcm, 0)
