"""The first stage's slow onset path (CallVad + onset.py): a soft onset that hovers under the sure threshold
starts speech after `onset_windows` windows, only through the cheap layers, behind its optional gate; and on
real clips it never makes an onset later nor fires on noise that the sure path leaves alone."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.bargein import onset
from app.bargein.silero import SileroModel
from app.bargein.vad import FRAME, SAMPLE_RATE, CallVad, SpeechStarted, VadConfig, VadEvent, VadState
from app.offline import corpus, fit_impulse
from tests.bargein.test_vad import ScriptedScorer  # Silero's stand-in: scripted probabilities

CORPUS = Path(__file__).resolve().parents[1] / "corpus"  # the clips that ship with the repository
SURE_ONLY = VadConfig(onset_threshold=0.0)


def feed(vad: CallVad, pcm: np.ndarray) -> list[VadEvent]:
    async def run() -> list[VadEvent]:
        events: list[VadEvent] = []
        for k in range(len(pcm) // FRAME):
            events += await vad.feed(pcm[k * FRAME : (k + 1) * FRAME], (k + 1) * FRAME / SAMPLE_RATE)
        return events

    return asyncio.run(run())


def loud(seconds: float) -> np.ndarray:
    return corpus.white_noise(seconds, -30.0, seed=5)


def config(**kw: Any) -> VadConfig:
    return replace(VadConfig(use_webrtc=False, silero_threshold=0.9, min_speech_ms=64), **kw)


# --- the path, on scripted probabilities ----------------------------------------------------------------


def test_three_soft_windows_start_speech_from_the_first_of_them() -> None:
    vad = CallVad(config(onset_threshold=0.8, onset_windows=3), ScriptedScorer([0.1, 0.85, 0.82, 0.88, 0.6]))
    events = feed(vad, loud(0.5))
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    assert len(starts) == 1
    started = starts[0]
    # window 4 (0-based 3) ends at sample 1024, inside the frame that ends at 1120 (t = 0.14 s)
    assert started.at == pytest.approx(0.14)
    assert started.sustained_ms == pytest.approx(96)
    assert started.confidence == pytest.approx((0.85 + 0.82 + 0.88) / 3)
    assert vad.speaking
    audio, probs = vad.candidate()  # the speech starts at the run's first window
    assert probs[:3] == pytest.approx([0.85, 0.82, 0.88])


def test_the_sure_path_alone_does_not_start_on_the_same_windows() -> None:
    vad = CallVad(config(onset_threshold=0.0), ScriptedScorer([0.1, 0.85, 0.82, 0.88, 0.85, 0.85]))
    assert feed(vad, loud(0.5)) == []
    assert vad.state is VadState.QUIET


@pytest.mark.parametrize(
    "probs",
    [
        [0.85, 0.85],  # too short
        [0.85, 0.85, 0.5, 0.85, 0.85],  # a dip restarts the count
        [0.75, 0.75, 0.75, 0.75],  # under the slow threshold
    ],
)
def test_short_broken_or_unsure_runs_do_not_start(probs: list[float]) -> None:
    vad = CallVad(config(onset_threshold=0.8, onset_windows=3), ScriptedScorer(probs))
    assert feed(vad, loud(0.5)) == []


def test_the_sure_path_still_wins_at_64_ms() -> None:
    vad = CallVad(config(onset_threshold=0.8, onset_windows=3), ScriptedScorer([0.85, 0.95, 0.96]))
    (started,) = [e for e in feed(vad, loud(0.5)) if isinstance(e, SpeechStarted)]
    assert started.sustained_ms == pytest.approx(64)


def test_the_energy_gate_vetoes_the_slow_path_too() -> None:
    vad = CallVad(config(onset_threshold=0.8, energy_gate_dbfs=-50), ScriptedScorer([0.85] * 20))
    assert feed(vad, corpus.white_noise(0.7, -60.0)) == []


def test_the_gate_is_asked_when_it_is_on() -> None:
    probs = [0.85] * 3 + [0.0] * 5
    never = CallVad(config(onset_threshold=0.8, onset_gate=1.0), ScriptedScorer(probs))  # no run can pass 1.0
    assert feed(never, loud(0.3)) == []
    always = CallVad(config(onset_threshold=0.8, onset_gate=1e-12), ScriptedScorer(probs))
    assert [type(e) for e in feed(always, loud(0.3))][:1] == [SpeechStarted]


def test_settings_reach_the_config() -> None:
    from app.settings import Settings

    cfg = VadConfig.from_settings(
        Settings(_env_file=None, vad_onset_threshold=0.75, vad_onset_windows=4, vad_onset_gate=0.5,
                 vad_evidence_threshold=0.7)
    )
    assert (cfg.onset_threshold, cfg.onset_windows, cfg.onset_gate, cfg.evidence_threshold) == (0.75, 4, 0.5, 0.7)
    assert VadConfig.from_settings(Settings(_env_file=None)).onset_threshold == 0.0  # shipped off
    with pytest.raises(ValueError):
        VadConfig(onset_windows=1)
    with pytest.raises(ValueError):
        VadConfig(evidence_threshold=1.0)


# --- the gate's features ------------------------------------------------------------------------------


def test_features_are_finite_on_odd_input() -> None:
    for pcm in (
        np.zeros(768, np.int16),
        np.full(768, 32767, np.int16),
        np.zeros(10, np.int16),
        (np.sign(np.sin(np.arange(768))) * 32767).astype(np.int16),
    ):
        f = onset.features(pcm, [0.9, float("nan")])
        assert f.shape == (len(onset.FEATURES),)
        assert np.isfinite(f).all()
        assert 0.0 <= onset.speech_probability(pcm, [0.9, 0.9, 0.9]) <= 1.0


def test_median_pitch_follows_a_voice_and_is_zero_without_one() -> None:
    t = np.arange(768) / SAMPLE_RATE
    for f0 in (110.0, 220.0):
        voice = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
        pcm = (voice / np.abs(voice).max() * 8000).astype(np.int16)
        assert onset.median_pitch_hz(pcm) == pytest.approx(f0, rel=0.05)
    assert onset.median_pitch_hz(np.zeros(768, np.int16)) == 0.0
    assert onset.median_pitch_hz(corpus.white_noise(0.096, -20.0, seed=3)) == 0.0


# --- real clips -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def played() -> list[fit_impulse.Played]:
    """tests/corpus clips played as calls (lead-in, line floor, mu-law) and scored by Silero."""
    return fit_impulse.play(
        corpus.read_manifest(CORPUS), CORPUS, [fit_impulse.Variant(), fit_impulse.Variant(True)], SileroModel()
    )


def _first_start_end(p: fit_impulse.Played, cfg: VadConfig) -> int | None:
    """The window at which CallVad decides its first SpeechStarted (the replica, checked against CallVad
    in test_impulse), or None."""
    starts = fit_impulse.find_starts(p.probs, p.gate, p.web, cfg, None)
    if not starts:
        return None
    s = starts[0]
    sure = p.probs[s : s + 2]
    return s + (1 if len(sure) == 2 and (sure >= cfg.silero_threshold).all() else cfg.onset_windows - 1)


def test_no_speech_onset_is_later_and_no_quiet_noise_fires(played: list[fit_impulse.Played]) -> None:
    slow = VadConfig(onset_threshold=0.8)
    for p in played:
        before, after = _first_start_end(p, SURE_ONLY), _first_start_end(p, slow)
        if p.clip.kind == "speech":
            assert after is not None, p.clip.name
            assert before is None or after <= before, p.clip.name
        elif before is None:
            assert after is None, f"{p.clip.name} ({p.variant.label()}): the slow path fired on noise"


def test_the_replica_agrees_with_callvad_on_the_slow_path(played: list[fit_impulse.Played]) -> None:
    # soft onsets, where the slow path decides: a 0.7 x 3 path makes it decide often on these clips
    cfg = VadConfig(onset_threshold=0.7)
    checked = 0
    for p in played:
        starts = fit_impulse.find_starts(p.probs, p.gate, p.web, cfg, None)
        replica = starts[0] if starts else None
        live = asyncio.run(fit_impulse.live_start(p.audio, p.probs, cfg))
        assert replica == live, p.clip.name
        checked += replica is not None
    assert checked >= 10
