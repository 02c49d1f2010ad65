"""What the policy reads as "the caller has spoken this long" (CallVad.speech_ms, SpeechPaused.speech_ms) counts
windows with speech evidence, not the WEAK tail that only keeps a turn open: a noise that trails off at
0.35-0.8 for a second is resumed when it pauses, while a caller who keeps talking still takes the turn."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from app.bargein.detector import Action, BargeInPolicy, Candidate, Paused, PolicyConfig, Progress, Verdict
from app.bargein.vad import FRAME, SAMPLE_RATE, CallVad, SpeechPaused, SpeechStarted, VadConfig
from app.offline import corpus
from tests.bargein.test_vad import ScriptedScorer  # Silero's stand-in: scripted probabilities


def run_call(probs: Sequence[float], seconds: float = 2.5) -> tuple[list[Action], list[SpeechPaused], CallVad]:
    """A loud caller leg scored by `probs`, the agent talking throughout, under `resume`: the VAD's events and
    the session's settling loop (Candidate, a second look saying speech, Progress every frame, Paused)."""
    vad = CallVad(VadConfig(use_webrtc=False), ScriptedScorer(probs))
    policy = BargeInPolicy(PolicyConfig(policy="resume"))
    pauses: list[SpeechPaused] = []
    vad.on_pause = pauses.append
    actions: list[Action] = []
    pcm = corpus.white_noise(seconds, -30.0, seed=5)

    async def go() -> None:
        told = 0
        for k in range(len(pcm) // FRAME):
            now = (k + 1) * FRAME / SAMPLE_RATE
            for event in await vad.feed(pcm[k * FRAME : (k + 1) * FRAME], now):
                if isinstance(event, SpeechStarted):
                    start = vad.speech_started_at or now
                    actions.append(policy.feed(Candidate(now, start, agent_speaking=True)).action)
                    actions.append(policy.feed(Verdict(now, "speech")).action)  # the second look was fooled
            while told < len(pauses):
                actions.append(policy.feed(Paused(pauses[told].at, pauses[told].speech_ms)).action)
                told += 1
            if policy.timing and vad.speaking:
                actions.append(policy.feed(Progress(now, vad.speech_ms)).action)

    asyncio.run(go())
    return [a for a in actions if a is not Action.NONE], pauses, vad


def test_a_noise_with_a_weak_tail_is_resumed_when_it_pauses() -> None:
    # two sure windows (a sneeze), then a second of 0.5 (its breath, a fading bark): the turn stays open ...
    actions, pauses, _ = run_call([0.95, 0.97] + [0.5] * 31)
    assert actions == [Action.PAUSE, Action.RESUME]
    assert len(pauses) == 1
    assert pauses[0].speech_ms == pytest.approx(64, abs=10)  # ... but counts as ~64 ms of speech, not a second
    assert pauses[0].at == pytest.approx((2 + 31) * 0.032 + 0.25, abs=0.04)


def test_a_caller_who_keeps_talking_still_takes_the_turn() -> None:
    actions, _, _ = run_call([0.95] * 30)
    assert actions == [Action.PAUSE, Action.STOP]


def test_soft_windows_that_could_start_speech_count_as_evidence() -> None:
    # a quiet talker whose words sit at 0.8-0.9 (the slow path's range) is still heard taking the turn
    actions, _, _ = run_call([0.95, 0.95] + [0.85] * 28)
    assert actions == [Action.PAUSE, Action.STOP]


def test_speech_ms_stops_at_the_last_evident_window() -> None:
    _, _, vad = run_call([0.95, 0.95, 0.95] + [0.5] * 10, seconds=0.6)
    assert vad.speaking
    assert vad.speech_ms == pytest.approx(96, abs=10)  # on the 20 ms arrival clock
