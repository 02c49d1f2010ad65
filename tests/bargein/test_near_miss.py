"""The near-miss tracker (app/bargein/near_miss.py), window by window on made-up times, and in the real CallVad."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.bargein.near_miss import NearMissConfig, NearMissTracker
from app.bargein.silero import WINDOW
from app.bargein.vad import FRAME, CallVad, NearMiss, VadConfig

W = 0.032
CFG = NearMissConfig(threshold=0.5, min_windows=2, min_ms=200.0, max_ms=1200.0, end_silence_ms=250.0, release=0.35)


def feed(tracker: NearMissTracker, probs: list[float], t0: float = 1.0, *, may_start: bool = True,
         speaking_at: frozenset[int] = frozenset()) -> list[tuple[int, NearMiss]]:
    """One window per probability from `t0` on (a 0.0 is silence), then 0.5 s of silence."""
    out = []
    probs = probs + [0.0] * 16
    for i, p in enumerate(probs):
        now = t0 + (i + 1) * W
        miss = tracker.window(now, p, may_start, p >= tracker.config.release, i not in speaking_at)
        if miss is not None:
            out.append((i, miss))
    return out


def test_a_word_held_just_under_the_bar_is_a_near_miss_once_its_silence_lasts() -> None:
    # a bare "stop" at a bad phase: 0.6-0.87, never 0.9 twice in a row, about 350 ms
    probs = [0.4, 0.62, 0.81, 0.87, 0.93, 0.85, 0.78, 0.84, 0.66, 0.55, 0.42]
    tracker = NearMissTracker(CFG)
    [(i, miss)] = feed(tracker, probs)
    assert miss.windows == 9 and miss.peak == pytest.approx(0.93)
    assert miss.start_at == pytest.approx(1.0 + W)  # the first counted window's start (the 0.62 one)
    assert miss.end_at == pytest.approx(1.0 + 11 * W)  # the last window above release (0.42)
    # told at the first window 250 ms after the last sound, not before
    assert (miss.at - miss.end_at) * 1000 >= 250.0 - 1e-6 and (miss.at - miss.end_at) * 1000 < 250.0 + 32
    assert tracker.seen == 1


@pytest.mark.parametrize("probs", [
    [0.7, 0.3, 0.7, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3],  # windows at 0.7 apart: one counted, then silence in between
    [0.7, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # one window: a click
    [0.6, 0.6, 0.4],  # two windows, but 96 ms: shorter than min_ms
])
def test_too_few_windows_or_too_short_is_no_near_miss(probs: list[float]) -> None:
    assert feed(NearMissTracker(CFG), probs) == []


def test_a_long_hovering_noise_is_no_near_miss_and_its_tail_opens_none() -> None:
    tracker = NearMissTracker(CFG)
    assert feed(tracker, [0.7] * 60) == []  # 1.9 s: past max_ms, dropped at once
    # the same tracker hears a word after the silence
    assert len(feed(tracker, [0.7] * 10, t0=10.0)) == 1


def test_windows_that_fail_the_cheap_layers_do_not_count() -> None:
    # above release (still sound), but under the floor's SNR or webrtcvad: never opens
    assert feed(NearMissTracker(CFG), [0.8] * 10, may_start=False) == []


def test_speech_that_starts_is_the_candidates_and_its_tail_is_no_near_miss() -> None:
    tracker = NearMissTracker(CFG)
    probs = [0.8, 0.95, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.6, 0.4]
    # speech started at the third window, the decision layer rearmed (QUIET again) at the sixth: the rest of
    # the same sound follows without a silence in between, so it opens nothing
    assert feed(tracker, probs, speaking_at=frozenset({2, 3, 4})) == []


def test_a_near_miss_must_follow_silence() -> None:
    tracker = NearMissTracker(CFG)
    # a sound right after another (no 250 ms of silence before it) is the same sound: one near miss, and its
    # length runs from the first
    [(_, miss)] = feed(tracker, [0.7] * 5 + [0.2, 0.36] + [0.7] * 5)
    assert miss.windows == 10 and miss.start_at == pytest.approx(1.0)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError):
        NearMissConfig(threshold=0.3, release=0.35)
    with pytest.raises(ValueError):
        NearMissConfig(min_ms=500.0, max_ms=400.0)


class Scripted:
    """A WindowScorer that answers each awaited window from a script (deferred windows read nothing)."""

    def __init__(self, probs: list[float]) -> None:
        self.probs = list(probs)

    async def infer(self, stream: object, window: object) -> float:
        return self.probs.pop(0) if self.probs else 0.0

    def defer(self, stream: object, window: object) -> None:
        pass


def test_the_vad_tells_a_near_miss_through_its_callback_and_starts_no_speech() -> None:
    # A loud tone (every cheap layer passes) scored 0.8 a window: never 0.9, so no SpeechStarted.
    rng = np.random.default_rng(1)
    quiet = (rng.standard_normal(8000) * 3).astype(np.int16)
    word = (np.sin(np.arange(WINDOW * 12) * 0.3) * 8000).astype(np.int16)
    audio = np.concatenate([quiet, word, quiet])
    vad = CallVad(VadConfig(use_webrtc=False), Scripted([0.8] * 12))
    misses: list[NearMiss] = []
    vad.near_miss = NearMissTracker(CFG)
    vad.on_near_miss = misses.append

    async def run() -> list[object]:
        events: list[object] = []
        for k in range(len(audio) // FRAME):
            events += await vad.feed(audio[k * FRAME : (k + 1) * FRAME], (k + 1) * FRAME / 8000)
        return events

    assert asyncio.run(run()) == []
    [miss] = misses
    assert miss.windows >= 10 and miss.peak == pytest.approx(0.8)
    assert 1.0 - 0.04 <= miss.start_at <= 1.0 + 0.04
