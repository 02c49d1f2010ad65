"""providers/tts/espeak.py against the real espeak-ng library shipped in the espeakng-loader wheel."""

from __future__ import annotations

import asyncio
import ctypes
import re
import threading
import time
import unicodedata
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest

from providers.errors import ProviderError
from providers.tts import espeak
from providers.tts.base import Synthesis, WordTiming
from providers.tts.espeak import EspeakTts, align_words

T = TypeVar("T")

SENTENCES = (
    "Thanks for calling the support line. "
    "I can help you change your booking, check a delivery, or answer a billing question. "
    "Which of those would you like to start with today? "
    "Take your time, and interrupt me whenever you're ready."
)
LONG = " ".join(f"This is sentence {i} of a long reply that goes on and on." for i in range(60))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def expected_words(text: str) -> list[tuple[int, int]]:
    """Whitespace-separated tokens without trailing punctuation, as (start, end) character offsets."""
    spans = []
    for match in re.finditer(r"\S+", text):
        start, end = match.span()
        while end - 1 > start and unicodedata.category(text[end - 1]).startswith("P"):
            end -= 1
        spans.append((start, end))
    return spans


def assert_same_speech(got: Synthesis, want: Synthesis) -> None:
    # espeak-ng carries a little state from one utterance into the next (reloading the voice does not reset
    # it), so the same text does not come out sample-identical: over 150 shuffled runs of these texts a word
    # moved by up to 11 ms and a 2.5 s sentence's length by up to 24 ms. The bounds below sit well above
    # that and far below what a leak would cause (another rate is +-40%; another job's buffer, whole words).
    assert got.text == want.text
    assert got.duration_ms == pytest.approx(want.duration_ms, rel=0.02, abs=60.0)
    assert [(w.char_start, w.char_end) for w in got.words] == [(w.char_start, w.char_end) for w in want.words]
    for a, b in zip(got.words, want.words, strict=True):
        assert a.audio_ms == pytest.approx(b.audio_ms, abs=30.0)


def assert_well_formed(synthesis: Synthesis) -> None:
    starts = [w.char_start for w in synthesis.words]
    times = [w.audio_ms for w in synthesis.words]
    assert starts == sorted(set(starts))
    assert all(a < b for a, b in zip(times, times[1:], strict=False))
    assert all(w.char_start < w.char_end <= len(synthesis.text) for w in synthesis.words)
    assert all(0.0 <= t < synthesis.duration_ms for t in times)


def test_multi_sentence_text_gives_8khz_audio_and_every_word() -> None:
    synthesis = run(EspeakTts().synthesize(SENTENCES))
    assert synthesis.sample_rate == 8000
    assert synthesis.pcm.dtype == np.int16
    n_words = len(SENTENCES.split())
    nominal_ms = n_words / 175 * 60_000
    assert 0.6 * nominal_ms < synthesis.duration_ms < 1.8 * nominal_ms
    assert np.abs(synthesis.pcm).max() > 3000  # speech, not silence
    assert_well_formed(synthesis)
    spans = [(w.char_start, w.char_end) for w in synthesis.words]
    assert spans == expected_words(SENTENCES)
    assert [SENTENCES[s:e] for s, e in spans][:4] == ["Thanks", "for", "calling", "the"]


def test_word_timings_follow_the_audio() -> None:
    synthesis = run(EspeakTts().synthesize(SENTENCES))
    # A word's start should not sit in deep silence long after the previous word: the audio just after each
    # start (first 150 ms) has speech energy.
    for word in synthesis.words:
        i = int(word.audio_ms * 8)
        assert np.abs(synthesis.pcm[i : i + 1200]).max() > 1000
    # And the first word starts the audio.
    assert synthesis.words[0].audio_ms == 0.0


def test_accented_and_non_bmp_text_maps_to_python_characters() -> None:
    # espeak counts characters, not UTF-8 bytes; the emoji is one code point in Python as in espeak.
    text = "Café crème, brûlée et naïve résumé 🙂 à Zürich."
    synthesis = run(EspeakTts().synthesize(text))
    assert_well_formed(synthesis)
    heard = [text[w.char_start : w.char_end] for w in synthesis.words]
    for word in ("Café", "crème", "brûlée", "naïve", "résumé", "Zürich"):
        assert word in heard


def test_rate_changes_duration_per_handle() -> None:
    async def both() -> tuple[Synthesis, Synthesis]:
        slow, fast = EspeakTts(rate_wpm=120), EspeakTts(rate_wpm=300)
        results = await asyncio.gather(slow.synthesize(SENTENCES), fast.synthesize(SENTENCES))
        return results[0], results[1]

    slow, fast = run(both())
    assert slow.duration_ms > 1.8 * fast.duration_ms


def test_blank_text_is_empty_without_calling_espeak(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> Synthesis:
        raise AssertionError("espeak must not be called for blank text")

    monkeypatch.setattr(espeak, "_synthesize_blocking", forbidden)
    for text in ("", "   ", "\n\t"):
        synthesis = run(EspeakTts().synthesize(text))
        assert synthesis.text == text and synthesis.words == () and synthesis.duration_ms == 0.0


def test_unknown_voice_is_a_provider_error_and_the_engine_recovers() -> None:
    with pytest.raises(ProviderError) as info:
        run(EspeakTts(voice="no-such-voice").synthesize("hello"))
    assert not info.value.retryable
    assert run(EspeakTts().synthesize("hello there")).duration_ms > 0


def test_language_tags_select_a_voice_too() -> None:
    # "en-gb" is not a voice file name; it is found through the voices' language lists.
    assert run(EspeakTts(voice="en-gb").synthesize("hello there")).duration_ms > 0


def test_bad_rate_is_rejected_up_front() -> None:
    with pytest.raises(ValueError):
        EspeakTts(rate_wpm=20)


def test_concurrent_calls_are_serialised_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    real = espeak._synthesize_blocking
    lock = threading.Lock()
    active = 0
    peak = 0
    threads: set[str] = set()

    def tracked(*args: Any) -> Synthesis:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            threads.add(threading.current_thread().name)
        try:
            time.sleep(0.002)  # widen the window in which an overlap would show
            return real(*args)
        finally:
            with lock:
                active -= 1

    texts = [f"Caller number {i} asked about order {i}." for i in range(8)]
    reference = [run(EspeakTts().synthesize(t)) for t in texts]
    monkeypatch.setattr(espeak, "_synthesize_blocking", tracked)

    async def many() -> list[Synthesis]:
        handles = [EspeakTts() for _ in texts]
        return await asyncio.gather(*(h.synthesize(t) for h, t in zip(handles, texts, strict=True)))

    results = run(many())
    assert peak == 1
    assert len(threads) == 1
    # Interleaved requests got exactly what they would have got alone: no shared state leaked between them.
    for got, want in zip(results, reference, strict=True):
        assert_same_speech(got, want)


def test_event_loop_keeps_ticking_during_a_long_synthesis() -> None:
    async def measure() -> tuple[float, Synthesis]:
        stop = asyncio.Event()
        worst = 0.0

        async def ticker() -> None:
            nonlocal worst
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                worst = max(worst, now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)
        synthesis = await EspeakTts().synthesize(LONG)
        stop.set()
        await tick
        return worst, synthesis

    worst, synthesis = run(measure())
    assert synthesis.duration_ms > 60_000
    # Synthesising LONG on the loop would stall it for over a second; 100 ms leaves room for a busy machine.
    assert worst < 0.1


def test_cancelled_callers_do_not_break_the_next_synthesis() -> None:
    async def scenario() -> tuple[Synthesis, Synthesis]:
        tts = EspeakTts()
        reference = await tts.synthesize(SENTENCES)
        # Cancelled while the worker is busy with it.
        running = asyncio.create_task(tts.synthesize(LONG))
        await asyncio.sleep(0.002)
        running.cancel()
        # Cancelled while still queued behind another job.
        busy = asyncio.create_task(tts.synthesize(LONG))
        queued = asyncio.create_task(tts.synthesize(SENTENCES))
        await asyncio.sleep(0)
        queued.cancel()
        for task in (running, queued):
            with pytest.raises(asyncio.CancelledError):
                await task
        await busy
        return reference, await tts.synthesize(SENTENCES)

    reference, after = run(scenario())
    assert_same_speech(after, reference)


def test_event_struct_matches_the_c_layout() -> None:
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("layout figures below are for 64-bit platforms")
    event = espeak._Event
    assert ctypes.sizeof(event) == 40
    assert event.audio_position.offset == 16
    assert event.user_data.offset == 24
    assert event.id.offset == 32


# align_words on recorded event lists ----------------------------------------------------------------------


def test_align_words_uses_starts_and_fixes_lengths() -> None:
    text = "Dr. Smith's well-known shop"
    events = [(0, 0), (4, 407), (12, 809), (23, 1280)]
    words = align_words(text, events)
    assert [text[w.char_start : w.char_end] for w in words] == ["Dr", "Smith's", "well-known", "shop"]


def test_align_words_drops_repeated_and_whitespace_events() -> None:
    # What espeak emits for "or 1,234 euros": the number is read as several words, two events share a start
    # and an event points at the space after the token.
    text = "or 1,234 euros"
    events = [(0, 4052), (3, 4166), (4, 4419), (5, 4903), (6, 5547), (6, 5856), (8, 5900), (9, 6118)]
    words = align_words(text, events)
    assert [(text[w.char_start : w.char_end], w.audio_ms) for w in words] == [
        ("or", 4052),
        ("1", 4166),
        (",", 4419),
        ("2", 4903),
        ("34", 5547),
        ("euros", 6118),
    ]


def test_align_words_requires_time_to_move_forward() -> None:
    text = "one two three"
    words = align_words(text, [(0, 0), (4, 0), (8, 300), (20, 400), (-1, 500)])
    assert words == (WordTiming(0, 3, 0), WordTiming(8, 13, 300))
