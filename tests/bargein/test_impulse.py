"""The impulse second stage: keeps speech candidates, drops coughs, stays finite on odd input, and is cheap."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from app.bargein import impulse
from app.bargein.silero import WINDOW, SileroModel
from app.bargein.vad import VadConfig
from app.offline import fit_impulse
from app.offline.corpus import read_manifest, white_noise

CORPUS = Path(__file__).resolve().parents[1] / "corpus"  # the clips that ship with the repository
SAMPLES = int(impulse.WINDOW_MS * impulse.SAMPLE_RATE / 1000)
WINDOWS = round(impulse.WINDOW_MS / 32)


@pytest.fixture(scope="module")
def played() -> list[fit_impulse.Played]:
    """tests/corpus clips played as calls (lead-in, line floor, mu-law) and scored by Silero."""
    return fit_impulse.play(read_manifest(CORPUS), CORPUS, [fit_impulse.Variant()], SileroModel())


def _verdicts(p: fit_impulse.Played, starts: list[int]) -> list[bool]:
    return [
        impulse.is_speech(p.audio[s * WINDOW : s * WINDOW + SAMPLES], p.probs[s : s + WINDOWS].tolist()) for s in starts
    ]


def test_keeps_the_first_candidate_of_every_speech_clip(played: list[fit_impulse.Played]) -> None:
    speech = [p for p in played if p.clip.kind == "speech"]
    assert speech
    for p in speech:
        starts = fit_impulse.find_starts(p.probs, p.gate, p.web, VadConfig(), None)
        assert starts, f"{p.clip.name}: the first stage never fired"
        assert _verdicts(p, starts) == [True], p.clip.name


def test_drops_most_cough_and_sneeze_events(played: list[fit_impulse.Played]) -> None:
    # The live first stage does not fire on the repository's cough clip, so look at what a looser one
    # (0.5 for 32 ms) and every sharp rise in level offer: the events a noisier line would push through.
    loose = replace(VadConfig(), silero_threshold=0.5, min_speech_ms=32.0)
    impulsive = [p for p in played if p.clip.category in ("cough", "sneeze")]
    assert impulsive
    for p in impulsive:
        starts = sorted(
            set(fit_impulse.find_starts(p.probs, p.gate, p.web, loose, WINDOWS))
            | set(fit_impulse.level_onsets(p.audio, p.gate, WINDOWS))
        )
        kept = _verdicts(p, starts)
        assert starts
        assert sum(kept) <= len(kept) // 3, f"{p.clip.name}: kept {sum(kept)} of {len(kept)} events"


@pytest.mark.parametrize(
    "name, pcm",
    [
        ("silence", np.zeros(SAMPLES, np.int16)),
        ("dc", np.full(SAMPLES, 12000, np.int16)),
        ("clipped", np.where(np.arange(SAMPLES) % 40 < 20, 32767, -32768).astype(np.int16)),
        ("full-scale noise", np.clip(white_noise(1.0, 0.0), -32768, 32767).astype(np.int16)[:SAMPLES]),
        ("short", np.array([100, -100, 5], np.int16)),
        ("empty", np.zeros(0, np.int16)),
    ],
)
@pytest.mark.parametrize("probs", [[], [0.95, 0.97, 0.99, 0.98, 0.96], [float("nan"), 2.0, -1.0]])
def test_features_are_finite(name: str, pcm: np.ndarray, probs: list[float]) -> None:
    f = impulse.features(pcm, probs)
    assert f.shape == (len(impulse.FEATURES),)
    assert np.all(np.isfinite(f)), name
    p = impulse.speech_probability(pcm, probs)
    assert 0.0 <= p <= 1.0


def test_silence_and_dc_are_not_speech() -> None:
    sure = [0.99] * WINDOWS  # even if Silero were fooled
    assert not impulse.is_speech(np.zeros(SAMPLES, np.int16), sure)
    assert not impulse.is_speech(np.full(SAMPLES, 12000, np.int16), sure)


def test_a_candidate_costs_well_under_a_millisecond() -> None:
    rng = np.random.default_rng(3)
    pcm = (rng.standard_normal(SAMPLES) * 3000).astype(np.int16)
    probs = [0.95] * WINDOWS
    for _ in range(20):  # warm-up
        impulse.speech_probability(pcm, probs)
    calls = 500
    started = time.perf_counter()
    for _ in range(calls):
        impulse.speech_probability(pcm, probs)
    per_call_us = (time.perf_counter() - started) / calls * 1e6
    print(f"\nimpulse stage: {per_call_us:.0f} us per candidate ({impulse.WINDOW_MS:.0f} ms of audio)")
    assert per_call_us < 1000
