"""echo_fft: the guard's FFTs give what numpy.fft gives, to the bit, with the private ufunc and without it."""

from __future__ import annotations

import numpy as np
import pytest

from app.bargein import echo_fft


@pytest.mark.parametrize(("shape", "n"), [((320,), 320), ((2, 320), 320), ((2, 4, 320), 320), ((2, 2000), 5625),
                                          ((2, 3600), 5760), ((3, 100), 321)])
def test_rfft_and_irfft_match_numpy_fft(shape: tuple[int, ...], n: int) -> None:
    x = np.random.default_rng(n).standard_normal(shape) * 3000
    spec = echo_fft.rfft(x, n, np.empty(shape[:-1] + (n // 2 + 1,), np.complex128))
    assert np.array_equal(spec, np.fft.rfft(x, n, axis=-1))
    back = echo_fft.irfft(spec, np.empty(shape[:-1] + (n,)))
    assert np.array_equal(back, np.fft.irfft(spec, n, axis=-1))


def test_the_fast_path_is_taken_on_this_numpy() -> None:
    # numpy >= 2.0 has the ufunc; were it gone, the guard would be slower, not wrong (the test below).
    assert echo_fft.FAST == (int(np.__version__.split(".")[0]) >= 2)


def test_the_fallback_gives_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(1).standard_normal((2, 320))
    fast = echo_fft.rfft(x, 320, np.empty((2, 161), np.complex128))
    fast_back = echo_fft.irfft(fast, np.empty((2, 320)))
    for name in ("_rfft_even", "_rfft_odd", "_irfft"):
        monkeypatch.setattr(echo_fft, name, None)
    assert np.array_equal(echo_fft.rfft(x, 320, np.empty((2, 161), np.complex128)), fast)
    assert np.array_equal(echo_fft.irfft(fast, np.empty((2, 320))), fast_back)
