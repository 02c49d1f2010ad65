"""The command-word hint for short clips (providers/stt/whisper_hint.py), on the real model: it must turn
half-heard commands into words the rules know, and must not turn noise into a stop word."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.bargein.words import STOPS_THE_AGENT, interruption
from app.bench.stt import read_wav
from app.bench.words_tuning import loudest_second, spoken_by, with_lead
from providers.mulaw import pcm16_to_ulaw
from providers.stt.whisper import WhisperStt
from providers.stt.whisper_hint import Hint

# Every third of the test corpus's noise clips (eight), to keep the suite fast.
NOISE = sorted((Path(__file__).resolve().parents[1] / "corpus" / "noise").glob("*.wav"))[::3]
# Tuning phrases (app/bench/tuning_phrases.py) in a tuning voice that tiny.en mishears without the hint.
HALF_HEARD = [("hang on", "stop"), ("never mind", "cancellation"), ("no wait", "stop"), ("what?", "clarification")]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, WhisperStt]]:
    made = {"plain": WhisperStt(hint=None), "gated": WhisperStt(hint=Hint()),
            "ungated": WhisperStt(hint=Hint(gate=1.0, min_word_prob=0.0))}
    yield made
    for stt in made.values():
        asyncio.run(stt.aclose())


def heard(stt: WhisperStt, pcm: np.ndarray[Any, Any]) -> str:
    return str(run(stt.transcribe(pcm16_to_ulaw(pcm), "mulaw")).text)


def test_hint_validates_and_is_for_short_clips_that_sound_like_speech() -> None:
    hint = Hint()
    assert hint.applies(1500.0) and not hint.applies(hint.max_ms + 1)
    assert hint.wanted("Way.", 0.2)
    assert hint.believed([0.5, 0.02]) and not hint.believed([0.004]) and not hint.believed([])
    assert not hint.believed([0.015], " Hup!")  # a grunt asked again came back "Stop." at this probability
    assert hint.believed([0.015], " Oh")  # a low bare "stop" heard as a vowel comes back "Stop." so
    assert not Hint(believe="min").believed([0.5, 0.02])  # every word must reach it, not their mean
    assert not hint.wanted("Way.", hint.gate)  # the plain decode doubts it is speech
    assert not hint.wanted(" ... ", 0.0)  # no words: nothing to ask again about
    assert not hint.wanted("Nine.", 0.1) and not hint.wanted("4.", 0.1)  # a number heard is kept
    assert hint.adds_a_repeat("Three.", "Three. Three.") and hint.adds_a_repeat("I'll be", "Stop it. Stop it.")
    assert not hint.adds_a_repeat("No, no.", "No, no.") and not hint.adds_a_repeat("Hanyong.", "Hang on.")
    for bad in ({"text": " "}, {"max_ms": 0.0}, {"gate": 0.0}, {"gate": 1.5}, {"min_word_prob": 1.0},
                {"believe": "median"}):
        with pytest.raises(ValueError):
            Hint(**bad)


def test_the_hint_turns_half_heard_commands_into_their_kind(engines: dict[str, WhisperStt]) -> None:
    spoken = run(spoken_by([t for t, _ in HALF_HEARD], "en-gb-scotland", 160, 1.0))
    right = {name: 0 for name in ("plain", "gated")}
    for (text, kind), pcm in zip(HALF_HEARD, spoken, strict=True):
        for name in right:
            said = heard(engines[name], with_lead(pcm))
            print(f"{name}: {text!r} heard {said!r}")
            right[name] += interruption(said) == kind
    # tiny.en's plain decode of these clips is not stable from run to run ("no wait" comes back as "No way.",
    # which the rules read as a stop, or as something else): the hint must get more of them, and most of them.
    assert right["gated"] > right["plain"] and right["gated"] >= len(HALF_HEARD) - 1


def test_noise_does_not_become_a_stop_word_through_the_gated_hint(engines: dict[str, WhisperStt]) -> None:
    clips = [loudest_second(read_wav(p)) for p in NOISE]
    stops = {name: 0 for name in ("gated", "ungated")}
    for clip in clips:
        for name in stops:
            stops[name] += interruption(heard(engines[name], clip)) in STOPS_THE_AGENT
    print(f"noise clips that would stop the agent: {stops} of {len(clips)}")
    assert stops["ungated"] >= 1  # the risk is real: the hint on everything writes "No." for noise
    assert stops["gated"] == 0
