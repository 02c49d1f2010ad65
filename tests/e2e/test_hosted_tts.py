"""End to end over real sockets with a hosted TTS: the real app under uvicorn with TTS_ENGINE=elevenlabs pointed at
the loopback ElevenLabs server (app/edge/elevenlabs_server.py, espeak speech behind ElevenLabs' wire protocol), a
loopback LLM streaming server-sent events, and the provider-edge emulator over a real WebSocket.

One call: the greeting is heard (the very audio the loopback sent); the caller barges into the first reply and
the cut lands on the character the loopback's alignment puts at the heard position; the loopback dies in the
middle of the second reply, the caller hears the fallback line and the call goes on; with the loopback back, the
third reply is spoken normally.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from app.edge.elevenlabs_server import ElevenLabsConnection, ElevenLabsServer
from app.edge.emulator import EmulatedCall
from app.edge.llm_server import ScriptedLlmServer
from app.offline.corpus import Clip, load_clip, read_manifest
from providers.mulaw import ulaw_to_pcm16
from providers.tts.base import char_offset_at

KEY = "xi-e2e-secret-0123456789abcdef"
GREETING = "Hi there. How can I help?"
FALLBACK = "Sorry, please say that again."
REPLY_1 = ("Sure, I can check that for you. Your order left our warehouse yesterday afternoon, and the driver "
           "will bring it to your door tomorrow morning before noon.")
REPLY_2 = "Of course, we are open from nine to five on weekdays. On Saturdays we open at ten and close at two."
REPLY_3 = "You are welcome. Is there anything else I can do for you today?"
TTS_TIMEOUT_S = 1.5


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll `predicate` until it holds (the loopback servers record what happened; they have no events)."""
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("condition not met")


def clip(category: str, index: int = 0) -> Clip:
    return [r for r in read_manifest() if r.category == category][index]


async def get_record(url: str, call_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"{url}/calls/{call_id}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


def agent_turns(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in record["turns"] if t["role"] == "agent"]


def pieces_of(server: ElevenLabsServer, text: str) -> list[ElevenLabsConnection]:
    """The connections that synthesised pieces of `text`, in order."""
    return [c for c in server.connections if c.generated and c.generated[0].strip() in text and c.ended == "final"]


def sent_pcm(connections: list[ElevenLabsConnection]) -> np.ndarray:
    audio = b"".join(base64.b64decode(m["audio"]) for c in connections for m in c.sent if m.get("audio"))
    return ulaw_to_pcm16(audio)


def expected_char(connections: list[ElevenLabsConnection], heard_ms: float) -> int:
    """Where `heard_ms` into the turn falls in its text, by the loopback's own alignment of each piece."""
    char, start = 0, 0.0
    for conn in connections:
        syn = conn.syntheses[0]
        piece = syn.text.rstrip()
        if heard_ms < start + syn.duration_ms:
            return char + min(len(piece), char_offset_at(syn.words, len(piece), heard_ms - start, syn.duration_ms))
        char += len(piece) + 1
        start += syn.duration_ms
    return char - 1


def test_hosted_tts_greets_cuts_at_the_heard_character_and_survives_dying_mid_turn(server_factory: Any) -> None:
    async def scenario() -> None:
        el = ElevenLabsServer(api_key=KEY)
        await el.start()
        port = el.port
        async with ScriptedLlmServer([REPLY_1, REPLY_2, REPLY_3], token_delay_s=0.04) as llm:
            # Started from a thread: the app's startup synthesises its fallback line through the loopback, which
            # runs on this event loop.
            srv = await asyncio.to_thread(
                server_factory, tts_engine="elevenlabs", elevenlabs_api_key=KEY, elevenlabs_voice_id="voice1",
                elevenlabs_url=el.url, llm_base_url=llm.base_url, agent_greeting=GREETING,
                agent_fallback_text=FALLBACK, bargein_policy="immediate", tts_timeout_s=TTS_TIMEOUT_S)
            assert any(c.generated == [FALLBACK + " "] for c in el.connections)  # made at startup, kept
            word = load_clip(clip("isolated_word", 0))
            async with EmulatedCall.start("twilio", srv.url) as call:
                # 1. The greeting is heard: the audio the edge received is the audio the loopback sent.
                await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 15)
                greeting = call.received_samples
                greeting_pieces = pieces_of(el, GREETING)
                assert " ".join(c.generated[0].strip() for c in greeting_pieces) == GREETING
                np.testing.assert_array_equal(ulaw_to_pcm16(call.received_audio()[:greeting]),
                                              sent_pcm(greeting_pieces))

                # 2. A word; the agent answers (REPLY_1); the caller barges in 2.6 s into it, inside its second
                # sentence.
                await asyncio.sleep(0.3)
                await call.send_audio(word)
                await call.wait_until(lambda: call.played_samples - greeting > 2.6 * 8000, 20)
                speech = load_clip(clip("read", 1))
                await call.send_audio(speech[: int(1.2 * 8000)])
                await call.wait_until(lambda: bool(call.clears), 5)

                # 3. The caller's turn ends; the agent starts REPLY_2 and the loopback dies once its first piece
                # is out: the next piece cannot be synthesised, the caller hears the fallback line.
                async def die_after_first_piece() -> None:
                    await until(lambda: bool(pieces_of(el, REPLY_2)), 20)
                    await el.stop()

                killer = asyncio.create_task(die_after_first_piece())
                await asyncio.wait_for(killer, 20)
                await call.wait_until(lambda: len(llm.chat_requests) >= 2, 10)
                record = await get_record(srv.url, call.call_id)
                for _ in range(200):
                    turns = agent_turns(record)
                    if len(turns) >= 3 and turns[2]["fallback"] and call.buffered_samples == 0:
                        break
                    await asyncio.sleep(0.05)
                    record = await get_record(srv.url, call.call_id)
                assert not call.closed

                # 4. The loopback is back; the call goes on: a word, and REPLY_3's first piece is spoken through
                # it. Then the loopback stalls (answers nothing) on the next piece: TTS_TIMEOUT_S later the
                # caller hears the fallback line.
                el2 = ElevenLabsServer(api_key=KEY, port=port)
                await el2.start()
                before = call.received_samples
                await call.send_audio(word)
                await until(lambda: bool(pieces_of(el2, REPLY_3)), 20)
                el2.mode = "stall_after=0"
                stalled_at = asyncio.get_running_loop().time()
                record = await get_record(srv.url, call.call_id)
                for _ in range(200):
                    turns = agent_turns(record)
                    if len(turns) >= 4 and turns[3]["fallback"]:
                        break
                    await asyncio.sleep(0.05)
                    record = await get_record(srv.url, call.call_id)
                waited = asyncio.get_running_loop().time() - stalled_at
                await call.wait_until(lambda: call.received_samples > before and call.buffered_samples == 0, 20)
                for _ in range(100):
                    if agent_turns(record)[3]["text"]:
                        break
                    await asyncio.sleep(0.05)
                    record = await get_record(srv.url, call.call_id)
                assert not call.closed
                assert any(c.ended == "stalled" or c.mode.startswith("stall") for c in el2.connections)
                await el2.stop()

        turns = agent_turns(record)
        assert [t["text"] for t in turns[:1]] == [GREETING]
        # The barge-in: REPLY_1 cut at the heard character, by the loopback's alignment.
        cut = turns[1]
        assert cut["interrupted"] and REPLY_1.startswith(cut["intended_text"])
        assert cut["heard_text"] == REPLY_1[: cut["heard_chars"]]
        assert len("Sure, I can check that for you. ") < cut["heard_chars"] < len(REPLY_1)  # in the second sentence
        reply_pieces = pieces_of(el, REPLY_1)
        assert abs(cut["heard_chars"] - expected_char(reply_pieces, cut["heard_audio_ms"])) <= 3, (
            cut["heard_chars"], cut["heard_audio_ms"], [c.generated for c in reply_pieces])
        # The death mid-turn: REPLY_2's first piece, then the fallback line; the turn is marked so.
        dead = turns[2]
        assert dead["fallback"], dead
        first_piece = pieces_of(el, REPLY_2)[0].generated[0].strip()
        assert REPLY_2.startswith(first_piece) and first_piece != REPLY_2
        assert dead["text"] == f"{first_piece} {FALLBACK}"  # what was said before it died, then the fallback
        # After it, the restarted loopback speaks again, then stalls: the fallback follows within TTS_TIMEOUT_S.
        last = turns[3]
        stalled_piece = pieces_of(el2, REPLY_3)[0].generated[0].strip()
        assert last["fallback"] and last["text"] == f"{stalled_piece} {FALLBACK}", last
        assert stalled_piece != REPLY_3 and REPLY_3.startswith(stalled_piece)
        assert waited < TTS_TIMEOUT_S + 2.0, waited

    asyncio.run(asyncio.wait_for(scenario(), 90))
