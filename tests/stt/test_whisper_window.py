"""The short encoder window: its sizing and loop guard as pure logic, then on the real tiny.en model.

The model tests spy on the loaded model's `encode` (the real one still runs) to see which window each clip got.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.bench.stt import read_wav, word_errors
from providers.mulaw import pcm16_to_ulaw
from providers.stt.base import Final
from providers.stt.whisper import WhisperStt, _Decode
from providers.stt.whisper_window import FULL_FRAMES, ShortWindow, is_suspect, repeats_back_to_back

CLIPS = Path(__file__).resolve().parents[1] / "corpus" / "speech"
JFK = CLIPS / "oration_01_jfk.wav"  # jfk.flac 0.20-4.48 s
JFK_TEXT = "and so my fellow americans ask not"

# What tiny.en wrote for a 5.5 s LibriSpeech clip encoded in a 6 s window (the lead's measurement).
LOOPED = ("shoemakers, and butchers, and bakers. Lots of diggers were returning who had made their pile. "
          "Lots of diggers were returning who had made their pile. They made their pile.")


# --- pure --------------------------------------------------------------------------------------------------


def test_window_is_the_clip_plus_margin_in_steps_and_full_when_that_is_all_that_fits() -> None:
    w = ShortWindow(margin_frames=300, min_frames=500, step_frames=100)
    assert w.frames_for(50) == 500  # a digit: the minimum
    assert w.frames_for(200) == 500
    assert w.frames_for(201) == 600
    assert w.frames_for(551) == 900
    assert w.frames_for(2600) == 2900
    assert w.frames_for(2601) is None  # would be 3000: the ordinary window
    assert w.frames_for(2999) is None
    with pytest.raises(ValueError):
        ShortWindow(min_frames=0)


def test_token_budget_grows_with_the_clip() -> None:
    w = ShortWindow(tokens_per_s=8.0, base_tokens=16)
    assert w.token_budget(0) == 16
    assert w.token_budget(250) == 16 + 20
    assert w.token_budget(251) == 16 + 21


@pytest.mark.parametrize(
    ("text", "loops"),
    [
        (LOOPED, True),
        ("Yes! Yes! Yes! Yes!", True),
        ("book it book it book it", True),
        ("and so my fellow americans ask not", False),
        ("No, no, that's wrong.", False),
        ("No, no, no, that's wrong.", True),  # callers say it too: then the fallback only costs CPU
        ("Can I change my appointment to next Thursday? Next Thursday.", False),
        ("", False),
    ],
)
def test_repetition_guard(text: str, loops: bool) -> None:
    assert repeats_back_to_back(text) is loops


def test_suspect_when_the_budget_is_used_up_or_text_compresses_or_runs_too_fast() -> None:
    said = "I need to cancel my reservation."
    assert not is_suspect(said, 12, 40, 1.1, 22.0)
    assert is_suspect(said, 38, 40, 1.1, 22.0)  # the decoder was stopped at its budget (CT2 stops 1-2 short)
    assert not is_suspect(said, 37, 40, 1.1, 22.0)
    assert is_suspect(said, 12, 40, 2.5, 22.0)  # gzips like a loop
    assert is_suspect(said, 12, 40, 1.1, 5.5)  # six words where five at most fit
    assert is_suspect(LOOPED, 30, 60, 1.9, 40.0)
    # A 0.55 s "three" came back as five words: ShortWindow's default limit for 55 frames is 4.75.
    assert ShortWindow().max_words(55) < 5 and is_suspect("three, two, three, two, three", 8, 20, 1.0,
                                                          ShortWindow().max_words(55))


# --- on the real model --------------------------------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


class EncodeSpy:
    """Records the mel frames of every encoder input of a loaded model; the model still does the work."""

    def __init__(self, engine: WhisperStt) -> None:
        model = engine._load()
        self.frames: list[int] = []
        real: Callable[[Any], Any] = model.encode

        def encode(features: Any) -> Any:
            self.frames.append(int(features.shape[-1]))
            return real(features)

        model.encode = encode


@pytest.fixture(scope="module")
def short() -> Iterator[WhisperStt]:
    engine = WhisperStt(workers=1, cpu_threads=1)
    yield engine
    asyncio.run(engine.aclose())


def test_a_short_turn_is_encoded_in_a_short_window_and_keeps_its_words_and_times(short: WhisperStt) -> None:
    spy = EncodeSpy(short)
    pcm = read_wav(JFK)[: int(2.5 * 8000)]  # "and so my fellow americans", which ends about 2.1 s in
    final = run(short.transcribe(pcm16_to_ulaw(pcm), "mulaw", at_ms=1000.0))
    assert spy.frames == [1000]  # 2.5 s of audio + margin, up to the 10 s minimum; not 30 s, and no fallback
    # Both windows write "america" or "americans" for this cut (tiny.en, 8 kHz mu-law): one word in five.
    assert word_errors("and so my fellow americans", final.text).wer <= 0.4
    assert final.words and all(1000.0 <= w.start_ms <= w.end_ms <= 3550.0 for w in final.words)


def test_a_whole_clip_gets_the_short_window_with_word_times_in_place(short: WhisperStt) -> None:
    pcm = read_wav(JFK)
    spy = EncodeSpy(short)
    got = run(short.transcribe(pcm16_to_ulaw(pcm), "mulaw"))
    assert spy.frames == [ShortWindow().frames_for(pcm.shape[0] // 80)] == [1000]
    full = WhisperStt(workers=1, cpu_threads=1, window="full")
    try:
        full_spy = EncodeSpy(full)
        run(full.transcribe(pcm16_to_ulaw(pcm), "mulaw"))
    finally:
        asyncio.run(full.aclose())
    assert full_spy.frames == [FULL_FRAMES]  # STT_WHISPER_WINDOW=full: as before
    # The words themselves can differ (on this clip the short window writes "and so am i fell america ask not",
    # the full one gets it right; the pool's figures are in providers/stt/whisper.py); the times stay right.
    # The excerpt is jfk.flac from 0.20 s: "and" at once, "ask not" from 3.14 s (2.94 s in), ending by 4.28 s.
    # Whisper's word times come from its attention and land within a few hundred ms (3.54 s for "ask" on an AMD
    # EPYC without AVX-512, 3.1-3.4 s elsewhere); a time off by the pre-roll or the window would be seconds off.
    times = {w.text.lower().strip(".,!?"): (w.start_ms, w.end_ms) for w in got.words}
    assert times["and"][0] <= 300
    assert 2700 <= times["ask"][0] <= 3700
    assert times["ask"][1] <= times["not"][0] <= times["not"][1] <= 4330
    assert [w.start_ms for w in got.words] == sorted(w.start_ms for w in got.words)


# A budget of three tokens stands for a decoder that loops until it is stopped.
LOOPING = ShortWindow(tokens_per_s=0.0, base_tokens=3)


def _jfk_with_a_looping_short_window(engine: WhisperStt) -> tuple[Final, EncodeSpy]:
    """JFK transcribed with the short window's decoder looping: the words, and the windows encoded."""
    engine._decode = _Decode(window=LOOPING)
    try:
        spy = EncodeSpy(engine)
        return run(engine.transcribe(pcm16_to_ulaw(read_wav(JFK)), "mulaw")), spy
    finally:
        engine._decode = _Decode()


def test_a_decode_that_runs_out_of_budget_is_redone_in_the_full_window(short: WhisperStt) -> None:
    # The guard must not let the looping text out, and the turn is transcribed again in the full window.
    final, spy = _jfk_with_a_looping_short_window(short)
    assert len(spy.frames) == 2 and spy.frames[0] < FULL_FRAMES and spy.frames[1] == FULL_FRAMES
    assert word_errors(JFK_TEXT, final.text).wer <= 0.45  # the full window's words (see test_whisper.py's JFK test)


def test_a_full_window_pass_that_loops_again_ends_the_clip(short: WhisperStt, monkeypatch: pytest.MonkeyPatch) -> None:
    # The decoder loops in both windows (a laugh, a cat, an alarm): the full window runs once, writes nothing,
    # and does not go on in new 30 s windows from where it stopped.
    import providers.stt.whisper as whisper

    monkeypatch.setattr(whisper, "_FULL_WINDOW_BUDGET", LOOPING)
    final, spy = _jfk_with_a_looping_short_window(short)
    assert spy.frames[0] < FULL_FRAMES and spy.frames[1:] == [FULL_FRAMES]  # one full pass after the short one
    assert final.text == "" and final.words == ()


def test_window_setting_is_checked() -> None:
    with pytest.raises(ValueError):
        WhisperStt(window="medium")  # type: ignore[arg-type]
