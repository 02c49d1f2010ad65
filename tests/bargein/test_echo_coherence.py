"""Before the echo filter converges, the caller leg's coherence with the agent's audio tells a caller from echo."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from app.bargein.echo import ECHO_REJECT_SHARE, FRAME, SAMPLE_RATE, EchoConfig, EchoGuard
from app.bargein.echo_coherence import EchoCoherence
from app.offline.echo_path import echo_of
from tests.bargein.test_echo import _speechlike  # the same stand-in voice

F64 = npt.NDArray[np.float64]
LEAD = 4000  # the agent starts at 0.5 s
AT = LEAD + int(0.3 * SAMPLE_RATE)  # the caller starts 0.3 s into the reply: the filter has not converged
WITHIN = 35  # frames (0.7 s) from the caller's start


def _run(seed: int, caller: bool, coherence: bool = True) -> tuple[F64, F64]:
    """(echo share of the 100 ms ending at each frame, the caller leg's level there in dB): the agent's reply over
    the simulated phone path at -6 dB ERL (clipping, room, 20 ms of drift), and a caller as loud as the echo."""
    agent = _speechlike(4.0, seed=seed)
    full = np.concatenate([np.zeros(LEAD, np.int16), agent, np.zeros(SAMPLE_RATE // 2, np.int16)])
    mic = echo_of(full, erl_db=-6, delay_ms=150, drift_ms=20, seed=seed + 1).astype(np.float64)
    if caller:
        voice = _speechlike(2.0, seed=seed + 2, rate_hz=4.0).astype(np.float64)
        voice *= np.sqrt(np.mean(mic[AT : AT + len(voice)] ** 2) / np.mean(voice**2))  # at the echo's level
        mic[AT : AT + len(voice)] += voice
    pcm = np.clip(mic, -32768, 32767).astype(np.int16)
    guard = EchoGuard(EchoConfig(coherence=coherence))
    shares, levels, sent = [], [], 0
    for k in range(len(pcm) // FRAME):
        t = (k + 1) * FRAME / SAMPLE_RATE
        while sent < len(agent) and (LEAD + sent) / SAMPLE_RATE <= t + 0.2:
            guard.played(agent[sent : sent + 800], (LEAD + sent) / SAMPLE_RATE)
            sent += 800
        guard.process(pcm[k * FRAME : (k + 1) * FRAME], t)
        shares.append(guard.echo_share(t - 0.1, t))
        span = mic[max(0, (k - 4) * FRAME) : (k + 1) * FRAME]
        levels.append(10 * np.log10(np.mean(span**2) + 1e-9))
    return np.array(shares), np.array(levels)


@pytest.mark.parametrize("seed", [11, 21])
def test_a_caller_at_the_echos_level_early_in_a_reply_reads_as_the_caller(seed: int) -> None:
    first = AT // FRAME
    shares, _ = _run(seed, caller=True)
    assert shares[first : first + WITHIN].min() <= ECHO_REJECT_SHARE, shares[first : first + WITHIN]
    # Without the coherence, levels alone decide, and this caller is echo all along (issue 12).
    before, _ = _run(seed, caller=True, coherence=False)
    assert before[first : first + WITHIN].min() > ECHO_REJECT_SHARE


@pytest.mark.parametrize("seed", [11, 21])
def test_echo_alone_never_reads_as_a_caller(seed: int) -> None:
    shares, levels = _run(seed, caller=False)
    loud = levels > levels.max() - 12.0  # spans loud enough to raise a speech candidate
    assert loud.sum() > 50
    assert shares[loud].min() > ECHO_REJECT_SHARE, np.round(shares[loud], 2)


def _windows(x: F64, y: F64, k: int, lags: int) -> tuple[F64, F64]:
    """The reference ending at frame k (the delay 0 here) and the caller leg's last two frames."""
    end = (k + 1) * FRAME
    return x[end - (lags + 1) * FRAME : end], y[end - 2 * FRAME : end]


def test_coherence_is_high_for_a_filtered_copy_and_low_for_another_voice() -> None:
    x = _speechlike(2.0, seed=3).astype(np.float64)
    echo = np.convolve(x, [0.0, 0.6, 0.3, -0.2, 0.1], mode="full")[: len(x)]  # a short echo path
    other = _speechlike(2.0, seed=4).astype(np.float64)
    late = np.concatenate([np.zeros(FRAME + 40), echo])[: len(x)]  # the echo 1.25 frames later than the lock
    for y, lo, hi in ((echo, 0.8, 1.0), (late, 0.6, 1.0), (other, 0.0, 0.4)):
        coherence = EchoCoherence(alpha=0.25, lags=3)
        got = [coherence.update(*_windows(x, y, k, 3)) for k in range(4, len(x) // FRAME)]
        assert lo <= float(np.median(got[10:])) <= hi, (lo, hi, np.median(got[10:]))
    coherence = EchoCoherence(alpha=0.25, lags=1)  # the lag alone: the late echo is not found
    got = [coherence.update(*_windows(x, late, k, 1)) for k in range(4, len(x) // FRAME)]
    assert float(np.median(got[10:])) < 0.6
