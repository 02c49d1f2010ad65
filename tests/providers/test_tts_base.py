"""providers/tts/base.py: mapping a heard playback position to a character offset, and back."""

from __future__ import annotations

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
