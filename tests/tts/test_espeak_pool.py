"""EspeakTts(processes=N): the same synthesis in a pool of espeak-ng worker processes, behind the same interface."""

from __future__ import annotations

import asyncio
import os

from providers.tts.base import Synthesis
from providers.tts.espeak import EspeakTts

TEXTS = [f"Caller number {i} asked about order {i}, and it ships on Friday." for i in range(6)]


def test_a_pool_gives_each_request_its_own_speech_and_reports_queue_waits() -> None:
    waits: list[float] = []

    async def scenario() -> tuple[list[Synthesis], list[Synthesis], set[int]]:
        pooled = EspeakTts(processes=2, on_wait=waits.append)
        threaded = EspeakTts()
        got = await asyncio.gather(*(pooled.synthesize(t) for t in TEXTS))
        reference = [await threaded.synthesize(t) for t in TEXTS]
        from providers.tts import espeak

        pids = set(await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(espeak._get_pool(2), os.getpid)
                                           for _ in range(8))))
        return list(got), reference, pids

    got, reference, pids = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert os.getpid() not in pids  # the work ran in other processes
    assert len(waits) == len(TEXTS) and all(w >= 0 for w in waits)
    for mine, theirs in zip(got, reference, strict=True):
        # Each answer is its own request's speech (espeak's length varies by a few ms from run to run).
        assert mine.text == theirs.text and mine.sample_rate == 8000
        assert abs(mine.duration_ms - theirs.duration_ms) < 0.05 * theirs.duration_ms
        assert [(w.char_start, w.char_end) for w in mine.words] == [(w.char_start, w.char_end) for w in theirs.words]
        assert all(abs(a.audio_ms - b.audio_ms) < 60 for a, b in zip(mine.words, theirs.words, strict=True))


def test_blank_text_never_reaches_the_pool() -> None:
    synthesis = asyncio.run(EspeakTts(processes=3).synthesize("  "))
    assert synthesis.duration_ms == 0 and synthesis.words == ()
    from providers.tts import espeak

    assert 3 not in espeak._pools
