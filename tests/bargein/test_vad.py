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
    Emit,
    Observation,
    SpeechPaused,
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
                or (obs is Observation.PAUSE and state in (VadState.QUIET, VadState.STARTING))
                or (obs is Observation.PENDING and state is not VadState.STARTING)
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
    # Hiss and hum never pass the floor's SNR once it has settled: their windows need no probability, so
    # nearly all of them are only queued for the model, never awaited. (Counted against the windows fed:
    # `stats.windows` counts the windows the model ran, deferred ones included once their lazy flush came,
    # which on a slow machine it does before the calls end.)
    fed = sum(len(a) // 256 for a in audio)  # 32 ms windows at 8 kHz
    assert batcher.stats.deferred > 0.9 * fed, (batcher.stats, fed)
    batcher.drain_deferred()  # ... and the model still sees every one of them, all calls sharing each run
    assert batcher.stats.max_batch == len(cases)


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


def _onset_ms_after_zeros(model: SileroModel, windows_of_zeros: int, hiss: bool) -> list[float]:
    """Each test speech clip as a call after that many 32 ms windows of digital silence (every sample 0):
    SpeechStarted's time after the clip's onset, in ms."""
    clips = [c for c in corpus.read_manifest() if c.kind == "speech"]
    lead = windows_of_zeros * 256  # whole windows: the clips meet Silero's windows at the same phase each time
    audio = [np.concatenate([np.zeros(lead, np.int16), corpus.as_received(corpus.load_clip(c))]) for c in clips]
    batcher = SileroBatcher(model)
    config = VadConfig(hiss_for_digital_silence=hiss)
    events = asyncio.run(run_calls(audio, [CallVad(config, batcher) for _ in clips]))
    out = []
    for clip, evs in zip(clips, events, strict=True):
        starts = [e for e in evs if isinstance(e, SpeechStarted)]
        assert starts and clip.speech_onset_s is not None, clip.path
        out.append((starts[0].at - lead / 8000 - clip.speech_onset_s) * 1000)
    return out


@needs_corpus
def test_heard_as_hiss_long_digital_silence_does_not_make_the_next_speech_slow_to_start(model: SileroModel) -> None:
    # Fed zeros, Silero's state drifts and the next speech needs longer to convince it (pool: p95 232 ms after
    # 0.3 s of zeros, 297 ms after 10 s); with VAD_HISS_FOR_DIGITAL_SILENCE it hears the quiet line's hiss.
    short = _onset_ms_after_zeros(model, 8, hiss=True)  # 0.26 s
    long = _onset_ms_after_zeros(model, 312, hiss=True)  # 10 s
    assert np.mean(long) <= np.mean(short) + 20.0, (short, long)
    # off (the default), the drift is there: the setting changes what Silero hears
    drifted = _onset_ms_after_zeros(model, 312, hiss=False)
    assert np.mean(drifted) > np.mean(long) + 20.0, (long, drifted)


# --- the adaptive noise floor ---------------------------------------------------------------------


def line_then(level_dbfs: float, seconds: float, line_dbfs: float = -70.0, line_s: float = 1.5) -> np.ndarray:
    """A quiet line, then steady hiss at `level_dbfs` (what a scripted model calls speech or not)."""
    return np.concatenate(
        [corpus.white_noise(line_s, line_dbfs, seed=1), corpus.white_noise(seconds, level_dbfs, seed=2)]
    )


def windows(seconds: float) -> int:
    return round(seconds * 8000) // 256


def test_a_quiet_talker_on_a_quiet_line_starts() -> None:
    # -40 dBFS on a -70 dBFS line: 30 dB above the floor, 15 dB above the absolute gate
    vad = CallVad(VadConfig(snr_db=10), ScriptedScorer([0.0] * windows(1.5) + [0.99] * 10))
    events = feed(vad, line_then(-40.0, 0.5))
    assert [type(e) for e in events] == [SpeechStarted]
    assert -71 < vad.floor_dbfs < -69


@pytest.mark.parametrize(("snr_db", "starts"), [(10.0, False), (0.0, True)])
def test_a_confident_window_barely_above_the_line_does_not_start(snr_db: float, starts: bool) -> None:
    # Steady -35 dBFS hiss from the call's start for 2 s, then the model turns confident on the same hiss:
    # the floor knows the line by then, and the window is not 10 dB above it. snr_db=0 is the old detector.
    probs = [0.0] * windows(2.0) + [0.99] * 20
    vad = CallVad(VadConfig(snr_db=snr_db, use_webrtc=False), ScriptedScorer(probs))
    events = feed(vad, corpus.white_noise(3.0, -35.0, seed=3))
    assert [type(e) for e in events] == ([SpeechStarted] if starts else [])
    assert -37 < vad.floor_dbfs < -35


def test_after_hiss_steps_up_only_what_stands_out_of_it_starts() -> None:
    # -60 dBFS line, hiss steps to -35 at 1.0 s; the model is scripted confident from 2.5 s on. The hiss
    # alone is vetoed (the floor followed the step); speech-level audio 20 dB over it still starts.
    quiet, step = corpus.white_noise(1.0, -60.0, seed=1), corpus.white_noise(2.0, -35.0, seed=2)
    probs = [0.0] * windows(3.0) + [0.99] * 30
    hiss_only = np.concatenate([quiet, step, corpus.white_noise(1.0, -35.0, seed=4)])
    assert feed(CallVad(VadConfig(snr_db=10, use_webrtc=False), ScriptedScorer(probs)), hiss_only) == []
    speech = np.concatenate([quiet, step, corpus.white_noise(1.0, -15.0, seed=4)])
    events = feed(CallVad(VadConfig(snr_db=10, use_webrtc=False), ScriptedScorer(probs)), speech)
    assert [type(e) for e in events] == [SpeechStarted]


def test_the_floor_does_not_cut_a_turn_in_noise() -> None:
    # Once speaking, confident windows that fail the floor's SNR still hold the turn (as WEAK).
    probs = [0.99] * 60
    vad = CallVad(VadConfig(snr_db=10, use_webrtc=False), ScriptedScorer(probs))
    events = feed(vad, corpus.white_noise(60 * 256 / 8000, -30.0, seed=3))
    assert [type(e) for e in events] == [SpeechStarted]  # started in the first window, held for 1.9 s
    assert vad.speaking


def test_hiss_stepping_up_mid_call_never_starts(model: SileroModel) -> None:
    from app.offline.evaluate import hiss_step

    audio = [corpus.as_received(hiss_step(5 * 8000, kind, seed=7)) for kind in ("white", "pink")]
    vads = [CallVad(VadConfig(), SileroBatcher(model)) for _ in audio]
    assert asyncio.run(run_calls(audio, vads)) == [[], []]
    assert all(-37 < v.floor_dbfs < -34 for v in vads)


# --- hooks for the decision layer ---------------------------------------------------------------------


def test_recent_returns_the_audio_as_fed_and_the_window_probabilities() -> None:
    probs = [i / 100 for i in range(100)]
    # No floor and no webrtcvad: every window of this steady ramp may start speech, so every one is scored.
    vad = CallVad(VadConfig(recent_ms=500, snr_db=0.0, use_webrtc=False), ScriptedScorer(probs))
    pcm = (np.arange(2 * 8000) % 20000).astype(np.int16) + 1000  # loud enough for every window to be scored
    feed(vad, pcm, sizes=(160, 77, 333))
    now = len(pcm) / 8000
    audio, p = vad.recent(now - 0.1)
    np.testing.assert_array_equal(audio, pcm[-800:])
    n_windows = len(pcm) // 256
    first = (len(pcm) - 800) // 256  # the windows overlapping the last 100 ms
    assert p == pytest.approx(probs[first:n_windows])
    # asked for more than the ring holds: the ring (500 ms, rounded up to a whole 160 ms) and no more
    audio, p = vad.recent(0.0)
    assert len(audio) == 5120 and np.array_equal(audio, pcm[-5120:])
    assert len(p) <= 5120 // 256 + 1 and p[-1] == pytest.approx(probs[n_windows - 1])
    assert len(vad.recent(now)[0]) == 0


class CountingScorer(ScriptedScorer):
    """ScriptedScorer that counts the windows awaited and the windows only queued for the model."""

    def __init__(self, probs: Sequence[float]) -> None:
        super().__init__(probs)
        self.awaited = 0
        self.deferred = 0

    async def infer(self, stream: SileroStream, window: np.ndarray) -> float:
        self.awaited += 1
        return await super().infer(stream, window)

    def defer(self, stream: SileroStream, window: np.ndarray) -> None:
        self.deferred += 1
        super().defer(stream, window)


def test_steady_noise_on_a_quiet_line_is_not_awaited_and_a_step_above_it_still_starts() -> None:
    # Silence while the floor learns the line (its first second), then every window Silero would score as
    # sure speech: from there on only the cheap layers hold this line QUIET.
    scorer = CountingScorer([0.0] * 40 + [0.99] * 1000)
    vad = CallVad(VadConfig(use_webrtc=False), scorer)
    steady = corpus.white_noise(3.0, -40.0, seed=3)
    assert feed(vad, steady) == []
    settled = scorer.awaited
    # Once the floor holds the noise (one floor window), its windows cannot start speech: none is awaited.
    assert scorer.deferred >= (3.0 - 1.3) * 8000 // 256
    assert settled <= (1.3 * 8000) // 256
    _, probs = vad.recent(2.9)
    assert probs and all(p != p for p in probs)  # not scored: NaN to a second look, never "silence"
    # 20 dB over the floor: the cheap layers agree, the model is asked, speech starts as it always did.
    events = feed(vad, corpus.white_noise(0.3, -20.0, seed=4), start=3.0)
    assert [type(e) for e in events] == [SpeechStarted]
    assert scorer.awaited > settled
    # Speaking: every window is scored (WEAK windows hold the turn open), even level with the new floor.
    before = scorer.awaited
    feed(vad, corpus.white_noise(0.32, -20.0, seed=5), start=3.3)
    assert scorer.awaited - before == 10


def test_recent_from_the_speech_start_covers_the_onset() -> None:
    vad = CallVad(VadConfig(), ScriptedScorer([0.0] * 10 + [0.99] * 10))
    assert vad.speech_started_at is None
    events = feed(vad, loud(1.0))
    assert isinstance(events[0], SpeechStarted)
    start = vad.speech_started_at
    assert start is not None
    assert start == pytest.approx(10 * 256 / 8000, abs=0.021)  # first speech window, frame-rounded
    audio, p = vad.recent(start)
    assert len(audio) == pytest.approx((1.0 - start) * 8000, abs=1)
    assert p[:2] == pytest.approx([0.99, 0.99])


def test_rearm_forgets_the_candidate_and_the_next_onset_starts_again() -> None:
    changes: list[tuple[VadState, VadState]] = []
    probs = [0.99] * 5 + [0.0] * 5 + [0.99] * 5
    vad = CallVad(VadConfig(), ScriptedScorer(probs))
    vad.on_change = lambda now, prev, new, prob, level: changes.append((prev, new))
    first = feed(vad, loud(5 * 256 / 8000))
    assert [type(e) for e in first] == [SpeechStarted]
    vad.rearm(first[0].at + 0.01)
    assert vad.state is VadState.QUIET and not vad.speaking and vad.speech_started_at is None
    assert changes[-1] == (VadState.SPEAKING, VadState.QUIET)
    rest = feed(vad, loud(3.0), start=5 * 256 / 8000)
    # no SpeechStopped for the rejected candidate: the next onset is a fresh start, then its turn ends
    assert [type(e) for e in rest] == [SpeechStarted, SpeechStopped]
    vad.rearm(10.0)  # while quiet: nothing to forget
    assert vad.state is VadState.QUIET


def test_rearm_is_a_row_of_the_table() -> None:
    for state in VadState:
        assert TRANSITIONS[(state, Observation.REJECTED)] == (VadState.QUIET, Emit.NOTHING)


def test_a_pause_is_told_once_per_pause_and_the_turn_still_ends_later() -> None:
    pauses: list[SpeechPaused] = []
    # 10 sure windows (320 ms), 12 silent (384 ms), 10 sure, then silence
    vad = CallVad(VadConfig(pause_ms=250), ScriptedScorer([0.99] * 10 + [0.0] * 12 + [0.99] * 10))
    vad.on_pause = pauses.append
    events = feed(vad, loud(2.5))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    assert len(pauses) == 2
    first_end = 10 * 256 / 8000
    assert pauses[0].at - first_end == pytest.approx(0.25, abs=0.033)  # the next window after 250 ms
    assert pauses[0].speech_ms == pytest.approx(320, abs=21)
    second_end = 32 * 256 / 8000  # (its arrival is rounded up to the frame that completes the window)
    assert 0.25 <= pauses[1].at - second_end <= 0.25 + 0.032 + 0.02
    assert events[1].at > pauses[1].at + 0.4


def test_tick_tells_the_pause_when_frames_stop() -> None:
    pauses: list[SpeechPaused] = []
    vad = CallVad(VadConfig(pause_ms=250), ScriptedScorer([0.99] * 10))
    vad.on_pause = pauses.append
    feed(vad, loud(10 * 256 / 8000))
    last = 10 * 256 / 8000
    assert vad.speech_ms == pytest.approx(320, abs=21)
    assert vad.tick(last + 0.2) == [] and pauses == []
    assert vad.silence_ms(last + 0.2) == pytest.approx(200)
    assert vad.tick(last + 0.26) == [] and len(pauses) == 1
    assert vad.state is VadState.STOPPING
    assert vad.tick(last + 0.3) == [] and len(pauses) == 1  # once per pause
    assert [type(e) for e in vad.tick(last + 0.7)] == [SpeechStopped]
    assert vad.speech_ms == 0.0 and vad.silence_ms(last + 1.0) == 0.0


def test_new_thresholds_are_read_from_settings_when_present() -> None:
    from app.settings import Settings

    settings = Settings()
    cfg = VadConfig.from_settings(settings)
    assert cfg.snr_db == getattr(settings, "vad_snr_db", VadConfig.snr_db)
    assert cfg.pause_ms == getattr(settings, "vad_pause_ms", VadConfig.pause_ms)
    with pytest.raises(ValueError):
        VadConfig(snr_db=-1)
    with pytest.raises(ValueError):
        VadConfig(pause_ms=0)


def test_windows_are_urgent_to_the_batcher_once_speech_is_starting() -> None:
    seen: list[bool] = []

    class Watching(ScriptedScorer):
        async def infer(self, stream: SileroStream, window: np.ndarray) -> float:
            seen.append(stream.urgent)
            return await super().infer(stream, window)

    vad = CallVad(VadConfig(use_webrtc=False, snr_db=0.0), Watching([0.99] * 3))
    events = feed(vad, loud(3 * 256 / 8000))
    assert [type(e) for e in events] == [SpeechStarted]
    # QUIET when the first window was asked (it may only start speech); STARTING, then SPEAKING, after it.
    assert seen == [False, True, True]
