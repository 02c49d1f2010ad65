"""End to end over real sockets: an LLM that floods the call. The real app under uvicorn, the provider-edge
emulator over a real WebSocket, a loopback OpenAI-compatible server streaming server-sent events.

(a) a 1 MB reply streamed as fast as the socket takes it, (b) one 80 KB sentence with no full stop. Either way
the turn keeps LLM_MAX_REPLY_CHARS and closes the LLM stream, queues at most MAX_QUEUED_AUDIO_S of audio,
speaks its first sentence at once, the caller can still barge in, the event loop is never held for long, and
the call ends cleanly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import httpx
import numpy as np
import pytest

from app.call.turn import MAX_SENTENCE_CHARS, split_sentences
from app.edge.emulator import EmulatedCall
from app.edge.llm_server import ScriptedLlmServer
from app.offline.corpus import Clip, load_clip, read_manifest
from providers.errors import ProviderError
from providers.llm.base import TextDelta
from providers.llm.openai import MAX_LINE_CHARS, OpenAICompatibleLlm
from providers.tts.base import char_offset_at
from providers.tts.espeak import EspeakTts

SENTENCE = "Your parcel left the warehouse this morning and the driver will ring the bell when he arrives. "
REPLY_1MB = (SENTENCE * (1_000_000 // len(SENTENCE) + 1))[:1_000_000]
CLAUSE = "and then the parcel went back to the depot because nobody was at home to sign for it "
RUN_ON_80KB = (CLAUSE * (80_000 // len(CLAUSE) + 1))[:80_000]

# Small enough that back-pressure engages within the seconds a test runs (the default is 120 s), larger than
# the longest sentence (300 characters, about 16 s), so the cap, not one sentence, is what bounds the queue.
QUEUE_S = 20.0
# The target is a few ms, and that is what these tests measure on a quiet box: a max of 2.6-4.0 ms with the
# 80 KB sentence, 5.3-9.6 ms with the 1 MB flood (5 runs each). The bound is looser because the app's event
# loop shares this process, and so the GIL, with the test's own loop (the emulator, and the loopback LLM writing
# as fast as the socket takes: a GIL hand-off can take 5 ms), and shares the 2-core VM with whatever else runs
# (other test suites: a scheduler slice is tens of ms; up to 28 ms seen under such load). Before these bounds
# the 80 KB sentence cost 17.7 s of loop time to split, and a server in its own process showed stalls of up to
# 62 ms (p50 15 ms) while the 1 MB reply streamed, and 194 ms 12 s into the 80 KB one, still growing.
STALL_BOUND_MS = 100.0


def run(scenario: Coroutine[Any, Any, None], timeout_s: float = 120.0) -> None:
    """A server that floods or stalls must fail the test, not hang it."""
    asyncio.run(asyncio.wait_for(scenario, timeout_s))


def clip(category: str, index: int = 0) -> Clip:
    return [r for r in read_manifest() if r.category == category][index]


def pcm(row: Clip) -> np.ndarray:
    return load_clip(row)


async def get_json(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(url)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


async def reset_stats(url: str) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        (await client.post(f"{url}/stats/reset")).raise_for_status()


def agent_turns(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in record["turns"] if t["role"] == "agent"]


async def flooded_call(provider: str, srv: Any, llm: ScriptedLlmServer) -> dict[str, Any]:
    """Greeting, one word from the caller, the flood as the reply, a barge-in 2.5 s into it, a hang-up."""
    async with EmulatedCall.start(provider, srv.url) as call:
        await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 10)
        await asyncio.sleep(0.3)
        greeting = call.received_samples
        await reset_stats(srv.url)
        await call.send_audio(pcm(clip("isolated_word", 0)))
        await call.wait_until(lambda: call.received_samples > greeting, 10)
        first_audio_at = time.monotonic()
        await call.wait_until(lambda: bool(llm.chat_requests) and llm.chat_requests[-1].disconnected, 10)
        # Long enough for an unbounded turn to have queued all of its reply (synthesis runs ~500x real time).
        await call.wait_until(lambda: call.played_samples - greeting > 2.5 * 8000, 10)
        await call.send_audio(pcm(clip("read", 1))[: int(1.2 * 8000)])
        await call.wait_until(lambda: bool(call.clears), 5)
        clear_at = call.clears[0]
        position = call.position_at(clear_at - 0.001)
        await asyncio.sleep(0.4)
        record = await get_json(f"{srv.url}/calls/{call.call_id}")
        stats = await get_json(f"{srv.url}/stats")
        await call.hangup()
    for _ in range(100):  # the server closes the record once it has read the stop
        ended = await get_json(f"{srv.url}/calls/{call.call_id}")
        if ended["end_reason"] is not None:
            break
        await asyncio.sleep(0.05)
    assert position is not None
    return {
        "record": record, "ended": ended, "stats": stats, "violations": call.violations,
        "first_audio_s": first_audio_at - llm.chat_requests[-1].started_at,
        "played_ms": (position + 1 - greeting) / 8.0, "clears": call.clears,
    }


def check_bounded(result: dict[str, Any], srv: Any, llm: ScriptedLlmServer, reply: str) -> dict[str, Any]:
    """What both floods must leave behind; returns the interrupted turn."""
    cap = srv.settings.llm_max_reply_chars
    assert cap == 4_000  # the default
    # The LLM saw its connection closed long before it had sent the reply.
    request = llm.chat_requests[-1]
    assert request.disconnected and not request.completed
    assert len(request.text_sent) < len(reply) / 2, len(request.text_sent)
    assert request.disconnected_at is not None and request.disconnected_at - request.started_at < 2.0

    # The turn kept the reply up to the cap, on a word boundary, and the caller could barge in.
    [turn] = [t for t in agent_turns(result["record"]) if t["interrupted"]]
    intended = turn["intended_text"]
    assert cap - 100 < len(intended) <= cap
    assert reply.startswith(intended) and reply[len(intended)] == " "
    assert not turn["fallback"]
    assert len(result["clears"]) == 1 and len(result["record"]["bargeins"]) == 1

    # Queued audio stayed under the cap: what was synthesised, less what was heard, is the outbox's queue plus
    # what was sent ahead of playback (the lead, and one chunk in flight).
    s = srv.settings
    queued_ms = turn["audio_ms"] - turn["heard_audio_ms"]
    assert queued_ms <= QUEUE_S * 1000 + s.playback_lead_ms + s.playback_chunk_ms + 50, turn
    # Near what the edge played, not exact: under a 1 MB flood the loop is busy when the clear goes out, and on a
    # 2-core AMD EPYC VM (2026-12-01) the error was 61-95 ms in a third to a half of runs, the tree before this
    # session's changes included (1 of 7 runs there); the heard cut's accuracy itself is measured where nothing
    # floods it (test_heard_network.py, bench --conditions network: within 40 ms at p95).
    assert abs(turn["heard_audio_ms"] - result["played_ms"]) <= 120.0

    # The reply's first sentence was heard at once, the loop never stalled, and the call ended cleanly.
    assert result["first_audio_s"] < 1.5, result["first_audio_s"]
    # The part of each late wake-up the loop thread spent on the CPU: waits for the GIL (this server shares its
    # process with the emulator and the flooding LLM server) and for a core are not the server's doing.
    stall = result["stats"]["loop_held_ms"]
    assert stall["count"] > 100 and stall["max"] < STALL_BOUND_MS, result["stats"]
    assert not result["violations"], result["violations"]
    assert result["ended"]["end_reason"] == "stop" and not result["ended"]["active"]
    return turn


def test_a_1_mb_reply_is_capped_its_stream_closed_and_its_audio_held_back(server_factory: Any) -> None:
    async def scenario() -> None:
        # 4-character deltas as fast as the socket takes them: 250,000 SSE events, about 40 MB on the wire.
        async with ScriptedLlmServer([REPLY_1MB], token_delay_s=0.0, chunk_chars=4) as llm:
            srv = server_factory(llm_base_url=llm.base_url, agent_greeting="Hello.", max_queued_audio_s=QUEUE_S)
            result = await flooded_call("twilio", srv, llm)
        turn = check_bounded(result, srv, llm, REPLY_1MB)
        # About 250 s of speech in the capped reply; only the cap's worth was synthesised ahead of the caller.
        assert turn["audio_ms"] < (QUEUE_S + 5) * 1000, turn["audio_ms"]
        assert turn["audio_ms"] - turn["heard_audio_ms"] > QUEUE_S * 1000 - 10_000  # the queue did fill
        print(f"\n1 MB reply: loop stall {result['stats']['loop_stall_ms']}, first audio "
              f"{result['first_audio_s'] * 1000:.0f} ms, LLM text sent {len(llm.chat_requests[-1].text_sent)}")

    run(scenario())


def test_an_80_kb_sentence_is_spoken_in_short_pieces_and_cut_exactly(server_factory: Any) -> None:
    async def scenario() -> None:
        # 4-character deltas 1 ms apart (a fast model): the 80 KB would take 20 s to stream in full.
        async with ScriptedLlmServer([RUN_ON_80KB], token_delay_s=0.001, chunk_chars=4) as llm:
            srv = server_factory(llm_base_url=llm.base_url, agent_greeting="Hello.", max_queued_audio_s=QUEUE_S)
            result = await flooded_call("plivo", srv, llm)
        turn = check_bounded(result, srv, llm, RUN_ON_80KB)
        # The forced cuts took out single spaces and the turn joins its pieces with one: the heard text is the
        # reply's own prefix, and it matches the audio the emulator played.
        sentences = split_sentences(turn["intended_text"])
        assert len(sentences) >= 12 and max(map(len, sentences)) <= MAX_SENTENCE_CHARS
        assert turn["heard_chars"] == len(turn["heard_text"]) > 0
        assert turn["text"] == turn["heard_text"] == RUN_ON_80KB[: turn["heard_chars"]]
        tts = EspeakTts()
        char, audio = 0, 0.0
        for sentence in sentences:
            synthesis = await tts.synthesize(sentence)
            if result["played_ms"] < audio + synthesis.duration_ms:
                local = char_offset_at(
                    synthesis.words, len(sentence), result["played_ms"] - audio, synthesis.duration_ms
                )
                assert abs(turn["heard_chars"] - (char + local)) <= 3
                break
            char += len(sentence) + 1
            audio += synthesis.duration_ms
        else:
            pytest.fail("the cut fell past the synthesised reply")
        print(f"\n80 KB sentence: loop stall {result['stats']['loop_stall_ms']}, first audio "
              f"{result['first_audio_s'] * 1000:.0f} ms, LLM text sent {len(llm.chat_requests[-1].text_sent)}")

    run(scenario())


def test_an_sse_line_past_the_bound_is_refused_and_the_turn_speaks_its_fallback(server_factory: Any) -> None:
    huge = "word " * (MAX_LINE_CHARS // 5 + 1000)

    async def scenario() -> None:
        # The whole reply as one delta: one SSE line of just over 1 MB. The client refuses it once it has read
        # that much of the line (not at the line's end, however far that is), and the call speaks its fallback
        # and goes on.
        async with ScriptedLlmServer([huge], chunk_chars=len(huge)) as llm:
            client = OpenAICompatibleLlm(llm.base_url, "scripted")
            with pytest.raises(ProviderError, match="longer than"):
                async for _ in client.stream([{"role": "user", "content": "hi"}]):
                    pass
            await client.aclose()

            srv = server_factory(llm_base_url=llm.base_url, agent_greeting="Hello.")
            async with EmulatedCall.start("twilio", srv.url) as call:
                await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 10)
                greeting = call.received_samples
                await call.send_audio(pcm(clip("isolated_word", 0)))
                await call.wait_until(lambda: call.received_samples > greeting, 10)
                await asyncio.sleep(0.3)
                record = await get_json(f"{srv.url}/calls/{call.call_id}")
                assert not call.closed
        reply = agent_turns(record)[-1]
        assert reply["fallback"]

    run(scenario())


def test_a_json_string_with_a_raw_line_separator_is_one_sse_line() -> None:
    # U+2028 is legal raw inside a JSON string, and servers that write UTF-8 (llama.cpp, vLLM) send it so; SSE
    # ends lines at CR and LF only. httpx's aiter_lines split there and the chunk failed to parse.
    reply = "First line\u2028second line\u0085third."

    async def scenario() -> None:
        async with ScriptedLlmServer([reply], token_delay_s=0.0, chunk_chars=7, ensure_ascii=False) as llm:
            client = OpenAICompatibleLlm(llm.base_url, "scripted")
            pieces = [piece.text async for piece in client.stream([{"role": "user", "content": "hi"}])
                      if isinstance(piece, TextDelta)]
            await client.aclose()
        assert "".join(pieces) == reply

    run(scenario())
