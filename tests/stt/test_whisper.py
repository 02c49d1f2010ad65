"""The embedded recogniser on real audio: synthesised caller phrases and a recorded speech clip, 8 kHz mu-law."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from app.bench.stt import PHRASE_VOICE, PHRASES, load_labelled, read_wav, synthesise_phrases, total, word_errors
from providers.errors import ProviderError
from providers.mulaw import pcm16_to_ulaw
from providers.stt.base import Final, Partial, SttResult
from providers.stt.whisper import WhisperStt

CLIPS = Path(__file__).resolve().parents[1] / "corpus" / "speech"
JFK = CLIPS / "oration_01_jfk.wav"  # jfk.flac 0.20-4.48 s
JFK_TEXT = "and so my fellow americans ask not"
# Every other test phrase (ten of twenty), to keep the suite fast; the bench scores all of them.
SUBSET = PHRASES[::2]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture(scope="module")
def engine() -> Iterator[WhisperStt]:
    stt = WhisperStt(workers=1, cpu_threads=1)
    yield stt
    asyncio.run(stt.aclose())


@pytest.fixture(scope="module")
def spoken() -> list[np.ndarray[Any, Any]]:
    return asyncio.run(synthesise_phrases(SUBSET, PHRASE_VOICE))


def frames(pcm: np.ndarray[Any, Any]) -> list[bytes]:
    data = pcm16_to_ulaw(pcm)
    return [data[i : i + 160] for i in range(0, len(data), 160)]


def test_spoken_phrases_word_error_is_bounded(engine: WhisperStt, spoken: list[Any]) -> None:
    async def main() -> None:
        scored = []
        for text, pcm in zip(SUBSET, spoken, strict=True):
            final = await engine.transcribe(pcm16_to_ulaw(pcm), "mulaw")
            scored.append(word_errors(text, final.text))
        errors = sum(scored[1:], scored[0])
        print(f"\nspoken phrases ({PHRASE_VOICE}): WER {errors.wer:.1%} ({errors.errors}/{errors.ref_words})")
        # The bench measures about 30% on all twenty (espeak-ng at 8 kHz is hard for tiny.en); a broken engine,
        # silence or the wrong language gives ~100%.
        assert errors.wer < 0.5
        assert sum(e.errors == 0 for e in scored) >= 1  # espeak varies run to run, and so do the exact ones

    run(main())


# The short encoder window writes "and so am i fell america ask not" for this clip (4 errors in 7 words), the full
# one gets it right on some CPUs: on single clips the window size moves tiny.en's words either way (over the corpus
# pool's labelled digits the short window made fewer errors; see providers/stt/whisper.py), and so do the CPU's
# int8 kernels: on an AMD EPYC without AVX-512 the full window writes "And so am I fellow America. Ask not."
# (3 errors in 7). A broken engine, silence or the wrong language gives about 100%.
@pytest.mark.parametrize(("window", "max_wer"), [("full", 0.45), ("short", 0.6)])
def test_recorded_speech_with_word_times(window: Literal["short", "full"], max_wer: float) -> None:
    pcm = read_wav(JFK)

    async def main() -> Final:
        stt = WhisperStt(workers=1, cpu_threads=1, window=window)
        try:
            return await stt.transcribe(pcm16_to_ulaw(pcm), "mulaw", at_ms=60_000.0)
        finally:
            await stt.aclose()

    final = run(main())
    errors = word_errors(JFK_TEXT, final.text)
    print(f"\nJFK ({window} window): {final.text!r}, WER {errors.wer:.1%} ({errors.errors}/{errors.ref_words})")
    assert errors.wer <= max_wer
    assert final.speech_final and final.start_ms == 60_000.0
    assert final.end_ms == pytest.approx(60_000.0 + pcm.shape[0] / 8.0)
    starts = [w.start_ms for w in final.words]
    assert starts == sorted(starts) and len(final.words) >= 5
    assert all(60_000.0 <= w.start_ms <= w.end_ms <= final.end_ms + 50 for w in final.words)
    assert all(0.0 <= w.confidence <= 1.0 for w in final.words)
    # "Americans" is said about 1.3-2.0 s into this clip.
    americans = [w for w in final.words if w.text.lower().startswith("americ")]
    assert americans and 60_900.0 < americans[0].start_ms < 62_300.0


POOL = Path(__file__).resolve().parents[3] / "shared" / "corpus-pool"


@pytest.mark.skipif(not (POOL / "manifest.csv").exists(), reason="the corpus pool is not beside the repository")
def test_recorded_speech_from_the_pool(engine: WhisperStt) -> None:
    items = [i for i in load_labelled(POOL) if "oration" in i[0]]  # the JFK cuts: 4 items, 22 words

    async def main() -> list[Any]:
        return [word_errors(ref, (await engine.transcribe(pcm16_to_ulaw(pcm))).text) for _, ref, pcm in items]

    scored = run(main())
    errors = sum(scored[1:], scored[0])
    print(f"\npool JFK cuts: WER {errors.wer:.1%} ({errors.errors}/{errors.ref_words}) over {len(items)} items")
    assert len(items) == 4 and errors.ref_words == 22
    assert errors.wer < 0.3


def test_session_feeds_frames_and_transcribes_off_the_loop(engine: WhisperStt, spoken: list[Any]) -> None:
    async def main() -> None:
        session = await engine.open("mulaw")
        for i, frame in enumerate(frames(spoken[0])):
            session.feed(frame, 10_000.0 + 20 * i)
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        started = time.perf_counter()
        await session.finish()
        results: list[SttResult] = [r async for r in session.results()]
        took = time.perf_counter() - started
        stop.set()
        await tick
        await session.aclose()
        assert len(results) == 1 and isinstance(results[0], Final)
        final = results[0]
        assert final.speech_final and final.start_ms == 10_000.0
        assert word_errors(SUBSET[0], final.text).wer < 0.5
        assert final.words and final.words[0].start_ms >= 10_000.0
        # The loop kept ticking while the model ran (a blocked loop shows one gap as long as the transcription).
        assert took > 0.1 and max(gaps) < max(0.1, took / 2)

    run(main())


def test_partials_on_idle_capacity_then_final(spoken: list[Any]) -> None:
    async def main() -> None:
        stt = WhisperStt(partial_interval_ms=1000.0)
        session = await stt.open("mulaw")
        chunks = frames(spoken[0])
        for i, frame in enumerate(chunks[:60]):  # 1.2 s
            session.feed(frame, 20.0 * i)
        results = session.results()
        first = await anext(results)
        assert isinstance(first, Partial) and first.text and first.start_ms == 0.0
        for i, frame in enumerate(chunks[60:], start=60):
            session.feed(frame, 20.0 * i)
        await session.finish()
        rest = [r async for r in results]
        await session.aclose()
        await stt.aclose()
        assert isinstance(rest[-1], Final) and len(rest[-1].text) > len(first.text)

    run(main())


def test_busy_pool_refuses_instead_of_queueing_without_bound(spoken: list[Any]) -> None:
    async def main() -> None:
        stt = WhisperStt(workers=1, max_pending=1)
        try:
            audio = pcm16_to_ulaw(spoken[1])
            first = asyncio.create_task(stt.transcribe(audio))
            await asyncio.sleep(0)
            with pytest.raises(ProviderError) as refused:
                await stt.transcribe(audio)
            assert refused.value.retryable and "busy" in str(refused.value)
            assert (await first).text
        finally:
            await stt.aclose()

    run(main())


def test_empty_turn_and_aclose(engine: WhisperStt) -> None:
    async def main() -> None:
        session = await engine.open("pcm16")
        await session.finish()
        assert [r async for r in session.results()] == [Final("", (), 0.0, 0.0, True)]
        dropped = await engine.open("mulaw")
        dropped.feed(b"\xff" * 160, 0.0)
        await dropped.aclose()
        assert [r async for r in dropped.results()] == []

    run(main())


def test_word_error_counts() -> None:
    e = word_errors("book a table for two", "Book the table for 2 please.")
    assert (e.ref_words, e.substitutions, e.deletions, e.insertions) == (5, 1, 0, 1)
    assert total([]).ref_words == 0


def test_decoding_loops_and_punctuation_only_segments_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import providers.stt.whisper as whisper

    def seg(text: str, ratio: float) -> SimpleNamespace:
        word = SimpleNamespace(word=" " + text.split()[0], start=0.1, end=0.4, probability=0.9)
        return SimpleNamespace(text=" " + text, compression_ratio=ratio, words=[word])

    def passes(model: Any, audio: Any, decode: Any, window: Any, hint: Any = None, full: bool = False) -> Any:
        assert full and hint is None  # _Decode(window=None): the full window, no hint
        return [seg("Yes! Yes! Yes! Yes! Yes! Yes! Yes! Yes!", 29.4), seg(".", 0.1), seg("No, stop.", 0.9)]

    monkeypatch.setattr(whisper, "_window_segments", passes)
    final = whisper._recognise(object(), np.ones(8000, dtype=np.int16), 500.0, whisper._Decode(window=None))
    assert final.text == "No, stop."
    assert [w.text for w in final.words] == ["No,"] and final.words[0].start_ms == 600.0
