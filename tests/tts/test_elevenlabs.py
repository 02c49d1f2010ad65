"""providers/tts/elevenlabs.py: literal wire data through the pure parts, then the engine against the loopback
server (app/edge/elevenlabs_server.py) over a real WebSocket, with espeak-ng speech behind it."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest

from app.edge.elevenlabs_server import ElevenLabsServer
from providers.errors import ProviderError, ProviderTimeout
from providers.mulaw import pcm16_to_ulaw, ulaw_to_pcm16
from providers.tts.base import Synthesis
from providers.tts.elevenlabs import (
    Assembler,
    AudioChunk,
    ElevenLabsTts,
    ErrorReply,
    FinalReply,
    OtherReply,
    align_chars,
    parse_reply,
    stream_url,
    words_from_chars,
)

T = TypeVar("T")
KEY = "xi-secret-0123456789abcdef"
TEXT = "Sure, I can help with that. Your order left our warehouse yesterday afternoon."


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 20))


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll `predicate` until it holds (the loopback servers record what happened; they have no events)."""
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("condition not met")


def engine(url: str, **kw: Any) -> ElevenLabsTts:
    return ElevenLabsTts(KEY, "voice/1", url=url, **kw)


# ---- wire data, no socket -------------------------------------------------------------------------------------


def test_the_url_asks_for_mulaw_at_8khz_with_alignment_and_never_carries_the_key() -> None:
    url = stream_url("wss://api.elevenlabs.io/", "voice/1", "eleven_flash_v2_5")
    assert url.startswith("wss://api.elevenlabs.io/v1/text-to-speech/voice%2F1/stream-input?")
    assert "output_format=ulaw_8000" in url and "model_id=eleven_flash_v2_5" in url
    assert KEY not in repr(engine("wss://x")) and KEY not in engine("wss://x").identity


def test_replies_in_either_spelling_are_parsed() -> None:
    audio = base64.b64encode(b"\xff" * 16).decode()
    camel = parse_reply(json.dumps({"audio": audio, "isFinal": None, "alignment": {
        "chars": ["H", "i"], "charStartTimesMs": [0, 100], "charDurationsMs": [100, 150]}}))
    snake = parse_reply(json.dumps({"audio": audio, "normalizedAlignment": {
        "chars": ["H", "i"], "char_start_times_ms": [0, 100], "chars_durations_ms": [100, 150]}}))
    for reply in (camel, snake):
        assert isinstance(reply, AudioChunk) and reply.ulaw == b"\xff" * 16
        assert reply.alignment is not None and reply.alignment.starts_ms == (0.0, 100.0)
        assert reply.alignment.durations_ms == (100.0, 150.0)
    assert isinstance(parse_reply('{"isFinal": true}'), FinalReply)
    assert isinstance(parse_reply('{"audio": null, "isFinal": true}'), FinalReply)
    error = parse_reply('{"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}')
    assert isinstance(error, ErrorReply) and "invalid_api_key" in error.message
    assert isinstance(parse_reply("not json"), ErrorReply)
    assert isinstance(parse_reply('{"audio": "!!!not base64"}'), ErrorReply)
    assert parse_reply('{"something_new": 1}') == OtherReply(("something_new",))


def test_alignment_times_are_relative_to_their_own_message() -> None:
    # Two messages of 100 ms of audio each; the second's times start at 0 again (the reference says so).
    silence = pcm16_to_ulaw(np.zeros(800, dtype=np.int16))
    assembler = Assembler()
    for chars, starts in ((["H", "i", " "], [0, 40, 90]), (["y", "o", "u"], [10, 50, 80])):
        reply = parse_reply(json.dumps({"audio": base64.b64encode(silence).decode(), "alignment": {
            "chars": chars, "charStartTimesMs": starts, "charDurationsMs": [40, 30, 10]}}))
        assert isinstance(reply, AudioChunk)
        assembler.add(reply)
    synthesis = assembler.synthesis("Hi you")
    assert synthesis.duration_ms == 200.0
    assert [(w.char_start, w.char_end, w.audio_ms) for w in synthesis.words] == [(0, 2, 0.0), (3, 6, 110.0)]
    assert synthesis.words[1].audio_end_ms == 190.0  # its last character's end


def test_vendor_chars_are_matched_to_our_text_skipping_what_differs() -> None:
    text = "Call 911, now!"
    # The vendor drops the comma, adds a space, and a character we never sent shows up.
    chars = ["C", "a", "l", "l", " ", " ", "9", "1", "1", "#", "n", "o", "w", "!"]
    starts = [float(10 * i) for i in range(len(chars))]
    times = align_chars(text, chars, starts, [10.0] * len(chars))
    assert times[0] == (0.0, 10.0) and times[5] == (60.0, 70.0) and times[8] is None  # the comma
    words = words_from_chars(text, times)
    assert [(w.char_start, w.char_end, w.audio_ms) for w in words] == [(0, 4, 0.0), (5, 8, 60.0), (10, 13, 100.0)]


# ---- the engine against the loopback server -------------------------------------------------------------------


@pytest.mark.parametrize("keys", ["camel", "snake"])
def test_speech_and_alignment_over_the_wire(keys: str) -> None:
    async def scenario() -> tuple[Synthesis, Synthesis, ElevenLabsServer]:
        async with ElevenLabsServer(api_key=KEY, alignment_keys=keys, chunk_chars=25) as server:  # type: ignore[arg-type]
            got = await engine(server.url).synthesize(TEXT)
            return got, server.connections[0].syntheses[0], server

    got, reference, server = run(scenario())
    conn, spare = server.connections  # the sentence's, and the warm spare opened for the next one
    assert [m["text"] for m in spare.received] == [" "] and spare.generated == []
    # What the service asks for: the key in the header, the path, BOS, the text (ending in a space) with
    # flush, then the end of input.
    assert conn.headers["xi-api-key"] == KEY and conn.voice_id == "voice/1"
    assert conn.params["output_format"] == "ulaw_8000"
    assert [m["text"] for m in conn.received] == [" ", TEXT + " ", ""]
    assert conn.received[1]["flush"] is True and "voice_settings" in conn.received[0]
    assert conn.ended == "final" and conn.audio_messages >= 3  # several messages: times offset per message
    # The audio is the speech the server made (espeak's output varies a little from run to run, so not a
    # fresh synthesis), through mu-law at 8 kHz.
    assert got.sample_rate == 8000
    np.testing.assert_array_equal(got.pcm, ulaw_to_pcm16(pcm16_to_ulaw(reference.pcm)))
    # The alignment puts every word where espeak said it is, so a cut lands on the same character.
    assert len(got.words) == len(reference.words) == len(TEXT.split())
    for mine, theirs in zip(got.words, reference.words, strict=True):
        assert (mine.char_start, mine.char_end) == (theirs.char_start, theirs.char_end)
        assert abs(mine.audio_ms - theirs.audio_ms) <= 2.0
    for ms in np.arange(0.0, got.duration_ms, 137.0):
        assert abs(got.char_offset_at(float(ms)) - reference.char_offset_at(float(ms))) <= 2, ms


def test_blank_text_opens_no_connection() -> None:
    async def scenario() -> tuple[Synthesis, int]:
        async with ElevenLabsServer(api_key=KEY) as server:
            return await engine(server.url).synthesize("   "), len(server.connections)

    synthesis, connections = run(scenario())
    assert synthesis.duration_ms == 0 and connections == 0


def failure(mode: str = "ok", *, key: str = KEY, timeout_s: float = 5.0, **server_kw: Any) -> ProviderError:
    async def scenario() -> ProviderError:
        async with ElevenLabsServer(api_key=KEY, mode=mode, **server_kw) as server:
            tts = ElevenLabsTts(key, "voice1", url=server.url, idle_timeout_s=timeout_s)
            with pytest.raises(ProviderError) as info:
                await tts.synthesize(TEXT)
            return info.value

    return run(scenario())


def test_a_wrong_key_is_a_lasting_error_that_never_shows_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "xi-wrong-key-fedcba9876543210"
    closed = failure(key=wrong)
    refused = failure(key=wrong, bad_key_handshake=True)
    assert not closed.retryable and "1008" in str(closed) and "Invalid API key" in str(closed)
    assert not refused.retryable and "401" in str(refused)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (wrong, KEY):
        assert secret not in str(closed) and secret not in str(refused) and secret not in logged


@pytest.mark.parametrize(("mode", "retryable", "words"), [
    ("http_error=503", True, "503"),
    ("http_error=429", True, "429"),
    ("http_error=403", False, "403"),
    ("policy_close", False, "Quota exceeded"),
    ("error_message", False, "generation_failed"),
    ("drop_after=1", True, "dropped"),
])
def test_vendor_failures_are_provider_errors(mode: str, retryable: bool, words: str) -> None:
    error = failure(mode)
    assert error.retryable is retryable and words in str(error), str(error)
    assert not isinstance(error, ProviderTimeout)


def test_a_stall_mid_reply_times_out_within_the_idle_bound() -> None:
    started = time.monotonic()
    error = failure("stall_after=1", timeout_s=0.3)
    assert isinstance(error, ProviderTimeout) and error.retryable
    assert time.monotonic() - started < 3.0


def test_no_server_is_a_retryable_error() -> None:
    async def scenario() -> ProviderError:
        server = ElevenLabsServer()
        await server.start()
        url = server.url
        await server.stop()
        with pytest.raises(ProviderError) as info:
            await engine(url).synthesize(TEXT)
        return info.value

    assert run(scenario()).retryable


def test_cancelling_a_synthesis_drops_the_socket_at_once() -> None:
    async def scenario() -> tuple[float, str]:
        async with ElevenLabsServer(api_key=KEY, first_audio_delay_s=1.0) as server:
            task = asyncio.create_task(engine(server.url).synthesize(TEXT))
            await until(lambda: bool(server.connections and server.connections[0].syntheses))  # audio held back
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            took = time.monotonic() - started
            await until(lambda: server.connections[0].ended != "")
            return took, server.connections[0].ended

    took, ended = run(scenario())
    assert took < 0.1, took  # no close handshake awaited on the barge-in path
    assert ended == "client"


def test_the_next_sentence_starts_on_a_warm_connection() -> None:
    async def scenario() -> tuple[list[Synthesis], ElevenLabsTts, ElevenLabsServer]:
        async with ElevenLabsServer(api_key=KEY) as server:
            tts = engine(server.url)
            first = await tts.synthesize("Hello there.")
            # The spare is open and initialised on the client's side too: the server sees the connection (and even
            # its opening message) before the engine has put it among its spares.
            await until(lambda: tts.spares == 1)
            second = await tts.synthesize("How can I help?")
            await tts.aclose()
            await until(lambda: all(c.ended for c in server.connections))
            return [first, second], tts, server

    (first, second), tts, server = run(scenario())
    assert tts.warm_used == 1
    assert [c.generated for c in server.connections] == [["Hello there. "], ["How can I help? "], []]
    assert [c.ended for c in server.connections] == ["final", "final", "client"]  # aclose dropped the last spare
    assert first.duration_ms > 0 and second.duration_ms > 0 and len(second.words) == 4


def test_a_stale_spare_is_not_used() -> None:
    async def scenario() -> tuple[ElevenLabsTts, ElevenLabsServer]:
        async with ElevenLabsServer(api_key=KEY) as server:
            tts = engine(server.url, warm_max_age_s=0.05)
            await tts.synthesize("Hello there.")
            await until(lambda: len(server.connections) == 2)
            await asyncio.sleep(0.1)
            await tts.synthesize("How can I help?")
            await tts.aclose()
            await until(lambda: all(c.ended for c in server.connections))
            return tts, server

    tts, server = run(scenario())
    assert tts.warm_used == 0
    assert [c.generated for c in server.connections[:3]] == [["Hello there. "], [], ["How can I help? "]]
    assert server.connections[1].ended == "client"


def test_a_spare_refused_before_it_answers_is_retried_once_then_the_error_stands() -> None:
    async def scenario() -> tuple[ProviderError, ElevenLabsServer]:
        async with ElevenLabsServer(api_key=KEY) as server:
            tts = engine(server.url)
            await tts.synthesize("Hello there.")
            # the spare is ready once it has said its opening " " (under load the handshake can still be going)
            await until(lambda: len(server.connections) == 2 and bool(server.connections[1].received))
            server.mode = "policy_close"
            with pytest.raises(ProviderError) as info:
                await tts.synthesize("How can I help?")
            await tts.aclose()
            return info.value, server

    error, server = run(scenario())
    assert not error.retryable and "1008" in str(error)
    tried = [c for c in server.connections if [m["text"] for m in c.received] == [" ", "How can I help? "]]
    assert [c.ended for c in tried] == ["policy", "policy"]  # the spare, then one fresh connection
