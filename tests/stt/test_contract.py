"""What every engine behind `SttEngine` does, run over both: the embedded Whisper and Deepgram (loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from app.bench.stt import synthesise_phrases, word_errors
from app.edge.deepgram_server import DeepgramServer, script_words
from providers.mulaw import pcm16_to_ulaw
from providers.stt import create_engine
from providers.stt.base import Final, SttEngine, SttError

# A phrase whose espeak renditions (espeak varies its noise sources call to call) tiny.en decodes within
# one word: measured 10 renditions, word errors 0 or 1 of 8; "next Thursday" went to "third? May?" at times.
TEXT = "Can I change my appointment to Friday morning?"
Factory = Callable[[], Any]


@asynccontextmanager
async def whisper() -> AsyncIterator[SttEngine]:
    engine = create_engine("whisper", workers=1)
    try:
        yield engine
    finally:
        await engine.aclose()


@asynccontextmanager
async def deepgram() -> AsyncIterator[SttEngine]:
    async with DeepgramServer(script_words(TEXT)) as dg:
        engine = create_engine("deepgram", deepgram_api_key="test-key", deepgram_url=dg.url)
        try:
            yield engine
        finally:
            await engine.aclose()


@pytest.fixture(scope="module")
def speech() -> bytes:
    return pcm16_to_ulaw(asyncio.run(synthesise_phrases([TEXT], "en-gb"))[0])


@pytest.mark.parametrize("make", [whisper, deepgram], ids=["whisper", "deepgram"])
def test_a_turn_streamed_in_frames_ends_in_a_timed_final(make: Factory, speech: bytes) -> None:
    async def main() -> None:
        async with make() as engine:
            session = await engine.open("mulaw")
            assert session.encoding == "mulaw"
            for i in range(0, len(speech), 160):
                session.feed(speech[i : i + 160], 2000.0 + i / 8)
            await session.finish()
            await session.finish()  # idempotent
            session.feed(b"\xff" * 160, 99_000.0)  # after finish: dropped
            results = [r async for r in session.results()]
            await session.aclose()
            await session.aclose()
            assert not any(isinstance(r, SttError) for r in results)
            finals = [r for r in results if isinstance(r, Final) and r.text]
            assert finals and finals[-1].speech_final
            text = " ".join(f.text for f in finals)
            assert word_errors(TEXT, text).wer < 0.5
            words = [w for f in finals for w in f.words]
            assert words and all(2000.0 <= w.start_ms <= w.end_ms <= 2000.0 + len(speech) / 8 + 50 for w in words)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_unknown_engine_and_missing_key() -> None:
    with pytest.raises(ValueError):
        create_engine("vosk")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        create_engine("deepgram")
