"""CallVad: the layered speech detector and its four-state hysteresis, on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from app.bargein.silero import SileroBatcher, SileroModel, SileroStream
from app.bargein.vad import (
    FRAME,
    TRANSITIONS,
    CallVad,
    Observation,
    SpeechStarted,
    SpeechStopped,
    VadConfig,
    VadEvent,
    VadState,
)
from app.offline import corpus
from app.offline.evaluate import LEAD_IN_S, call_audio, run_calls

FRAME_S = FRAME / 8000
needs_corpus = pytest.mark.skipif(
    not (corpus.corpus_root() / "manifest.csv").exists(), reason="barge-in corpus not found (BARGEIN_CORPUS)"
)


@pytest.fixture(scope="module")
def model() -> SileroModel:
    return SileroModel()


class ScriptedScorer:
    """Stands in for Silero: returns scripted probabilities, one per window, then zeros."""

    def __init__(self, probs: Sequence[float]) -> None:
        self.probs = list(probs)
        self.windows = 0

    async def infer(self, stream: SileroStream, window: np.ndarray) -> float:
        prob = self.probs[self.windows] if self.windows < len(self.probs) else 0.0
        self.windows += 1
        return prob

    def defer(self, stream: SileroStream, window: np.ndarray) -> None:
        self.windows += 1


class RecordingScorer:
    """Wraps the real batcher and keeps every probability it returned."""

    def __init__(self, batcher: SileroBatcher) -> None:
        self.batcher = batcher
        self.probs: list[float] = []

    async def infer(self, stream: SileroStream, window: np.ndarray) -> float:
        prob = await self.batcher.infer(stream, window)
        self.probs.append(prob)
        return prob

    def defer(self, stream: SileroStream, window: np.ndarray) -> None:
        self.batcher.defer(stream, window)
        self.probs.append(0.0)


def feed(
    vad: CallVad, pcm: np.ndarray, start: float = 0.0, sizes: Sequence[int] = (FRAME,)
) -> list[VadEvent]:
    """Feed pcm in chunks cycling through `sizes`; each chunk arrives when its last sample would."""

    async def run() -> list[VadEvent]:
        events: list[VadEvent] = []
        pos, i = 0, 0
        while pos < len(pcm):
            size = sizes[i % len(sizes)]
            i += 1
            chunk = pcm[pos : pos + size]
            pos += len(chunk)
            events += await vad.feed(chunk, start + pos / 8000)
        return events

    return asyncio.run(run())


def loud(seconds: float) -> np.ndarray:
    return corpus.white_noise(seconds, -30.0, seed=5)


# --- hysteresis on scripted probabilities ----------------------------------------------------------


def test_two_sure_windows_start_speech_at_the_completing_frame() -> None:
    vad = CallVad(VadConfig(silero_threshold=0.9, min_speech_ms=64), ScriptedScorer([0.95, 0.97]))
    events = feed(vad, loud(0.5))
    assert len(events) == 1
    started = events[0]
    assert isinstance(started, SpeechStarted)
    # window 2 ends at sample 512, inside the 20 ms frame that ends at sample 640 (t = 0.08 s)
    assert started.at == pytest.approx(0.08)
    assert started.sustained_ms == pytest.approx(64)
    assert started.confidence == pytest.approx(0.96)
    assert -33 < started.peak_dbfs < -27
    assert vad.speaking and vad.last_probability == 0.0


@pytest.mark.parametrize(
    "probs",
    [
        [0.95],  # one window is a click, not speech
        [0.95, 0.6, 0.95],  # a dip under the threshold restarts the count
        [0.95, 0.1, 0.95],
        [0.85, 0.85, 0.85, 0.85],  # never sure enough
    ],
)
def test_short_or_unsure_bursts_do_not_start(probs: list[float]) -> None:
    vad = CallVad(VadConfig(silero_threshold=0.9, min_speech_ms=64), ScriptedScorer(probs))
    assert feed(vad, loud(1.0)) == []
    assert vad.state is VadState.QUIET


def test_energy_gate_vetoes_a_confident_model() -> None:
    vad = CallVad(VadConfig(energy_gate_dbfs=-50), ScriptedScorer([1.0] * 40))
    assert feed(vad, corpus.white_noise(1.0, -60.0)) == []


def test_turn_ends_after_the_silence_and_weak_windows_hold_it() -> None:
    cfg = VadConfig(silero_threshold=0.9, silero_release=0.4, min_speech_ms=64, turn_end_silence_ms=700)
    # 10 sure windows, 10 weak ones (soft word endings keep the turn), then nothing
    vad = CallVad(cfg, ScriptedScorer([0.99] * 10 + [0.5] * 10))
    events = feed(vad, loud(2.5))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    stopped = events[1]
    assert isinstance(stopped, SpeechStopped)
    last_active = 20 * 256 / 8000  # end of the 20th window, 0.64 s
    assert stopped.at - last_active == pytest.approx(0.7, abs=0.021)
    assert stopped.speech_ms == pytest.approx(640, abs=25)
    assert not vad.speaking and vad.state is VadState.QUIET


def test_speech_resuming_before_turn_end_is_one_turn() -> None:
    vad = CallVad(VadConfig(), ScriptedScorer([0.99] * 5 + [0.0] * 10 + [0.99] * 5))
    events = feed(vad, loud(2.0))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


def test_tick_ends_the_turn_when_frames_stop() -> None:
    vad = CallVad(VadConfig(turn_end_silence_ms=700), ScriptedScorer([0.99] * 10))
    events = feed(vad, loud(10 * 256 / 8000))
    assert [type(e) for e in events] == [SpeechStarted]
    last = 10 * 256 / 8000
    assert vad.tick(last + 0.5) == []
    assert vad.speaking
    stopped = vad.tick(last + 0.7)
    assert len(stopped) == 1 and isinstance(stopped[0], SpeechStopped)
    assert stopped[0].at == pytest.approx(last + 0.7)
    assert vad.tick(last + 5.0) == []
    assert not vad.speaking


def test_tick_while_quiet_or_fed_does_nothing() -> None:
    vad = CallVad(VadConfig(), ScriptedScorer([0.99] * 50))
    assert vad.tick(100.0) == []
    feed(vad, loud(1.0))
    assert vad.tick(1.0) == []  # frames are still arriving: the turn is not over


def test_every_reachable_transition_is_in_the_table() -> None:
    onset_only = {Observation.SUSTAINED}
    for state in VadState:
        for obs in Observation:
            reachable = not (
                (obs in onset_only and state in (VadState.SPEAKING, VadState.STOPPING))
                or (obs is Observation.EXPIRED and state is VadState.QUIET)
            )
            assert ((state, obs) in TRANSITIONS) == reachable, (state, obs)


def test_config_is_validated_and_read_from_settings() -> None:
    with pytest.raises(ValueError):
        VadConfig(silero_threshold=0.5, silero_release=0.6)
    with pytest.raises(ValueError):
        VadConfig(webrtc_mode=4)
    from app.settings import Settings

    cfg = VadConfig.from_settings(Settings(vad_silero_threshold=0.75, bargein_min_speech_ms=128))
    assert cfg.silero_threshold == 0.75 and cfg.min_speech_ms == 128


# --- the real model ---------------------------------------------------------------------------------


def test_silence_and_line_floor_give_no_events(model: SileroModel) -> None:
    batcher = SileroBatcher(model)
    audio = [np.zeros(3 * 8000, np.int16), corpus.as_received(corpus.white_noise(3.0, -70.0))]
    vads = [CallVad(VadConfig(), batcher) for _ in audio]
    assert asyncio.run(run_calls(audio, vads)) == [[], []]


def test_hiss_and_hum_at_minus_45_dbfs_and_below_never_start(model: SileroModel) -> None:
    generators = {
        "white": lambda level: corpus.white_noise(4.0, level, seed=11),
        "pink": lambda level: corpus.pink_noise(4.0, level, seed=12),
        "hum50": lambda level: corpus.mains_hum(4.0, level, mains_hz=50),
        "hum60": lambda level: corpus.mains_hum(4.0, level, mains_hz=60),
    }
    cases = [(name, level) for name in generators for level in (-45.0, -55.0)]
    audio = [corpus.as_received(generators[name](level)) for name, level in cases]
    batcher = SileroBatcher(model)
    vads = [CallVad(VadConfig(), batcher) for _ in cases]
    events = asyncio.run(run_calls(audio, vads))
    assert {case: evs for case, evs in zip(cases, events, strict=True) if evs} == {}
    assert batcher.stats.max_batch == len(cases)  # all calls shared each run


@needs_corpus
def test_steady_noises_never_start(model: SileroModel) -> None:
    manifest = corpus.read_manifest()
    clips = [next(c for c in manifest if c.category == cat) for cat in corpus.STEADY_CATEGORIES]
    batcher = SileroBatcher(model)
    vads = [CallVad(VadConfig(), batcher) for _ in clips]
    events = asyncio.run(run_calls([call_audio(c) for c in clips], vads))
    assert {c.name: evs for c, evs in zip(clips, events, strict=True) if evs} == {}


@needs_corpus
def test_speech_starts_within_300_ms_of_onset_then_stops_after_the_silence(model: SileroModel) -> None:
    clip = next(c for c in corpus.read_manifest() if c.path == "speech/read_04_libri3112F.wav")
    assert clip.speech_onset_s is not None
    audio = np.concatenate([call_audio(clip), np.zeros(int(1.5 * 8000), np.int16)])
    vad = CallVad(VadConfig(), SileroBatcher(model))
    events = feed(vad, audio)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    started, stopped = events
    onset = LEAD_IN_S + clip.speech_onset_s
    assert 0.0 <= started.at - onset < 0.3
    assert isinstance(stopped, SpeechStopped)
    # The clip ends 0.2 s into a pause; the turn ends ~0.7 s after the last speech window.
    clip_end = LEAD_IN_S + clip.duration_s
    assert clip_end + 0.3 < stopped.at < clip_end + 0.9
    assert stopped.speech_ms > 0.8 * (clip.duration_s - clip.speech_onset_s - 0.2) * 1000


@pytest.mark.parametrize("use_webrtc", [False, True])
def test_odd_frame_lengths_give_the_same_decisions(model: SileroModel, use_webrtc: bool) -> None:
    pcm = corpus.as_received(corpus.white_noise(0.3, -70.0))
    t = np.arange(int(1.2 * 8000)) / 8000
    voiced = (6000 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.int16)
    if (corpus.corpus_root() / "manifest.csv").exists():
        voiced = corpus.load_clip("speech/read_01_libri3982F.wav")[:9600]
    audio = np.concatenate([pcm, corpus.as_received(voiced), np.zeros(8000, np.int16)])
    cfg = VadConfig(use_webrtc=use_webrtc)

    reference = RecordingScorer(SileroBatcher(model))
    ref_events = feed(CallVad(cfg, reference), audio)
    odd = RecordingScorer(SileroBatcher(model))
    odd_events = feed(CallVad(cfg, odd), audio, sizes=(1, 7, 0, 333, 160, 1000, 59, 256, 2))

    np.testing.assert_allclose(odd.probs, reference.probs, atol=1e-6)
    assert len(odd.probs) == len(audio) // 256
    assert [type(e) for e in odd_events] == [type(e) for e in ref_events]
    for a, b in zip(odd_events, ref_events, strict=True):
        assert a.at == pytest.approx(b.at, abs=0.13)  # chunks arrive at different times, decisions don't move


def test_feed_is_not_reentrant() -> None:
    class SlowScorer:
        def __init__(self) -> None:
            self.release = asyncio.Event()

        async def infer(self, stream: SileroStream, window: np.ndarray) -> float:
            await self.release.wait()
            return 0.0

        def defer(self, stream: SileroStream, window: np.ndarray) -> None:
            pass

    async def run() -> None:
        scorer = SlowScorer()
        vad = CallVad(VadConfig(), scorer)
        first = asyncio.ensure_future(vad.feed(loud(0.04), 0.04))  # completes a window: awaits the scorer
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await vad.feed(loud(0.02), 0.06)
        scorer.release.set()
        assert await first == []
        assert await vad.feed(loud(0.02), 0.06) == []

    asyncio.run(run())


@needs_corpus
def test_evaluator_runs_clips_and_measures_cost(model: SileroModel) -> None:
    # a smoke test of the offline evaluator the benchmark imports (the full corpus runs as a script)
    from app.offline.evaluate import Condition, evaluate, measure_cost

    manifest = corpus.read_manifest()
    clips = [c for c in manifest if c.kind == "speech"][:2] + [c for c in manifest if c.category == "rain"][
        :2
    ]
    report = evaluate(VadConfig(), clips, model, concurrency=4, condition=Condition(phone_band=True))
    assert report.detection_rate == 1.0 and report.false_stop_rate == 0.0
    assert report.batch_mean > 1.0
    assert "rain" in report.format()
    cost = measure_cost(3, seconds=0.2, model=model, clips=clips)
    assert cost.mean_batch == pytest.approx(3.0) and cost.wall_us > 0
