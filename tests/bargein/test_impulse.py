"""The impulse second stage: keeps speech candidates, drops coughs and noise bursts, decides as soon as its window
is complete, stays finite on odd input, and is cheap."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from app.bargein import impulse
from app.bargein.silero import WINDOW, SileroModel
from app.bargein.vad import VadConfig
from app.offline import fit_impulse
from app.offline.corpus import as_received, read_manifest, white_noise

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
    # CPU time of this thread, the best of five rounds: a busy machine (the suite's other workers, a benchmark)
    # must not make a stage that costs ~100 us look like one that costs a millisecond.
    calls = 100
    rounds = []
    for _ in range(5):
        started = time.thread_time()
        for _ in range(calls):
            impulse.speech_probability(pcm, probs)
        rounds.append((time.thread_time() - started) / calls * 1e6)
    per_call_us = min(rounds)
    print(f"\nimpulse stage: {per_call_us:.0f} us per candidate ({impulse.WINDOW_MS:.0f} ms of audio)")
    assert per_call_us < 1000


def _decaying_burst(seed: int, decay_s: float, band_hz: tuple[float, float]) -> np.ndarray:
    """A noise burst (2 ms attack, exponential decay) band-limited to band_hz, peaking at -12 dBFS, through the
    caller leg's mu-law: a cough, knock or slam as the stage sees it, from its first sample."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES) / impulse.SAMPLE_RATE
    freqs = np.fft.rfftfreq(SAMPLES, 1 / impulse.SAMPLE_RATE)
    spectrum = np.fft.rfft(rng.standard_normal(SAMPLES))
    spectrum[(freqs < band_hz[0]) | (freqs > band_hz[1])] = 0
    y = np.fft.irfft(spectrum, SAMPLES) * (1 - np.exp(-t / 0.002)) * np.exp(-t / decay_s)
    y = y / np.abs(y).max() * 32768 * 10 ** (-12 / 20)
    return as_received(np.clip(np.round(y), -32768, 32767).astype(np.int16))


@pytest.mark.parametrize("decay_s", [0.005, 0.01, 0.03, 0.08])
@pytest.mark.parametrize("seed", [1, 2])
def test_rejects_a_broadband_decaying_burst(seed: int, decay_s: float) -> None:
    sure = [0.95] * WINDOWS  # the first stage fired: Silero was fooled
    assert not impulse.is_speech(_decaying_burst(seed, decay_s, (100.0, 3800.0)), sure)


def test_rejects_most_decaying_bursts_of_any_band() -> None:
    # Narrow-band bursts are closer to a voiced onset; the shipped 160 ms fit rejects about 2/3 of them all
    # (a 64 ms fit rejected 2 in 96: this is the test that says a shorter window is not good enough).
    bands = [(100.0, 3800.0), (2000.0, 3800.0), (300.0, 1200.0), (1000.0, 3000.0)]
    verdicts = [
        impulse.is_speech(_decaying_burst(seed, decay_s, band), [0.95] * WINDOWS)
        for seed in range(3)
        for decay_s in (0.005, 0.01, 0.03, 0.08)
        for band in bands
    ]
    assert sum(not v for v in verdicts) >= 0.6 * len(verdicts)


def test_fitted_arrays_are_consistent() -> None:
    m = impulse.FITTED
    n = len(m.feature)
    assert n > 0
    assert m.split.shape == m.left.shape == m.right.shape == (n,)
    assert m.feature.dtype == np.int64 and m.feature.min() >= 0 and m.feature.max() < len(impulse.FEATURES)
    assert all(np.all(np.isfinite(a)) for a in (m.split, m.left, m.right))
    # the Silero-trajectory features are fitted only as the floor, never as stumps
    assert not any(impulse.FEATURES[j].startswith("prob_") for j in m.feature)
    assert m.window_ms == impulse.WINDOW_MS and impulse.WINDOW_MS in fit_impulse.WINDOWS_MS
    assert impulse.WINDOW_MS == fit_impulse.SHIPPED_WINDOW_MS
    assert 0.0 < m.threshold < 1.0 and 0.5 < m.prob_floor < 1.0
    assert impulse.window_samples() == SAMPLES and impulse.window_probabilities() == WINDOWS


def test_candidate_decides_once_its_window_is_complete(played: list[fit_impulse.Played]) -> None:
    guard = round(VadConfig().min_speech_ms / 32)
    for p in [q for q in played if q.clip.kind == "speech"]:
        (s,) = fit_impulse.find_starts(p.probs, p.gate, p.web, VadConfig(), None)
        at_started = (s + guard) * WINDOW  # what is buffered from the speech start when SpeechStarted fires
        cand = impulse.Candidate()
        cand.add_audio(p.audio[s * WINDOW : at_started])
        cand.add_probabilities(p.probs[s : s + guard].tolist())
        verdicts = [cand.verdict]
        pos, w = at_started, s + guard
        while pos < (s * WINDOW + SAMPLES):
            cand.add_audio(p.audio[pos : pos + 160])  # 20 ms frames
            pos += 160
            if pos >= (w + 1) * WINDOW:
                cand.add_probabilities([float(p.probs[w])])
                w += 1
            verdicts.append(cand.verdict)
        expected = impulse.is_speech(p.audio[s * WINDOW :], p.probs[s:].tolist())
        assert verdicts[-1] is expected, p.clip.name
        assert all(v is None for v in verdicts[:-1]), p.clip.name  # not a frame early


def test_speech_start_sample_is_where_callvad_started(played: list[fit_impulse.Played]) -> None:
    for p in played:
        replica = fit_impulse.find_starts(p.probs, p.gate, p.web, VadConfig(), None)
        live = asyncio.run(fit_impulse.live_start(p.audio, p.probs, VadConfig()))
        assert live == (replica[0] if replica else None), p.clip.name
    assert impulse.speech_start_sample(10 * 160, 64.0) == 6 * 256 - 2 * 256  # 1600 fed: windows end at 1536


def _plain_features(pcm16: np.ndarray, probs: list[float]) -> np.ndarray:
    """The features as plain numpy writes them (np.mean, np.fft, one call per quantity): what impulse.features
    computed before it was made cheaper for the look before the clear. The fitted numbers were fitted on these."""
    x = np.asarray(pcm16, dtype=np.float64).reshape(-1) / 32768.0
    if len(x) < impulse.FRAME:
        x = np.concatenate([x, np.zeros(impulse.FRAME - len(x))])
    n = 1 + (len(x) - impulse.FRAME) // impulse.HOP
    fr = np.stack([x[i * impulse.HOP : i * impulse.HOP + impulse.FRAME] for i in range(n)])
    fr = fr - fr.mean(axis=1, keepdims=True)
    energy = np.einsum("ij,ij->i", fr, fr) / impulse.FRAME
    level = 10 * np.log10(energy + 1e-10)
    ac = np.fft.irfft(np.abs(np.fft.rfft(fr, impulse.NFFT)) ** 2, impulse.NFFT)[:, : impulse.MAX_LAG + 1]
    seg = ac[:, impulse.MIN_LAG : impulse.MAX_LAG + 1] / (ac[:, 0] + 1e-10)[:, None]
    harm = np.where(energy > 1e-8, np.clip(seg.max(axis=1), 0.0, 1.0), 0.0)
    lag = impulse.MIN_LAG + seg.argmax(axis=1)
    voiced = harm > impulse.VOICED
    pitch_jump = float(np.median(np.abs(np.diff(np.log2(lag[voiced]))))) if voiced.sum() >= 2 else 1.0
    freqs = np.fft.rfftfreq(impulse.NFFT, 1 / impulse.SAMPLE_RATE)
    spec = np.abs(np.fft.rfft(fr * np.hanning(impulse.FRAME), impulse.NFFT)) ** 2 + 1e-10
    band = spec[:, (freqs >= 100) & (freqs <= 3800)]
    flatness = np.exp(np.log(band).mean(axis=1)) / band.mean(axis=1)
    total = spec.sum(axis=1)
    norm = spec / total[:, None]
    flux = float(np.abs(np.diff(norm, axis=0)).sum(axis=1).mean()) if len(norm) > 1 else 0.0
    peak = int(level.argmax())
    p = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1) if probs else np.zeros(1), 0.0, 1.0)
    p[np.isnan(p)] = 0.0
    out = np.array([
        harm.mean(), voiced.mean(), pitch_jump, np.mean(flatness), np.mean((spec @ freqs) / total / 4000),
        np.mean(spec[:, (freqs >= 80) & (freqs < 1000)].sum(axis=1) / total), flux, level[peak] - level[0],
        level[peak] - level[-1], peak / max(1, len(level) - 1), level.std(), p.mean(), p.min(), p[-1], p.std(),
    ])
    return np.where(np.isfinite(out), out, 0.0)


def test_features_are_the_plain_numpy_numbers_to_the_bit() -> None:
    rng = np.random.default_rng(7)
    for length in (100, 256, 300, 512, 700, 1280, 4800):
        t = np.arange(length) / 8000
        for pcm in (
            rng.standard_normal(length) * rng.uniform(10, 20000),
            np.sin(2 * np.pi * rng.uniform(80, 400) * t) * rng.uniform(100, 30000),
            np.zeros(length),
            np.full(length, 500.0),
            (np.sin(2 * np.pi * 150 * t) * 8000 + rng.standard_normal(length) * 300) * np.exp(-t * 5),
        ):
            pcm16 = np.clip(pcm, -32768, 32767).astype(np.int16)
            probs = list(rng.uniform(0, 1, rng.integers(0, 6)))
            assert np.array_equal(impulse.features(pcm16, probs), _plain_features(pcm16, probs)), length
