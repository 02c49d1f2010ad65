"""The simulated echo path has the properties the echo guard is tested against."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from app.offline.echo_path import SAMPLE_RATE, drifting_delay, echo_of, with_caller

I16 = npt.NDArray[np.int16]


def _speechlike(seconds: float = 4.0, seed: int = 0) -> I16:
    """White noise with a syllable-rate envelope: wideband, so the band limit shows in the spectrum."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2
    return np.clip(rng.standard_normal(n) * envelope * 3000, -32768, 32767).astype(np.int16)


def _db(x: npt.NDArray[np.float64]) -> float:
    return float(10 * np.log10(np.mean(x * x)))


@pytest.mark.parametrize("erl_db", [-6.0, -12.0, -18.0])
def test_erl_sets_the_echo_level(erl_db: float) -> None:
    agent = _speechlike()
    echo = echo_of(agent, erl_db=erl_db, delay_ms=100, drift_ms=20, seed=1)
    measured = _db(echo.astype(np.float64)) - _db(agent.astype(np.float64))
    assert measured == pytest.approx(erl_db, abs=0.5)


@pytest.mark.parametrize("delay_ms", [60.0, 150.0, 250.0])
def test_delay_found_by_cross_correlation(delay_ms: float) -> None:
    agent = _speechlike(seed=2).astype(np.float64)
    echo = echo_of(agent.astype(np.int16), erl_db=-12, delay_ms=delay_ms, drift_ms=0, seed=3)
    n = len(agent)
    cc = np.fft.irfft(np.fft.rfft(echo.astype(np.float64), 2 * n) * np.conj(np.fft.rfft(agent, 2 * n)), 2 * n)
    lag_ms = int(np.argmax(cc[: n // 2])) * 1000 / SAMPLE_RATE
    assert lag_ms == pytest.approx(delay_ms, abs=0.5)


def test_band_limited_to_the_phone_band() -> None:
    agent = _speechlike(seed=4)
    echo = echo_of(agent, erl_db=-6, delay_ms=100, seed=5).astype(np.float64)
    power = np.abs(np.fft.rfft(echo)) ** 2
    freqs = np.fft.rfftfreq(len(echo), 1 / SAMPLE_RATE)
    in_band = power[(freqs > 500) & (freqs < 3000)].mean()
    assert power[freqs < 150].mean() < in_band * 10 ** (-20 / 10)
    # 300-3400 Hz are the channel's edges, not brick walls: the 4 kHz end only falls off near Nyquist.
    assert power[freqs > 3800].mean() < in_band * 10 ** (-12 / 10)


def test_drift_stays_within_its_range_and_moves() -> None:
    d = drifting_delay(20 * SAMPLE_RATE, 150.0, 20.0, seed=6) * 1000 / SAMPLE_RATE
    assert d.min() >= 150.0 - 1e-9 and d.max() <= 170.0 + 1e-9
    assert d.max() - d.min() > 5.0  # it does drift over 20 s


def test_deterministic_for_a_seed() -> None:
    agent = _speechlike(seed=7)
    a = echo_of(agent, erl_db=-12, delay_ms=150, drift_ms=20, seed=8)
    b = echo_of(agent, erl_db=-12, delay_ms=150, drift_ms=20, seed=8)
    c = echo_of(agent, erl_db=-12, delay_ms=150, drift_ms=20, seed=9)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_with_caller_adds_speech_from_the_offset() -> None:
    echo = np.zeros(8000, np.int16)
    caller = np.full(1000, 1000, np.int16)
    mixed = with_caller(echo, caller, offset=4000)
    assert np.all(mixed[:4000] == 0)
    assert np.all(np.abs(mixed[4000:5000].astype(int) - 1000) < 40)  # mu-law step near 1000 is 32
    assert np.all(mixed[5000:] == 0)
