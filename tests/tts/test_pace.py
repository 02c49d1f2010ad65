"""Pace: every engine can give a slower handle of itself (a clarification is said slower), and the slower audio
is what its word timings describe. The hosted engines against their loopback servers, over real sockets."""

from __future__ import annotations

import asyncio
from typing import Any

from app.edge.elevenlabs_server import ElevenLabsServer
from app.edge.openai_speech_server import SpeechServer
from providers.tts.base import Synthesis, at_pace
from providers.tts.cached import CachedTts, SynthesisCache, cached_tts, espeak_identity
from providers.tts.elevenlabs import ElevenLabsTts
from providers.tts.espeak import EspeakTts
from providers.tts.openai_speech import OpenAiSpeechTts

TEXT = "Our opening hours are nine to five on weekdays."
KEY = "pace-test-key-0123456789"


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_espeak_at_a_slower_pace_takes_longer_and_its_words_fall_later() -> None:
    async def scenario() -> tuple[Synthesis, Synthesis]:
        engine = EspeakTts()
        return await engine.synthesize(TEXT), await at_pace(engine, 0.8).synthesize(TEXT)

    usual, slower = _run(scenario())
    assert slower.duration_ms > 1.15 * usual.duration_ms
    assert slower.words[-1].audio_ms > 1.15 * usual.words[-1].audio_ms
    assert at_pace(EspeakTts(rate_wpm=100), 0.1).rate_wpm == 80  # espeak's floor, not an error mid-call


def test_pace_one_and_an_engine_without_pace_are_the_engine_itself() -> None:
    engine = EspeakTts()

    class Plain:
        async def synthesize(self, text: str) -> Synthesis:
            raise AssertionError("not called")

        async def aclose(self) -> None:
            return None

    plain = Plain()
    assert at_pace(engine, 1.0) is engine
    assert at_pace(plain, 0.8) is plain
    cached = CachedTts(plain, "plain", SynthesisCache(1 << 20))
    assert at_pace(cached, 0.8) is cached  # nothing slower to put behind the cache


def test_a_cached_engine_keeps_the_slower_audio_under_its_own_key() -> None:
    async def scenario() -> tuple[Synthesis, Synthesis, Synthesis]:
        engine = cached_tts(EspeakTts(), 4.0)
        usual = await engine.synthesize(TEXT)
        slower = await at_pace(engine, 0.8).synthesize(TEXT)
        again = await engine.synthesize(TEXT)
        return usual, slower, again

    usual, slower, again = _run(scenario())
    assert again is usual  # the cache's entry for the usual pace was not overwritten by the slower one
    assert slower.duration_ms > 1.15 * usual.duration_ms
    assert espeak_identity(EspeakTts().paced(0.8)) != espeak_identity(EspeakTts())


def test_openai_speech_sends_speed_and_gets_slower_audio() -> None:
    async def scenario() -> tuple[Synthesis, Synthesis, list[Any]]:
        async with SpeechServer(api_key=KEY) as server:
            tts = OpenAiSpeechTts(server.base_url, KEY, response_format="pcm")
            usual = await tts.synthesize(TEXT)
            slower = await at_pace(tts, 0.8).synthesize(TEXT)
            await tts.aclose()
            return usual, slower, [r.body for r in server.requests]

    usual, slower, bodies = _run(scenario())
    assert "speed" not in bodies[0] and bodies[1]["speed"] == 0.8
    assert slower.duration_ms > 1.15 * usual.duration_ms


def test_elevenlabs_sends_voice_settings_speed_on_a_handle_closed_with_its_parent() -> None:
    async def scenario() -> tuple[Synthesis, Synthesis, list[float], list[dict[str, Any]]]:
        async with ElevenLabsServer(api_key=KEY) as server:
            tts = ElevenLabsTts(KEY, "voice1", url=server.url, warm_connections=0)
            usual = await tts.synthesize(TEXT)
            paced = at_pace(tts, 0.8)
            assert at_pace(tts, 0.8) is paced  # one handle per pace, not a new one per reply
            slower = await paced.synthesize(TEXT)
            await tts.aclose()
            inits = [c.received[0] for c in server.connections]
            return usual, slower, [c.speed for c in server.connections], inits

    usual, slower, speeds, inits = _run(scenario())
    assert speeds == [1.0, 0.8]
    assert "speed" not in inits[0]["voice_settings"] and inits[1]["voice_settings"]["speed"] == 0.8
    assert slower.duration_ms > 1.15 * usual.duration_ms
