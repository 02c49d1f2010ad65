"""providers/tts/base.py: mapping a heard playback position to a character offset, and back."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from providers.tts.base import Synthesis, WordTiming, audio_ms_at, char_offset_at

#        0         1         2
#        0123456789012345678901234
TEXT = "  Hello there, big world."
WORDS = (
    WordTiming(2, 7, 100.0),  # Hello
    WordTiming(8, 13, 400.0),  # there
    WordTiming(15, 18, 900.0),  # big
    WordTiming(19, 24, 1100.0),  # world
)
TOTAL_MS = 1500.0


def offset(ms: float) -> int:
    return char_offset_at(WORDS, len(TEXT), ms, TOTAL_MS)


def test_before_the_first_word_nothing_is_heard() -> None:
    assert offset(0.0) == 0
    assert offset(99.9) == 0


def test_at_a_word_start_the_text_before_it_is_heard() -> None:
    assert offset(100.0) == 2
    assert offset(400.0) == 8
    assert TEXT[: offset(900.0)] == "  Hello there, "


def test_inside_a_word_the_cut_is_interpolated_to_a_character() -> None:
    # "Hello " spans chars 2..8 over 100..400 ms: 50 ms per character.
    assert offset(150.0) == 3
    assert offset(199.0) == 3
    assert offset(200.0) == 4
    assert TEXT[: offset(250.0)] == "  Hel"


def test_the_last_word_runs_to_the_end_of_audio_and_text() -> None:
    # "world." spans chars 19..25 over 1100..1500 ms.
    assert offset(1100.0) == 19
    assert offset(1499.0) == 24
    assert offset(1500.0) == len(TEXT)
    assert offset(10_000.0) == len(TEXT)


def test_char_offset_is_monotone() -> None:
    values = [offset(ms) for ms in np.arange(-10.0, 1600.0, 0.5)]
    assert values == sorted(values)
    assert values[0] == 0 and values[-1] == len(TEXT)


def test_audio_ms_at_is_the_earliest_time_the_prefix_is_heard() -> None:
    previous = 0.0
    for c in range(len(TEXT) + 1):
        ms = audio_ms_at(WORDS, c, len(TEXT), TOTAL_MS)
        assert ms >= previous
        previous = ms
        assert offset(ms) >= c
        if c > 0:
            assert offset(ms - 1e-3) < c
    assert audio_ms_at(WORDS, 0, len(TEXT), TOTAL_MS) == 0.0
    assert audio_ms_at(WORDS, 2, len(TEXT), TOTAL_MS) == 100.0
    assert audio_ms_at(WORDS, 4, len(TEXT), TOTAL_MS) == pytest.approx(200.0)
    assert audio_ms_at(WORDS, 99, len(TEXT), TOTAL_MS) == TOTAL_MS


def test_without_words_everything_is_heard_only_at_the_end() -> None:
    assert char_offset_at((), 5, 0.0, 100.0) == 0
    assert char_offset_at((), 5, 99.0, 100.0) == 0
    assert char_offset_at((), 5, 100.0, 100.0) == 5
    assert audio_ms_at((), 3, 5, 100.0) == 100.0


def test_words_sharing_a_start_time_do_not_divide_by_zero() -> None:
    words = (WordTiming(0, 1, 0.0), WordTiming(2, 3, 0.0), WordTiming(4, 5, 50.0))
    assert char_offset_at(words, 6, 0.0, 100.0) == 2
    assert char_offset_at(words, 6, 25.0, 100.0) == 3
    assert audio_ms_at(words, 1, 6, 100.0) == 0.0


def test_a_total_shorter_than_the_last_word_start_is_tolerated() -> None:
    words = (WordTiming(0, 3, 0.0), WordTiming(4, 7, 200.0))
    assert char_offset_at(words, 8, 150.0, 100.0) == 3
    assert char_offset_at(words, 8, 200.0, 100.0) == 8


def test_synthesis_duration_and_shortcuts() -> None:
    synthesis = Synthesis(TEXT, np.zeros(12_000, dtype=np.int16), 8000, WORDS)
    assert synthesis.duration_ms == TOTAL_MS
    assert synthesis.char_offset_at(250.0) == offset(250.0)
    assert synthesis.audio_ms_at(4) == pytest.approx(200.0)


# --- a word followed by a pause: its sound ends before the next word starts ------------------------------------

#          0         1         2         3         4
#          0123456789012345678901234567890123456789012
CALLING = "Thanks for calling bargein. How can I help?"
SR = 8000
# (char_start, char_end, start ms, end of sound ms): "bargein." is followed by a 300 ms pause, as espeak makes it.
VOICED = ((0, 6, 0, 430), (7, 10, 440, 630), (11, 18, 640, 1020), (19, 26, 1020, 1520), (28, 31, 1820, 2000),
          (32, 35, 2000, 2150), (36, 37, 2150, 2260), (38, 42, 2260, 2720))
CALLING_MS = 3000.0


def voiced_pcm(spans: tuple[tuple[int, int, int, int], ...], total_ms: float) -> np.ndarray:
    """A tone wherever a word sounds, digital silence elsewhere."""
    pcm = np.zeros(int(total_ms * SR / 1000), dtype=np.int16)
    for _, _, start, end in spans:
        n = (end - start) * SR // 1000
        pcm[start * SR // 1000 : start * SR // 1000 + n] = (3000 * np.sin(np.arange(n) * 0.3)).astype(np.int16)
    return pcm


def calling() -> Synthesis:
    words = tuple(WordTiming(a, b, float(start)) for a, b, start, _ in VOICED)
    return Synthesis(CALLING, voiced_pcm(VOICED, CALLING_MS), SR, words)


def test_a_cut_in_the_pause_after_a_word_counts_the_whole_word_as_heard() -> None:
    synthesis = calling()
    # The regression: interpolating "bargein. " from its start (1020 ms) to the next word's (1820 ms) stretched
    # the word over the pause, so a clear 80 ms into the silence recorded "...calling bargei".
    without_ends = tuple(WordTiming(w.char_start, w.char_end, w.audio_ms) for w in synthesis.words)
    assert CALLING[: char_offset_at(without_ends, len(CALLING), 1600.0, CALLING_MS)] == "Thanks for calling bargei"
    for ms in (1520.0, 1600.0, 1750.0, 1819.0):
        assert CALLING[: synthesis.char_offset_at(ms)] == "Thanks for calling bargein. "
    # While the word sounds, the cut is still interpolated within it, over its sound only.
    assert CALLING[: synthesis.char_offset_at(1400.0)].startswith("Thanks for calling barg")
    assert synthesis.char_offset_at(1519.0) <= 26


def test_word_ends_are_found_only_before_a_pause() -> None:
    ends = {w.char_start: w.audio_end_ms for w in calling().words}
    assert ends[19] == 1520.0  # "bargein." then 300 ms of silence
    assert ends[38] == 2720.0  # the last word, then the end pause
    assert ends[0] is None and ends[28] is None  # followed at once (within 60 ms) by the next word


def test_a_stop_closure_inside_a_word_is_not_its_end() -> None:
    # "Thanks": sound, a 40 ms closure, sound again up to the next word.
    spans = ((0, 6, 0, 250), (0, 6, 290, 440), (7, 10, 440, 630))
    words = (WordTiming(0, 6, 0.0), WordTiming(7, 10, 440.0))
    synthesis = Synthesis("Thanks for", voiced_pcm(spans, 630.0), SR, words)
    assert synthesis.words[0].audio_end_ms is None


def test_silent_audio_and_given_ends_are_left_alone() -> None:
    words = (WordTiming(0, 3, 0.0), WordTiming(4, 7, 200.0, audio_end_ms=250.0))
    synthesis = Synthesis("one two", np.zeros(4000, dtype=np.int16), SR, words)
    assert synthesis.words == words


def test_with_word_ends_audio_ms_at_is_still_the_inverse() -> None:
    synthesis = calling()
    previous = 0.0
    for c in range(len(CALLING) + 1):
        ms = synthesis.audio_ms_at(c)
        assert ms >= previous
        previous = ms
        assert synthesis.char_offset_at(ms) >= c
        if c > 0:
            assert synthesis.char_offset_at(ms - 1e-3) < c
    values = [synthesis.char_offset_at(ms) for ms in np.arange(-10.0, CALLING_MS + 10, 0.5)]
    assert values == sorted(values)
    # The characters after "bargein" (". ") are heard the moment its sound ends.
    assert synthesis.audio_ms_at(27) == synthesis.audio_ms_at(28) == 1520.0


def test_espeak_calling_bargein_is_not_clipped_in_the_pause() -> None:
    from providers.tts.espeak import EspeakTts

    synthesis = asyncio.run(EspeakTts().synthesize(CALLING))
    [word] = [w for w in synthesis.words if CALLING[w.char_start : w.char_end] == "bargein"]
    nxt = synthesis.words[synthesis.words.index(word) + 1]
    assert word.audio_end_ms is not None and nxt.audio_ms - word.audio_end_ms >= 100.0
    for ms in np.linspace(word.audio_end_ms, nxt.audio_ms - 1.0, 7):
        assert CALLING[: synthesis.char_offset_at(float(ms))] == "Thanks for calling bargein. "
