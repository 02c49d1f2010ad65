"""The echo guard's real FFTs, into buffers the caller owns, without numpy.fft's per-call Python wrapper.

Why: the guard's transforms are short (320 points a frame; ~5600 for a delay estimate) and run on every
caller frame of every call, and at that size numpy.fft's Python wrapper (argument checks, the norm factor,
an output allocation) costs as much as the transform: measured with numpy 2.4, `np.fft.rfft` of 320 points
4.9 us, the pocketfft ufunc it ends in, with an output buffer, 2.1 us; `irfft` 4.7 against 2.3 us.

What: `rfft(x, n, out)` and `irfft(spec, out)` call that ufunc (numpy >= 2.0: `numpy.fft._pocketfft_umath`,
a private module) exactly as `np.fft.rfft(x, n, axis=-1)` and `np.fft.irfft(spec, out.shape[-1], axis=-1)`
do, with the same normalisation, so the results are the same to the bit (tests/bargein/test_echo_fft.py
compares them). Where that module is missing or changed (older or newer numpy) they fall back to the public
functions, copying into `out`: slower, the same numbers.

Pure: arrays in, arrays out.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from app.bargein.echo_config import C128, F64

_Ufunc = Callable[..., Any]
_AXES = [(-1,), (), (-1,)]  # the transform's axis in, the norm factor (a scalar), the axis out

_rfft_even: _Ufunc | None
_rfft_odd: _Ufunc | None
_irfft: _Ufunc | None
try:  # numpy >= 2.0; what numpy.fft's rfft / irfft call after their argument handling
    _pfu = importlib.import_module("numpy.fft._pocketfft_umath")  # private: untyped, hence not `from ... import`
    _rfft_even, _rfft_odd, _irfft = _pfu.rfft_n_even, _pfu.rfft_n_odd, _pfu.irfft
except (ImportError, AttributeError):  # pragma: no cover - only on a numpy without the module
    _rfft_even = _rfft_odd = _irfft = None



def _agrees() -> bool:
    """Does the private ufunc still give what numpy.fft gives (a numpy that changed it falls back)?"""
    x = np.cos(np.arange(2 * 9.0)).reshape(2, 9)
    try:
        assert _rfft_even is not None and _rfft_odd is not None and _irfft is not None
        even = _rfft_even(x, 1, axes=_AXES, out=np.empty((2, 6), np.complex128))
        odd = _rfft_odd(x, 1, axes=_AXES, out=np.empty((2, 6), np.complex128))
        back = _irfft(even, 1.0 / 10, axes=_AXES, out=np.empty((2, 10)))
    except Exception:  # any failure of a private interface means: do not use it
        return False
    return bool(
        np.array_equal(even, np.fft.rfft(x, 10, axis=-1))
        and np.array_equal(odd, np.fft.rfft(x, 11, axis=-1))
        and np.array_equal(back, np.fft.irfft(even, 10, axis=-1))
    )


if _irfft is not None and not _agrees():  # pragma: no cover - only on a numpy whose ufunc changed
    _rfft_even = _rfft_odd = _irfft = None

FAST = _irfft is not None  # False: every call goes through numpy.fft (tests check both give the same)


def rfft(x: F64, n: int, out: C128) -> C128:
    """`np.fft.rfft(x, n, axis=-1)` into `out` (shape x.shape[:-1] + (n // 2 + 1,)); `x` zero-padded to `n`."""
    ufunc = _rfft_even if n % 2 == 0 else _rfft_odd
    if ufunc is None:
        out[...] = np.fft.rfft(x, n, axis=-1)
        return out
    result: C128 = ufunc(x, 1, axes=_AXES, out=out)
    return result


def irfft(spec: C128, out: F64) -> F64:
    """`np.fft.irfft(spec, out.shape[-1], axis=-1)` into `out`."""
    n = out.shape[-1]
    if _irfft is None:
        out[...] = np.fft.irfft(spec, n, axis=-1)
        return out
    # numpy's own factor: 1 / n in float64 (its "backward" norm on the inverse)
    result: F64 = _irfft(spec, 1.0 / n, axes=_AXES, out=out)
    return result
