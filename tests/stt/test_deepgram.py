"""The Deepgram client against the loopback server that speaks Deepgram's protocol, over real sockets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from app.edge.deepgram_server import DeepgramServer, _Recogniser, script_words
from providers.errors import ProviderError
from providers.stt.base import Final, Partial, SttError, SttResult, UtteranceEnd
from providers.stt.deepgram import DeepgramStt

FRAME = b"\xff" * 160  # 20 ms of mu-law silence; the server's "recognition" is timed by audio received


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


async def stream(session: Any, frames: int, at_ms: float = 0.0, pace_s: float = 0.0) -> None:
    for i in range(frames):
        session.feed(FRAME, at_ms + 20 * i)
        await asyncio.sleep(pace_s)


async def collect(session: Any) -> list[SttResult]:
    return [r async for r in session.results()]


def test_partials_then_final_with_words_then_close() -> None:
    async def main() -> None:
        async with DeepgramServer(script_words("I need to move my booking.")) as dg:
            stt = DeepgramStt("test-key", url=dg.url, endpointing_ms=300, utterance_end_ms=1000)
            session = await stt.open("mulaw")
            reader = asyncio.create_task(collect(session))
            await stream(session, 200, at_ms=5000.0)  # 4 s of audio starting at 5 s into the call
            await session.finish()
            results = await reader
            await session.aclose()

            partials = [r for r in results if isinstance(r, Partial)]
            # CloseStream flushes an empty final after the spoken one, as Deepgram does.
            finals = [r for r in results if isinstance(r, Final) and r.text]
            assert partials and results.index(partials[0]) < results.index(finals[0])
            assert [p.text for p in partials][-1].startswith("I need")
            assert len(finals) == 1 and finals[0].speech_final
            final = finals[0]
            assert final.text == "I need to move my booking."
            assert [w.text for w in final.words] == ["I", "need", "to", "move", "my", "booking."]
            # Script times are seconds of audio: "I" is 0.3-0.6 s, so 5300-5600 ms on the call's timeline.
            assert (final.words[0].start_ms, final.words[0].end_ms) == (5300.0, 5600.0)
            assert all(0.9 < w.confidence <= 1.0 for w in final.words)
            assert any(isinstance(r, UtteranceEnd) for r in results)
            assert not any(isinstance(r, SttError) for r in results)

            conn = dg.connections[0]
            assert conn.headers["authorization"] == "Token test-key"
            assert conn.params["encoding"] == "mulaw" and conn.params["sample_rate"] == "8000"
            assert conn.params["interim_results"] == "true" and conn.params["endpointing"] == "300"
            assert conn.audio_bytes == 200 * 160
            assert conn.close_stream_at is not None and conn.ended == "closed"
            assert session.metadata is not None and session.metadata.duration_ms == 4000.0

    run(main())


def test_keepalive_is_sent_while_no_audio_flows() -> None:
    async def main() -> None:
        # The server closes after 0.5 s without audio or KeepAlive, as Deepgram does after 10 s.
        async with DeepgramServer(script_words("hello"), idle_timeout_s=0.5) as dg:
            stt = DeepgramStt("test-key", url=dg.url, keepalive_s=0.15)
            session = await stt.open()
            reader = asyncio.create_task(collect(session))
            await stream(session, 10)
            await asyncio.sleep(1.2)  # the caller is silent and sends nothing
            assert not reader.done(), "the socket must still be open"
            await stream(session, 50, at_ms=200.0)
            await session.finish()
            results = await reader
            await session.aclose()
            conn = dg.connections[0]
            assert len(conn.keepalives) >= 5
            assert conn.ended == "closed"
            assert not any(isinstance(r, SttError) for r in results)
            assert session.keepalives_sent == len(conn.keepalives)

    run(main())


def test_without_keepalive_the_server_times_out_and_the_session_says_so() -> None:
    async def main() -> None:
        async with DeepgramServer(script_words("hello"), idle_timeout_s=0.3) as dg:
            stt = DeepgramStt("test-key", url=dg.url, keepalive_s=30.0)
            session = await stt.open()
            session.feed(FRAME, 0.0)
            results = await collect(session)
            await session.aclose()
            assert isinstance(results[-1], SttError)
            assert "NET-0001" in results[-1].message and results[-1].retryable
            assert dg.connections[0].ended == "idle"

    run(main())


def test_server_death_mid_stream_is_a_typed_error_within_a_bound() -> None:
    async def main() -> None:
        async with DeepgramServer(script_words("I need to move my booking to Friday"), die_after_ms=1000) as dg:
            stt = DeepgramStt("test-key", url=dg.url)
            session = await stt.open()
            reader = asyncio.create_task(collect(session))
            await stream(session, 60, pace_s=0.002)
            died = time.monotonic()
            results = await asyncio.wait_for(reader, 2.0)
            noticed = time.monotonic() - died
            await session.aclose()
            assert dg.connections[0].ended == "died"
            assert isinstance(results[-1], SttError) and results[-1].retryable
            assert noticed < 1.0
            session.feed(FRAME, 5000.0)  # dropped, no error

    run(main())


def test_kill_while_the_caller_is_silent() -> None:
    async def main() -> None:
        async with DeepgramServer(script_words("hello there")) as dg:
            stt = DeepgramStt("test-key", url=dg.url)
            session = await stt.open()
            reader = asyncio.create_task(collect(session))
            await stream(session, 5)
            await asyncio.sleep(0.2)
            dg.kill()
            killed = time.monotonic()
            results = await asyncio.wait_for(reader, 2.0)
            assert time.monotonic() - killed < 1.0
            assert isinstance(results[-1], SttError)
            await session.aclose()

    run(main())


def test_wrong_key_is_refused_and_not_retryable() -> None:
    async def main() -> None:
        async with DeepgramServer() as dg:
            stt = DeepgramStt("wrong", url=dg.url)
            session = await stt.open()
            results = await collect(session)
            await session.aclose()
            assert results == [SttError("deepgram: handshake refused (401)", retryable=False)]
            assert dg.refused and dg.refused[0][1] == 401

    run(main())


def test_nothing_listening_is_a_typed_error() -> None:
    async def main() -> None:
        async with DeepgramServer() as dg:
            url = dg.url
        stt = DeepgramStt("test-key", url=url, connect_timeout_s=1.0)
        session = await stt.open()
        results = await collect(session)
        await session.aclose()
        assert len(results) == 1 and isinstance(results[0], SttError) and results[0].retryable

    run(main())


def test_one_shot_transcribe_joins_the_finals() -> None:
    async def main() -> None:
        async with DeepgramServer(script_words("yes / that sounds good")) as dg:
            stt = DeepgramStt("test-key", url=dg.url)
            final = await stt.transcribe(FRAME * 200, "mulaw", at_ms=1000.0)
            assert final.text == "yes that sounds good"
            assert [w.text for w in final.words] == ["yes", "that", "sounds", "good"]
            assert final.speech_final and final.start_ms == 1000.0 and final.end_ms == 5000.0
            dg.die_after_ms = 100
            with pytest.raises(ProviderError):
                await stt.transcribe(FRAME * 200, "mulaw")

    run(main())


def test_aclose_mid_stream_ends_results() -> None:
    async def main() -> None:
        async with DeepgramServer(script_words("hello")) as dg:
            session = await DeepgramStt("test-key", url=dg.url).open()
            reader = asyncio.create_task(collect(session))
            await stream(session, 5)
            await session.aclose()
            assert not any(isinstance(r, SttError) for r in await asyncio.wait_for(reader, 1.0))

    run(main())


def test_recogniser_finalises_long_speech_without_speech_final() -> None:
    words = script_words(" ".join(["word"] * 30), word_s=0.3, gap_s=0.0)  # 9 s without a pause
    rec = _Recogniser(words, endpointing_ms=300, utterance_end_ms=None, interim_every_ms=250,
                      max_segment_ms=4000, punctuate=True, request_id="r")
    out = [m for t in range(0, 10_000, 20) for m in rec.advance(float(t))]
    finals = [m for m in out if m.get("is_final")]
    assert finals and not finals[0]["speech_final"]
    assert finals[-1]["speech_final"]
    assert sum(len(m["channel"]["alternatives"][0]["words"]) for m in finals) == 30


def test_a_server_that_never_closes_after_closestream_is_given_up_on() -> None:
    async def main() -> None:
        async with DeepgramServer(script_words("hello"), hang_on_close_stream=True, idle_timeout_s=30) as dg:
            session = await DeepgramStt("test-key", url=dg.url, finish_timeout_s=0.3).open()
            await stream(session, 10)
            await session.finish()
            started = time.monotonic()
            results = await collect(session)
            assert time.monotonic() - started < 1.5
            assert results[-1] == SttError("deepgram: no close after CloseStream", retryable=True)
            assert dg.connections[0].close_stream_at is not None
            await session.aclose()

    run(main())


def test_finalize_flushes_what_was_heard_and_keeps_the_stream_open() -> None:
    async def main() -> None:
        async with DeepgramServer(script_words("wait a moment please")) as dg:
            session = await DeepgramStt("test-key", url=dg.url, endpointing_ms=None).open()
            results = session.results()
            await stream(session, 50)  # 1.0 s: "wait" (0.3-0.6 s) and "a" (0.65-0.95 s) are heard
            session.finalize()
            final = None
            async for r in results:
                if isinstance(r, Final):
                    final = r
                    break
            assert final is not None and final.text == "wait a" and final.speech_final
            assert dg.connections[0].finalizes == 1 and dg.connections[0].ended == ""
            await session.aclose()

    run(main())
