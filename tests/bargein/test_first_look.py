"""The first look: a voiced onset clears at once, a broadband burst Silero is barely sure of waits."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.bargein import first_look, impulse

RATE = 8000


def voiced_onset(n: int) -> npt.NDArray[np.int16]:
    """140 Hz with its harmonics under 3.4 kHz, a 10 ms rise: how a vowel starts."""
    t = np.arange(n) / RATE
    x = sum((1 / k) * np.sin(2 * np.pi * 140 * k * t + k) for k in range(1, 25) if 140 * k < 3400)
    x = np.asarray(x) * np.minimum(1.0, t / 0.01)
    return (x / np.abs(x).max() * 8000).astype(np.int16)


def burst(n: int, seed: int = 3) -> npt.NDArray[np.int16]:
    """White noise with a 5 ms attack and a 60 ms decay: how a cough starts."""
    t = np.arange(n) / RATE
    x = np.random.default_rng(seed).standard_normal(n) * np.minimum(1.0, t / 0.005) * np.exp(-t / 0.06)
    return (x / np.abs(x).max() * 16000).astype(np.int16)


def test_a_voiced_onset_is_never_doubted_whatever_silero_says() -> None:
    for probs in ([0.99, 0.995], [0.93, 0.91]):
        assert not first_look.doubtful(voiced_onset(512), probs)


def test_a_burst_silero_is_barely_sure_of_is_doubted_and_not_confirmed() -> None:
    assert first_look.doubtful(burst(512), [0.93, 0.91])
    assert not first_look.confirms(burst(1280), [0.93, 0.91, 0.6, 0.4, 0.3])
    assert first_look.confirms(voiced_onset(1280), [0.97, 0.99, 0.99, 0.99, 0.99])


def test_the_looks_read_the_windows_they_were_fitted_on() -> None:
    assert impulse.window_samples(first_look.FIRST) == 512  # complete when the first stage fires
    assert impulse.window_samples(first_look.CONFIRM) == impulse.window_samples()  # with the second look
