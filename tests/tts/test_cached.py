"""providers/tts/cached.py over the real espeak-ng engine.

`Counting` is the real `EspeakTts` with a tally of the syntheses that reached it, so "synthesised once" is
counted at the engine, not inferred from the cache's own counters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from providers.errors import ProviderError
from providers.tts.base import Synthesis
from providers.tts.cached import CachedTts, SynthesisCache, cached_tts, entry_bytes, espeak_identity
from providers.tts.espeak import EspeakTts

T = TypeVar("T")

GREETING = "Hello, thanks for calling. You can interrupt me at any time."
MIB = 1024 * 1024


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Counting:
    """The real engine, counting what reaches it."""

    def __init__(self, engine: EspeakTts) -> None:
        self.engine = engine
        self.texts: list[str] = []

    async def synthesize(self, text: str) -> Synthesis:
        self.texts.append(text)
        return await self.engine.synthesize(text)

    async def aclose(self) -> None:
        await self.engine.aclose()


def cached(max_bytes: int = 8 * MIB, engine: EspeakTts | None = None) -> tuple[CachedTts, Counting]:
    engine = engine or EspeakTts()
    counting = Counting(engine)
    return CachedTts(counting, espeak_identity(engine), SynthesisCache(max_bytes)), counting


def test_a_repeated_text_is_synthesised_once_with_its_alignment() -> None:
    tts, engine = cached()

    async def go() -> tuple[Synthesis, Synthesis, Synthesis]:
        first = await tts.synthesize(GREETING)
        second = await tts.synthesize(GREETING)
        fresh = await EspeakTts().synthesize(GREETING)
        return first, second, fresh

    first, second, fresh = run(go())
    assert engine.texts == [GREETING]
    assert second is first
    # The kept audio and alignment are the engine's for this text. espeak-ng's output varies a little from one
    # synthesis to the next (the same words, a few ms apart), so a fresh one is compared, not matched.
    assert first.text == GREETING and first.words
    assert [(w.char_start, w.char_end) for w in first.words] == [(w.char_start, w.char_end) for w in fresh.words]
    assert abs(first.duration_ms - fresh.duration_ms) < 0.05 * fresh.duration_ms
    assert first.sample_rate == fresh.sample_rate == 8000
    stats = tts.cache.stats
    assert (stats.misses, stats.hits, stats.shared, stats.entries) == (1, 1, 0, 1)
    assert stats.bytes == entry_bytes(first) >= first.pcm.nbytes


def test_concurrent_requests_share_one_synthesis() -> None:
    tts, engine = cached()

    async def go() -> list[Synthesis]:
        return await asyncio.gather(*(tts.synthesize(GREETING) for _ in range(20)))

    results = run(go())
    assert engine.texts == [GREETING]
    assert all(r is results[0] for r in results)
    assert (tts.cache.stats.misses, tts.cache.stats.shared) == (1, 19)


def test_a_cancelled_waiter_does_not_cancel_the_shared_synthesis() -> None:
    tts, engine = cached()

    async def go() -> tuple[bool, Synthesis]:
        first = asyncio.create_task(tts.synthesize(GREETING))
        await asyncio.sleep(0)  # the synthesis has started
        others = [asyncio.create_task(tts.synthesize(GREETING)) for _ in range(3)]
        await asyncio.sleep(0)
        first.cancel()
        results = await asyncio.gather(*others)
        assert all(r is results[0] for r in results)
        return first.cancelled(), results[0]

    was_cancelled, result = run(go())
    assert was_cancelled
    assert engine.texts == [GREETING]
    assert (tts.identity, GREETING) in tts.cache and result.duration_ms > 1000


def test_a_failure_reaches_every_waiter_and_is_not_kept() -> None:
    tts, engine = cached(engine=EspeakTts(voice="zz-no-such-voice"))

    async def go() -> list[Synthesis | BaseException]:
        return await asyncio.gather(*(tts.synthesize(GREETING) for _ in range(3)), return_exceptions=True)

    results = run(go())
    assert all(isinstance(r, ProviderError) for r in results)
    assert len(engine.texts) == 1 and tts.cache.stats.entries == 0
    with pytest.raises(ProviderError):
        run(tts.synthesize(GREETING))  # tried again, not served from the cache
    assert len(engine.texts) == 2


def test_voice_and_rate_are_part_of_the_key() -> None:
    cache = SynthesisCache(8 * MIB)
    us = CachedTts(EspeakTts("en-us"), espeak_identity(EspeakTts("en-us")), cache)
    fast = EspeakTts("en-us", rate_wpm=300)
    quick = CachedTts(fast, espeak_identity(fast), cache)

    async def go() -> tuple[Synthesis, Synthesis]:
        return await us.synthesize(GREETING), await quick.synthesize(GREETING)

    slow_one, fast_one = run(go())
    assert cache.stats.misses == 2 and cache.stats.entries == 2
    assert fast_one.duration_ms < 0.8 * slow_one.duration_ms


def test_bounded_by_bytes_least_recent_first() -> None:
    texts = [f"This is sentence number {n}." for n in range(1, 5)]
    probe, _ = cached()
    sizes = [entry_bytes(run(probe.synthesize(t))) for t in texts]
    budget = sum(sizes[:3])  # room for three of the four
    tts, engine = cached(max_bytes=budget)

    async def go() -> None:
        for text in texts:
            await tts.synthesize(text)

    run(go())
    stats = tts.cache.stats
    assert stats.bytes <= budget and stats.evictions >= 1
    assert (tts.identity, texts[0]) not in tts.cache  # the least recent went first
    assert (tts.identity, texts[-1]) in tts.cache
    run(tts.synthesize(texts[0]))
    assert engine.texts.count(texts[0]) == 2


def test_one_off_sentences_do_not_push_out_a_line_every_call_repeats() -> None:
    one_offs = [f"Your order number {n} ships on day {n + 3}." for n in range(12)]
    probe, _ = cached()
    greeting_bytes = entry_bytes(run(probe.synthesize(GREETING)))
    tts, engine = cached(max_bytes=3 * greeting_bytes)

    async def go() -> None:
        await tts.synthesize(GREETING)
        await tts.synthesize(GREETING)  # a second call: the greeting is protected
        for text in one_offs:  # an LLM's replies, each seen once: far more bytes than the budget
            await tts.synthesize(text)
        await tts.synthesize(GREETING)

    run(go())
    assert engine.texts.count(GREETING) == 1
    assert tts.cache.stats.evictions > 0 and tts.cache.stats.bytes <= 3 * greeting_bytes


def test_an_entry_larger_than_the_budget_is_returned_but_not_kept() -> None:
    tts, engine = cached(max_bytes=1000)
    result = run(tts.synthesize(GREETING))
    assert result.duration_ms > 1000 and tts.cache.stats.entries == 0
    run(tts.synthesize(GREETING))
    assert engine.texts == [GREETING, GREETING]


def test_kept_audio_is_read_only() -> None:
    tts, _ = cached()
    result = run(tts.synthesize(GREETING))
    with pytest.raises(ValueError):
        result.pcm[0] = 1


def test_off_and_empty_text_pass_through() -> None:
    engine = EspeakTts()
    assert cached_tts(engine, 0) is engine
    on = cached_tts(engine, 1.5)
    assert isinstance(on, CachedTts) and on.cache.max_bytes == int(1.5 * MIB)
    tts, counting = cached()
    assert run(tts.synthesize("  ")).pcm.size == 0
    assert counting.texts == ["  "] and tts.cache.stats.entries == 0
