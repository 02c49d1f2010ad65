"""The prosodic end-of-turn model (app/call/prosody.py): the pitch tracker, the cues, and the decision, on
synthetic voices whose pitch and loudness we set, through the phone band and mu-law as a call delivers them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.audio import pcm16_to_ulaw, ulaw_to_pcm16
from app.call import prosody
from app.call.end_of_turn import EndOfTurn
from app.call.prosody import FEATURES, ProsodyModel, features, track
from app.offline.eot_eval import phone_band

RATE = 8000


def voice(f0: np.ndarray, level: np.ndarray | float = 0.2) -> np.ndarray:
    """A buzz with 19 harmonics at the given per-sample pitch: a vowel without formants."""
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    return np.asarray(level * sum(np.sin(k * phase) / k for k in range(1, 20)))


def on_the_line(x: np.ndarray) -> np.ndarray:
    """Silence around it, the 300-3400 Hz band, mu-law: what the session hears at a 250 ms pause."""
    quiet = np.zeros(2400, dtype=np.int16)
    pcm = np.concatenate([quiet, (x * 32767).astype(np.int16), quiet])
    return ulaw_to_pcm16(pcm16_to_ulaw(phone_band(pcm)))


def ending(kind: str) -> np.ndarray:
    """1.5 s at a steady 140 Hz, then 0.5 s that falls to 85 Hz and fades 18 dB (a statement's end), or rises
    to 190 Hz at full level (a continuation rise)."""
    head, tail = int(1.5 * RATE), int(0.5 * RATE)
    if kind == "fall":
        f0 = np.concatenate([np.full(head, 140.0), np.linspace(140.0, 85.0, tail)])
        level = np.concatenate([np.full(head, 0.2), 0.2 * 10 ** (np.linspace(0, -18, tail) / 20)])
    else:
        f0 = np.concatenate([np.full(head, 140.0), np.linspace(140.0, 190.0, tail)])
        level = np.full(head + tail, 0.2)
    fade = np.minimum(1.0, np.minimum(np.arange(head + tail), np.arange(head + tail)[::-1]) / 160.0)
    return voice(f0, level * fade)


@pytest.mark.parametrize("hz", [90.0, 120.0, 210.0, 320.0])
def test_the_tracker_finds_the_pitch_of_a_voice_whose_fundamental_the_phone_band_removed(hz: float) -> None:
    tr = track(on_the_line(voice(np.full(RATE, hz))))
    found = tr.f0[np.isfinite(tr.f0)]
    assert len(found) > 60  # most of the second is voiced
    assert abs(float(np.median(found)) - hz) / hz < 0.02, np.median(found)
    assert float(np.mean(np.abs(found - hz) / hz < 0.05)) > 0.95  # no octave slips (the period's multiples)


def test_noise_and_silence_are_not_voiced_and_give_no_verdict() -> None:
    noise = np.random.default_rng(0).normal(0.0, 0.1, 2 * RATE)
    tr = track(on_the_line(noise))
    assert not np.isfinite(tr.f0).any()
    assert features(on_the_line(noise)) is None
    assert np.isnan(ProsodyModel().p_complete(np.zeros(RATE, dtype=np.int16)))
    assert np.isnan(ProsodyModel().p_complete(np.zeros(10, dtype=np.int16)))  # shorter than a frame


def test_the_cues_of_a_falling_fading_end_and_of_a_rising_one() -> None:
    fall = dict(zip(FEATURES, features(on_the_line(ending("fall"))), strict=True))  # type: ignore[arg-type]
    rise = dict(zip(FEATURES, features(on_the_line(ending("rise"))), strict=True))  # type: ignore[arg-type]
    # 85 Hz against a median of 140: over half an octave down; 190 Hz: up.
    assert fall["final_f0"] < -0.3 and rise["final_f0"] > 0.2, (fall, rise)
    assert fall["f0_slope"] < -0.5 and rise["f0_slope"] > 0.5, (fall, rise)
    assert fall["f0_fall"] > 0.3 > rise["f0_fall"], (fall, rise)
    assert fall["final_level"] < -4.0 < rise["final_level"], (fall, rise)
    assert fall["level_slope"] < rise["level_slope"], (fall, rise)


def test_the_fitted_model_calls_the_falling_end_complete_and_not_the_rising_one() -> None:
    model = ProsodyModel()
    complete_at, incomplete_below = model.thresholds
    p_fall = model.p_complete(on_the_line(ending("fall")))
    p_rise = model.p_complete(on_the_line(ending("rise")))
    assert p_fall >= complete_at, (p_fall, complete_at)  # complete: a strict turn ends at the pause
    assert p_rise < incomplete_below, (p_rise, incomplete_below)  # incomplete: held to the ceiling


def test_the_fitted_numbers_are_there_and_their_thresholds_ordered() -> None:
    fitted = prosody.FITTED
    assert fitted.weights.shape == fitted.mean.shape == fitted.scale.shape == (len(FEATURES),)
    assert np.abs(fitted.weights).sum() > 0  # the fit wrote them (all zero is the unfitted template)
    assert (fitted.scale > 0).all()
    assert 0.0 <= prosody.INCOMPLETE_BELOW <= prosody.COMPLETE_AT <= 1.0


def test_asked_through_end_of_turn_no_voice_is_no_verdict_and_a_voice_is_one() -> None:
    eot = EndOfTurn(ProsodyModel())
    try:
        assert eot.thresholds == (prosody.COMPLETE_AT, prosody.INCOMPLETE_BELOW)
        silent = asyncio.run(eot.ask(np.zeros(RATE, dtype=np.int16)))
        assert silent.p_complete is None and silent.error is None
        voiced = asyncio.run(eot.ask(on_the_line(ending("fall"))))
        assert voiced.p_complete is not None and 0.0 < voiced.p_complete < 1.0
        assert voiced.infer_ms > 0.0
    finally:
        eot.close()
