"""providers/tts/openai_speech.py: the pure parts on literal data and real speech, then the engine against the
loopback `/v1/audio/speech` (app/edge/openai_speech_server.py) over real sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest

from app.edge.openai_speech_server import SpeechServer, masked, wav_header
from providers.errors import ProviderError, ProviderTimeout
from providers.tts.base import Synthesis
from providers.tts.espeak import EspeakTts
from providers.tts.openai_speech import OpenAiSpeechTts, decode_pcm, decode_wav, error_message, estimate_words

T = TypeVar("T")
KEY = "sk-test-0123456789abcdefABCDEF"
TEXT = "We are open from nine to five on weekdays, and from ten to two on Saturdays."
SENTENCES = [
    "Sure, I can help with that. Your order left our warehouse yesterday afternoon.",
    TEXT,
    "I have cancelled the appointment for Friday; you will get a confirmation by email.",
    "The driver usually arrives between nine and eleven in the morning.",
    "Thanks for waiting, I found your account.",
]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 20))


# ---- pure parts ------------------------------------------------------------------------------------------------


def test_pcm_and_streamed_wav_bodies_decode_to_the_same_samples() -> None:
    samples = np.array([0, 1, -1, 32767, -32768, 1234], dtype=np.int16)
    raw = samples.astype("<i2").tobytes()
    pcm, rate = decode_pcm(raw + b"\x07")  # a trailing odd byte is dropped
    assert rate == 24_000 and np.array_equal(pcm, samples)
    wav, wav_rate = decode_wav(wav_header(16_000) + raw)  # sizes are the 0xFFFFFFFF placeholder
    assert wav_rate == 16_000 and np.array_equal(wav, samples)
    stereo = bytearray(wav_header(16_000))
    stereo[22:24] = struct.pack("<H", 2)
    with pytest.raises(ValueError):
        decode_wav(bytes(stereo) + raw)
    with pytest.raises(ValueError):
        decode_wav(b"ID3" + raw)


def test_error_bodies_become_one_short_line() -> None:
    body = json.dumps({"error": {"message": "Rate limit\nreached", "type": "requests", "code": None}}).encode()
    assert error_message(429, body) == "openai speech: HTTP 429: Rate limit reached"
    assert error_message(502, b"<html>bad gateway</html>") == "openai speech: HTTP 502: <html>bad gateway</html>"
    assert len(error_message(500, json.dumps({"error": {"message": "x" * 5000}}).encode())) < 260


def test_estimated_word_timings_follow_the_real_ones() -> None:
    """Timings estimated from espeak's audio alone against espeak's own word events: the heard prefix at every
    50 ms is off by about one character on average (measured 1.3 mean, 4 p95 over these five sentences)."""

    async def both() -> list[tuple[Synthesis, Synthesis]]:
        tts = EspeakTts()
        out = []
        for text in SENTENCES:
            real = await tts.synthesize(text)
            guess = Synthesis(text=text, pcm=real.pcm, sample_rate=8000,
                              words=estimate_words(text, real.pcm, 8000))
            out.append((real, guess))
        return out

    errors = []
    for real, guess in run(both()):
        assert [w.char_start for w in guess.words] == sorted({w.char_start for w in guess.words})
        assert guess.char_offset_at(0.0) == 0 and guess.char_offset_at(real.duration_ms) == len(real.text)
        for ms in np.arange(0.0, real.duration_ms, 50.0):
            errors.append(abs(guess.char_offset_at(float(ms)) - real.char_offset_at(float(ms))))
    assert float(np.mean(errors)) <= 2.0, np.mean(errors)
    assert float(np.percentile(errors, 95)) <= 6.0, np.percentile(errors, 95)


def test_silence_or_no_words_gives_no_timings() -> None:
    assert estimate_words("hello there", np.zeros(8000, dtype=np.int16), 8000) == ()
    assert estimate_words("  ", np.full(8000, 3000, dtype=np.int16), 8000) == ()


# ---- the engine against the loopback server -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
def test_speech_over_http_is_resampled_to_8khz_with_estimated_timings(fmt: str) -> None:
    async def scenario() -> tuple[Synthesis, SpeechServer, Synthesis]:
        async with SpeechServer(api_key=KEY, chunk_ms=60.0) as server:
            tts = OpenAiSpeechTts(server.base_url, KEY, model="tts-1", voice="nova", response_format=fmt)
            got = await tts.synthesize(TEXT)
            await tts.aclose()
            reference = await EspeakTts().synthesize(TEXT)
            return got, server, reference

    got, server, reference = run(scenario())
    [request] = server.requests
    assert request.method == "POST" and request.path == "/v1/audio/speech"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body == {"model": "tts-1", "input": TEXT, "voice": "nova", "response_format": fmt}
    assert request.completed and request.audio_bytes > 100_000  # streamed in many chunks
    assert got.sample_rate == 8000
    # The same speech as espeak at 8 kHz directly (espeak's length varies by a few ms from run to run).
    assert abs(got.duration_ms - reference.duration_ms) < 40.0
    loud = float(np.sqrt(np.mean(got.pcm.astype(np.float64) ** 2)))
    assert loud > 0.5 * float(np.sqrt(np.mean(reference.pcm.astype(np.float64) ** 2)))
    assert len(got.words) == len(TEXT.split())
    for ms in np.arange(0.0, got.duration_ms, 100.0):
        assert abs(got.char_offset_at(float(ms)) - reference.char_offset_at(float(ms))) <= 6, ms


def failure(mode: str = "ok", *, key: str = KEY, read_timeout_s: float = 5.0) -> ProviderError:
    async def scenario() -> ProviderError:
        async with SpeechServer(api_key=KEY, mode=mode) as server:
            tts = OpenAiSpeechTts(server.base_url, key, read_timeout_s=read_timeout_s)
            try:
                with pytest.raises(ProviderError) as info:
                    await tts.synthesize(TEXT)
                return info.value
            finally:
                await tts.aclose()

    return run(scenario())


def test_a_wrong_key_is_a_lasting_error_that_never_shows_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-fedcba9876543210ZYXW"
    error = failure(key=wrong)
    assert not error.retryable and "401" in str(error)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (str(error), logged):
        assert wrong not in text and KEY not in text and masked(wrong) not in text and wrong[-4:] not in text


@pytest.mark.parametrize(("mode", "retryable", "words"), [
    ("http_error=503", True, "503"),
    ("http_error=429", True, "429"),
    ("http_error=400", False, "400"),
    ("close", True, "RemoteProtocolError"),
    ("drop_after=2", True, "openai speech"),
])
def test_vendor_failures_are_provider_errors(mode: str, retryable: bool, words: str) -> None:
    error = failure(mode)
    assert error.retryable is retryable and words in str(error), str(error)
    assert not isinstance(error, ProviderTimeout)


@pytest.mark.parametrize("mode", ["stall_after=2", "dead"])
def test_a_stalled_or_dead_server_times_out(mode: str) -> None:
    started = time.monotonic()
    error = failure(mode, read_timeout_s=0.3)
    assert isinstance(error, ProviderTimeout) and error.retryable
    assert time.monotonic() - started < 3.0


def test_the_key_is_not_in_the_engines_repr_or_identity() -> None:
    tts = OpenAiSpeechTts("http://127.0.0.1:9/v1", KEY)
    assert KEY not in repr(tts) and KEY not in tts.identity
    asyncio.run(tts.aclose())
