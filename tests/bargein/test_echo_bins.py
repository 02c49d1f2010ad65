"""EchoGuard's echo fraction bin by bin (`EchoConfig.per_bin`, off by default): what it gains and what it costs."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.bargein.echo import ECHO_REJECT_SHARE, FRAME, SAMPLE_RATE, EchoConfig, EchoGuard
from app.offline.echo_path import echo_of, with_caller

I16 = npt.NDArray[np.int16]
LEAD = 4000  # the agent starts at 0.5 s


def _voice(seconds: float, seed: int, f0: float) -> I16:
    """A voiced stand-in: a harmonic series on `f0` (pitch wobbling a little) under a syllable envelope."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    pitch = f0 * (1 + 0.03 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 16))
    envelope = np.maximum(0.0, np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6))) ** 2
    out: I16 = np.clip(x * envelope * 3000, -32768, 32767).astype(np.int16)
    return out


def _db(x: I16) -> float:
    y = x.astype(np.float64)
    return float(10 * np.log10(np.mean(y * y) + 1e-9))


def _shares(
    config: EchoConfig, mic: I16, echo: I16, caller: I16, agent: I16, at: int
) -> tuple[list[float], list[float]]:
    """Echo shares of 160 ms spans: of echo alone, and of spans where the caller is at least as loud as the echo."""
    guard = EchoGuard(config)
    sent, echo_shares, caller_shares = 0, [], []
    for k in range(len(mic) // FRAME):
        t = (k + 1) * FRAME / SAMPLE_RATE
        while sent < len(agent) and (LEAD + sent) / SAMPLE_RATE <= t + 0.2:
            guard.played(agent[sent : sent + 800], (LEAD + sent) / SAMPLE_RATE)
            sent += 800
        guard.process(mic[k * FRAME : (k + 1) * FRAME], t)
        end = round(t * SAMPLE_RATE)
        if k % 8 == 0 and 3.0 <= t < at / SAMPLE_RATE - 0.2:
            echo_shares.append(guard.echo_share(t - 0.16, t))
        c0 = end - 1280 - at
        if k % 4 == 0 and 0 <= c0 and c0 + 1280 <= len(caller):
            if _db(caller[c0 : c0 + 1280]) >= _db(echo[end - 1280 : end]):
                caller_shares.append(guard.echo_share(t - 0.16, t))
    return echo_shares, caller_shares


def test_a_caller_as_loud_as_the_echo_reads_as_the_caller_bin_by_bin() -> None:
    # The agent at 120 Hz, the caller at 210 Hz, at the echo's own level (-6 dB ERL: the agent's level - 6 dB).
    # Broadband, the caller is inside the echo's energy margins and its spans read as echo (rejected); bin by
    # bin, its harmonics that sit where the echo leaves the spectrum empty count as the caller.
    agent = _voice(8.0, seed=1, f0=120.0)
    caller = _voice(2.0, seed=2, f0=210.0)
    full = np.concatenate([np.zeros(LEAD, np.int16), agent, np.zeros(SAMPLE_RATE // 2, np.int16)])
    echo = echo_of(full, erl_db=-6, delay_ms=150, drift_ms=20, seed=3)
    at = 6 * SAMPLE_RATE
    mixed = with_caller(echo, caller, at, caller_gain_db=-6.0)
    # One filter (`two_path` off), as measured when per_bin was tried: with the two-path default this fast-drifting
    # path (20 ms) leaves the harmonic caller at 0.00 both ways (measured), so the comparison would show nothing.
    echo_bins, caller_bins = _shares(EchoConfig(per_bin=True, two_path=False), mixed, echo, caller, agent, at)
    echo_broad, caller_broad = _shares(EchoConfig(per_bin=False, two_path=False), mixed, echo, caller, agent, at)
    passed_bins = np.mean(np.array(caller_bins) <= ECHO_REJECT_SHARE)
    passed_broad = np.mean(np.array(caller_broad) <= ECHO_REJECT_SHARE)
    print(f"\ncaller spans passed: bin by bin {passed_bins:.2f}, broadband {passed_broad:.2f}")
    assert len(caller_bins) >= 6
    # Measured: 0.23 against 0.08 here (3 dB louder caller: 0.77 against 0.69; 6 dB: both 1.00). A gain, not a
    # cure: at the echo's own level most of the caller's spans still read as echo.
    assert passed_bins >= passed_broad + 0.1
    # The price, why it is off: echo-only spans read as echo less often (measured 0.72 against 1.00).
    assert len(echo_bins) >= 6 and np.mean(np.array(echo_broad) > ECHO_REJECT_SHARE) == 1.0
    assert np.mean(np.array(echo_bins) > ECHO_REJECT_SHARE) >= 0.6
