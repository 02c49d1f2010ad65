"""The end-of-turn model's front (app/call/end_of_turn.py): features from phone audio, the one-at-a-time gate,
and the real Smart Turn weights when the pipecat-ai wheel is installed (skipped, with the reason, when not)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from app.call.end_of_turn import (
    FRAMES,
    MODEL_RATE,
    N_MELS,
    EndOfTurn,
    ModelUnavailable,
    SmartTurn,
    features,
    log_mel,
    mel_matrix,
    upsample_phone,
    weights_path,
)


def tone(hz: float, seconds: float, rate: int, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return level * np.sin(2 * np.pi * hz * t)


def test_upsampling_keeps_the_phone_band_and_adds_nothing_above_it() -> None:
    pcm = (tone(1000.0, 0.5, 8000) * 32767).astype(np.int16)
    up = upsample_phone(pcm)
    assert len(up) == 2 * len(pcm) and up.dtype == np.float32
    expected = tone(1000.0, 0.5, MODEL_RATE)
    assert np.abs(up[100:-100] - expected[100:-100]).max() < 0.01  # the same tone at 16 kHz
    spectrum = np.abs(np.fft.rfft(up)) ** 2
    freqs = np.fft.rfftfreq(len(up), 1 / MODEL_RATE)
    assert spectrum[freqs > 4100].sum() < 1e-9 * spectrum.sum()  # linear interpolation would mirror it at 7 kHz


def test_mel_bands_are_ordered_triangles_of_equal_area_per_hz() -> None:
    mel = mel_matrix()
    assert mel.shape == (N_MELS, 201) and (mel >= 0).all()
    peaks = mel.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all() and peaks[-1] > peaks[0]
    # Slaney normalisation: each band's weights sum to about 2 / (its width in Hz) per bin of 40 Hz.
    assert mel[40].sum() == pytest.approx(mel[60].sum(), rel=0.2)


def test_features_put_a_short_turn_at_the_end_of_the_8_s_window() -> None:
    audio = tone(440.0, 1.0, MODEL_RATE).astype(np.float32)
    feats = log_mel(audio)
    assert feats.shape == (N_MELS, FRAMES) and feats.dtype == np.float32
    band = int(np.argmax(mel_matrix()[:, round(440 / 40)]))
    assert feats[band, -50] > feats[band, 100] + 1.0  # the tone is in the last second, zeros before it
    assert np.ptp(feats[:, 50:600]) < 1e-6  # the left padding: one constant value
    assert features(np.zeros(800, dtype=np.int16)).shape == (1, N_MELS, FRAMES)  # silence does not fail


class SlowModel:
    """Stands in for the ONNX session: takes a while, remembers how many ran at once."""

    def __init__(self, p: float = 0.8, seconds: float = 0.05) -> None:
        self.p, self.seconds = p, seconds
        self.running = self.most = 0
        self._lock = threading.Lock()

    def p_complete(self, pcm: np.ndarray) -> float:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        if len(pcm) == 0:
            raise RuntimeError("no audio")
        return self.p


def test_one_inference_at_a_time_and_past_the_bound_no_verdict() -> None:
    model = SlowModel()
    gate = EndOfTurn(model, max_pending=3)  # type: ignore[arg-type]

    async def many() -> list[float | None]:
        pcm = np.ones(8000, dtype=np.int16)
        verdicts = await asyncio.gather(*(gate.ask(pcm) for _ in range(5)))
        return [v.p_complete for v in verdicts]

    try:
        answers = asyncio.run(many())
    finally:
        gate.close()
    assert answers.count(0.8) == 3 and answers.count(None) == 2  # two refused at once, not queued
    assert model.most == 1
    assert (gate.asked, gate.refused) == (3, 2)


def test_a_failing_model_is_a_verdict_without_a_probability() -> None:
    gate = EndOfTurn(SlowModel(seconds=0.0))  # type: ignore[arg-type]
    try:
        verdict = asyncio.run(gate.ask(np.zeros(0, dtype=np.int16)))
    finally:
        gate.close()
    assert verdict.p_complete is None and verdict.error == "RuntimeError"


def _model() -> SmartTurn:
    try:
        weights_path()
    except ModelUnavailable as exc:
        pytest.skip(str(exc))
    return SmartTurn()


def test_the_shipped_weights_load_and_answer_a_probability() -> None:
    model = _model()
    rng = np.random.default_rng(1)
    pcm = (rng.normal(0, 0.05, 16000) * 32767).astype(np.int16)
    p = model.p_complete(pcm)
    assert 0.0 <= p <= 1.0
    assert model.p_complete(pcm) == pytest.approx(p, abs=1e-6)  # no state between calls
