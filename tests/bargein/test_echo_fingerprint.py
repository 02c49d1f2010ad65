"""The echo guard's decisions, pinned: a fixed-seed fingerprint of its outputs on synthetic echo calls.

Why: the guard's per-frame cost is cut by rewriting how it calls numpy (buffers written in place, fewer and
larger calls, block energies kept between frames), and none of that may change what it decides. Each case
below runs one call (agent audio through the simulated phone echo path, a caller talking over it from 2.5 s,
frames arriving a little late and bunched as live) and sums what the guard said frame by frame: the echo
fraction, the cleaned frame's energy, the echo share the candidate check would read, the delays it locked,
double talk and trust. `EXPECTED` was recorded from the guard before the rewrite (tree f5b2eb0) and the
rewritten guard gives the same numbers to the bit; floats are compared to a relative 1e-9, so a change that
only moves float rounding can pass, a changed decision cannot.

The cases cover each config path the rewrite touched (one filter, two, the per-bin fraction, coherence on
every frame, the frame clock off) and agent audio that reaches the guard late (`ahead` < 0: written into the
past, under a span the level bound has already read) or is cut by a clear after part of it played: the
cases where kept block energies would go stale if the ring's change tracking missed a write.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from app.bargein.echo import FRAME, SAMPLE_RATE, EchoConfig, EchoGuard, GccBudget
from app.offline.echo_path import echo_of, with_caller

I16 = npt.NDArray[np.int16]
LEAD_S = 0.5  # the agent's first chunk plays from here
CHUNK = 1280  # 160 ms chunks, as the outbox sends them
SECONDS = 8.0
CALLER_AT_S = 2.5


def _voice(seconds: float, seed: int, pitch_hz: float, rate_hz: float) -> I16:
    """Voiced syllables (a gliding harmonic series) with noisy onsets and pauses: a stand-in for speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = pitch_hz * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(h * phase) / h for h in range(1, 12))
    envelope = np.maximum(0.0, np.sin(2 * np.pi * rate_hz * t + rng.uniform(0, 6))) ** 2
    envelope *= (np.sin(2 * np.pi * 0.25 * t) > -0.6)  # a pause every few seconds
    noise = np.convolve(rng.standard_normal(n), np.ones(3) / 3, mode="same")
    x = (voiced + 0.3 * noise) * envelope * 5000
    out: I16 = np.clip(x, -32768, 32767).astype(np.int16)
    return out


def _arrivals(frames: int, seed: int) -> npt.NDArray[np.float64]:
    """Frame arrival times: a little late, and now and then bunched after a stall of the loop."""
    rng = np.random.default_rng(seed)
    out = np.empty(frames)
    stall, last = 0.0, 0.0
    for k in range(frames):
        t = (k + 1) * FRAME / SAMPLE_RATE
        if rng.random() < 0.02:
            stall = t + rng.uniform(0.02, 0.06)
        last = out[k] = max(last, max(t, stall) + rng.exponential(0.002))
    return out


@dataclass(frozen=True)
class Case:
    config: EchoConfig
    delay_ms: float = 150.0
    erl_db: float = -12.0
    ahead: float = 0.4  # chunks reach the guard this long before they play (negative: after they started)
    cut_every: int = 0  # every this many frames a clear cuts the agent's audio ...
    cut_back: float = -0.05  # ... at this long before the frame's arrival (negative: after it)
    echo: bool = True


CASES = {
    "default": Case(EchoConfig()),
    "long_delay_low_erl": Case(EchoConfig(), delay_ms=320.0, erl_db=-18.0),
    "loud_echo_cuts": Case(EchoConfig(), delay_ms=60.0, erl_db=-6.0, cut_every=90),
    "one_filter": Case(EchoConfig(two_path=False)),
    "no_follow": Case(EchoConfig(follow=False)),
    "per_bin": Case(EchoConfig(per_bin=True)),
    "coherence_always": Case(EchoConfig(coherence_always=True)),
    "arrival_clock": Case(EchoConfig(frame_clock=False)),
    "late_chunks_cut_heard_audio": Case(EchoConfig(), ahead=-0.13, cut_every=37, cut_back=0.3),
    "late_chunks_short_cuts": Case(EchoConfig(), delay_ms=250.0, ahead=-0.03, cut_every=37, cut_back=0.15),
    "handset": Case(EchoConfig(), echo=False),
    "eight_partitions": Case(EchoConfig(partitions=8, lead_ms=30.0), delay_ms=200.0),
    "two_partitions_constrained_always": Case(EchoConfig(partitions=2, constrain_every=1)),
    "narrow_delay_range": Case(EchoConfig(min_delay_ms=100.0, max_delay_ms=260.0, window_s=0.3)),
}


def fingerprint(case: Case, seed: int = 3) -> dict[str, float]:
    """Run one call through a guard and sum what it said, frame by frame."""
    n = int(SECONDS * SAMPLE_RATE)
    lead = int(LEAD_S * SAMPLE_RATE)
    agent = _voice(SECONDS - LEAD_S, seed, 120.0, 3.0)
    timeline = np.concatenate([np.zeros(lead, np.int16), agent])[:n]
    echo = echo_of(timeline, erl_db=case.erl_db, delay_ms=case.delay_ms, drift_ms=20.0, seed=seed)
    if not case.echo:
        echo = np.zeros(n, np.int16)
    caller = _voice(SECONDS - CALLER_AT_S, seed + 10, 210.0, 4.0) // 4  # near the echo's level
    mic = with_caller(echo, caller, int(CALLER_AT_S * SAMPLE_RATE))
    chunks = [((lead + j) / SAMPLE_RATE, agent[j : j + CHUNK]) for j in range(0, len(agent), CHUNK)]
    guard = EchoGuard(case.config, GccBudget())
    frames = n // FRAME
    times = _arrivals(frames, seed)
    sent = 0
    fp = dict.fromkeys(("fraction", "fraction2", "out_energy", "share", "locked", "double_talk", "trusted",
                        "delay_sum", "delay_changes"), 0.0)
    last_delay: int | None = None
    for k in range(frames):
        t = float(times[k])
        if case.cut_every and k % case.cut_every == case.cut_every - 1:
            guard.stop_at(t - case.cut_back)
            while sent < len(chunks) and chunks[sent][0] <= t + case.ahead:
                sent += 1  # what the clear cut is never sent
        while sent < len(chunks) and chunks[sent][0] <= t + case.ahead:
            guard.played(chunks[sent][1], chunks[sent][0])
            sent += 1
        out, fraction = guard.process(mic[k * FRAME : (k + 1) * FRAME], t)
        o = out.astype(np.float64)
        fp["fraction"] += fraction
        fp["fraction2"] += fraction * fraction
        fp["out_energy"] += float(np.dot(o, o))
        fp["share"] += guard.echo_share(t - 0.1, t)
        fp["double_talk"] += guard.double_talk
        fp["trusted"] += guard.trusted
        if guard.delay is not None:
            fp["locked"] += 1
            fp["delay_sum"] += guard.delay
        fp["delay_changes"] += guard.delay != last_delay
        last_delay = guard.delay
    return fp


EXPECTED: dict[str, dict[str, float]] = {  # recorded from the guard at f5b2eb0 (before the rewrite)
    "arrival_clock": {
        "fraction": 184.3163526165073, "fraction2": 143.55800173405981, "out_energy": 7082768001.0,
        "share": 193.62683394458733, "locked": 361.0, "double_talk": 129.0, "trusted": 353.0, "delay_sum": 494209.0,
        "delay_changes": 1.0,
    },
    "coherence_always": {
        "fraction": 246.8121550785089, "fraction2": 240.28916971389157, "out_energy": 6601354001.0,
        "share": 252.76668479640625, "locked": 364.0, "double_talk": 109.0, "trusted": 364.0, "delay_sum": 492856.0,
        "delay_changes": 1.0,
    },
    "default": {
        "fraction": 253.62620558204182, "fraction2": 251.1464058857514, "out_energy": 6601354001.0,
        "share": 258.3563499219933, "locked": 364.0, "double_talk": 109.0, "trusted": 364.0, "delay_sum": 492856.0,
        "delay_changes": 1.0,
    },
    "eight_partitions": {
        "fraction": 267.0618581461493, "fraction2": 264.3977995155606, "out_energy": 5033894082.0,
        "share": 264.5750837001579, "locked": 361.0, "double_talk": 56.0, "trusted": 361.0, "delay_sum": 633241.0,
        "delay_changes": 2.0,
    },
    "handset": {
        "fraction": 0.0, "fraction2": 0.0, "out_energy": 8507988352.0, "share": 0.0, "locked": 0.0,
        "double_talk": 0.0, "trusted": 0.0, "delay_sum": 0.0, "delay_changes": 0.0,
    },
    "late_chunks_cut_heard_audio": {
        "fraction": 215.07696725776418, "fraction2": 209.7574387550874, "out_energy": 9465553920.0,
        "share": 220.95253202821294, "locked": 350.0, "double_talk": 96.0, "trusted": 350.0, "delay_sum": 382332.0,
        "delay_changes": 2.0,
    },
    "late_chunks_short_cuts": {
        "fraction": 211.17656786776837, "fraction2": 207.70069304817912, "out_energy": 9784643650.0,
        "share": 208.77331879710468, "locked": 361.0, "double_talk": 77.0, "trusted": 361.0, "delay_sum": 776872.0,
        "delay_changes": 1.0,
    },
    "long_delay_low_erl": {
        "fraction": 238.98174244539126, "fraction2": 237.42279587716152, "out_energy": 6101842703.0,
        "share": 254.08294357330843, "locked": 358.0, "double_talk": 88.0, "trusted": 358.0, "delay_sum": 971254.0,
        "delay_changes": 1.0,
    },
    "loud_echo_cuts": {
        "fraction": 228.37018855395416, "fraction2": 225.86098671806653, "out_energy": 14605066767.0,
        "share": 229.1126170739268, "locked": 364.0, "double_talk": 66.0, "trusted": 364.0, "delay_sum": 230776.0,
        "delay_changes": 1.0,
    },
    "narrow_delay_range": {
        "fraction": 239.1300952642217, "fraction2": 236.35804581872063, "out_energy": 6601354001.0,
        "share": 239.9483010298561, "locked": 364.0, "double_talk": 109.0, "trusted": 364.0, "delay_sum": 492856.0,
        "delay_changes": 1.0,
    },
    "no_follow": {
        "fraction": 251.2418775951079, "fraction2": 249.12861624153635, "out_energy": 7612064127.0,
        "share": 257.49446270980917, "locked": 364.0, "double_talk": 125.0, "trusted": 364.0, "delay_sum": 492856.0,
        "delay_changes": 1.0,
    },
    "one_filter": {
        "fraction": 250.94935668973181, "fraction2": 248.48441445793136, "out_energy": 6514364764.0,
        "share": 256.73214903473905, "locked": 364.0, "double_talk": 109.0, "trusted": 364.0, "delay_sum": 492856.0,
        "delay_changes": 1.0,
    },
    "per_bin": {
        "fraction": 239.641742137809, "fraction2": 229.4726983016061, "out_energy": 8312750531.0,
        "share": 242.80689895835164, "locked": 364.0, "double_talk": 109.0, "trusted": 364.0, "delay_sum": 492856.0,
        "delay_changes": 1.0,
    },
    "two_partitions_constrained_always": {
        "fraction": 246.4007417332539, "fraction2": 243.12197289864966, "out_energy": 7299493886.0,
        "share": 254.96274692644232, "locked": 364.0, "double_talk": 121.0, "trusted": 364.0, "delay_sum": 492856.0,
        "delay_changes": 1.0,
    },
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_guard_decides_as_it_did_before_the_rewrite(name: str) -> None:
    got = fingerprint(CASES[name])
    want = EXPECTED[name]
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (name, key, got[key], value)


def test_the_cases_exercise_what_they_are_for() -> None:
    """Each case must reach the paths it pins: an echo locks, the double talk shows, a handset stays dormant."""
    for name, want in EXPECTED.items():
        if name == "handset":
            assert want["locked"] == 0 and want["fraction"] == 0.0
        else:
            assert want["locked"] > 200 and want["double_talk"] > 0 and 0 < want["fraction"] < want["locked"]
