"""Progressive turn taking over real sockets (TURN_POLICY=progressive, app/call/turn_taking.py).

The real app under uvicorn with the embedded recognizer (faster-whisper), the provider-edge emulator, and a
loopback LLM speaking OpenAI's streaming protocol that answers with the number of words it was asked about
(so the test can tell a reply drafted on part of the turn from the reply to all of it). The caller is a read
sentence from the test corpus (real speech, not synthesised: it is the same audio every run).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.bench.stt import read_wav
from app.bench.turns import with_pause
from app.call.tools import Tool, ToolRegistry
from app.edge.emulator import EmulatedCall
from app.edge.llm_server import Reply, ScriptedLlmServer, ScriptedToolCall, ToolCallReply
from app.edge.served import ServedApp
from app.main import create_app
from tests.conftest import make_settings
from tests.e2e.records import record_when

# "He did not speak about it at length, but said that he had written me a letter." (no pause of 250 ms inside)
CLIP = Path(__file__).resolve().parents[1] / "corpus" / "speech" / "read_04_libri3112F.wav"
AUDIO_EVENTS = ("media", "playAudio")
LOUD = 300  # about -40 dBFS: the clip's speech ends after its last sample above this


def words_reply(messages: list[dict[str, Any]]) -> str:
    said = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return f"You said {len(said.split())} words."


def speech_end(pcm: Any, sent: list[float]) -> float:
    """When the clip's last loud sample went out (its frame's send time)."""
    last = int(np.flatnonzero(np.abs(pcm.astype(np.int32)) > LOUD)[-1])
    return sent[min(last // 160, len(sent) - 1)]


def agent_audio_after(call: EmulatedCall, t: float) -> list[float]:
    return [at for at, kind in call.received_events if kind in AUDIO_EVENTS and at > t]


Provider = Literal["twilio", "plivo"]


async def one_call(srv: Any, provider: Provider, pcm: Any) -> tuple[float, list[float], dict[str, Any]]:
    """The greeting, then the caller's audio and silence; (end of speech, agent audio after the greeting, record)."""
    async with EmulatedCall.start(provider, srv.url) as call:
        await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 15)
        greeting_done = call.received_events[-1][0]
        sent = await call.send_audio(pcm)
        end = speech_end(pcm, sent)
        await call.send_silence(2.0)  # the answer may come later: the call stays up while the record is read
        record = await record_when(srv.url, call.call_id, lambda r: len(
            [t for t in r["turns"] if t["role"] == "agent" and t["text"]]) >= 2, timeout_s=15)
        return end, agent_audio_after(call, greeting_done), record


def test_a_mid_sentence_pause_cancels_the_held_reply_and_nothing_of_it_is_sent(server_factory: Any) -> None:
    """The caller pauses 1.2 s in the middle of the sentence: the turn so far is heard and a reply drafted on
    it (the LLM is asked about the first half), but the caller goes on before the turn could be over, so the
    draft is cancelled: no agent audio before the caller's end of speech, and neither the record nor the next
    request holds the draft's words."""
    paused = with_pause(read_wav(CLIP), 1200.0)
    assert paused is not None
    pcm, _ = paused

    async def scenario() -> tuple[float, list[float], dict[str, Any], list[Any]]:
        async with ScriptedLlmServer(words_reply, token_delay_s=0.01) as llm:
            # The deadlines are past the pause whatever the words look like: this is about the cancel.
            srv = server_factory(llm_base_url=llm.base_url, agent_greeting="Hello.", stt_engine="whisper",
                                 turn_policy="progressive", turn_complete_silence_ms=1600,
                                 turn_unfinished_silence_ms=1600)
            end, audio, record = await one_call(srv, "twilio", pcm)
            return end, audio, record, [r.messages for r in llm.chat_requests]

    end, audio, record, asked = asyncio.run(scenario())
    assert audio and min(audio) > end, "the agent spoke before the caller had finished"
    users = [t for t in record["turns"] if t["role"] == "user"]
    agents = [t["text"] for t in record["turns"] if t["role"] == "agent"]
    assert len(users) == 1 and len(users[0]["text"].split()) >= 10, users  # one turn: both halves
    final = f"You said {len(users[0]['text'].split())} words."
    assert agents == ["Hello.", final], agents
    # A draft was made on the first half (the LLM was asked about fewer words), and its reply went nowhere.
    drafts = [m for m in asked if len(m[-1]["content"].split()) < len(users[0]["text"].split())]
    assert drafts, [m[-1] for m in asked]
    last = asked[-1]
    assert [m["content"] for m in last if m["role"] == "assistant"] == ["Hello."], last


def test_a_complete_turn_is_answered_sooner_than_under_strict(server_factory: Any) -> None:
    pcm = read_wav(CLIP)

    async def gap(policy: str) -> float:
        async with ScriptedLlmServer(words_reply, token_delay_s=0.01) as llm:
            # strict as it hears the turn after its silence (TURN_HEAR_EARLY off): the recognizer in the gap
            # (hearing early takes it out too: tests/e2e/test_turn_hear_early.py)
            srv = server_factory(llm_base_url=llm.base_url, agent_greeting="Hello.", stt_engine="whisper",
                                 turn_policy=policy, turn_hear_early=False)
            end, audio, _ = await one_call(srv, "plivo", pcm)
            return min(audio) - end

    async def both() -> tuple[float, float]:
        return await gap("strict"), await gap("progressive")

    strict, progressive = asyncio.run(both())
    # strict: 700 ms of silence, then the words (100 ms to a second), the LLM and synthesis; progressive: the
    # words and the reply are ready at 450 ms of silence. The margin is most of the recognizer's time.
    assert progressive < strict - 0.2, (strict, progressive)
    assert progressive > 0.4, progressive  # not before the silence that ends a complete turn


def test_a_held_reply_asks_for_its_tool_but_runs_it_only_once_the_turn_is_over() -> None:
    """With tools, the held reply is offered them as the answer is. Drafted at a mid-sentence pause, its request
    asks for a booking (a mutation): the tool does not run while the reply is held, and when the caller goes on
    the draft is dropped with nothing done. The reply to the whole turn asks again, and its tool runs exactly
    once, after the caller's speech has ended, and the caller hears the answer that follows it."""
    paused = with_pause(read_wav(CLIP), 1300.0)
    assert paused is not None
    pcm, _ = paused
    # The reply is drafted as soon as the words are in (the lead covers the whole deadline), so its request has
    # long asked for the tool when the caller goes on.
    ran_at: list[float] = []

    async def book(arguments: dict[str, Any]) -> dict[str, Any]:
        ran_at.append(time.monotonic())
        return {"booked": True}

    tools = ToolRegistry()
    tools.register(Tool("book_table", "Book a table.", {"type": "object", "properties": {}}, "mutation", book))

    def reply(messages: list[dict[str, Any]]) -> Reply:
        if messages[-1]["role"] == "tool":
            return "Your table is booked."
        return ToolCallReply([ScriptedToolCall(f"call_{len(messages)}", "book_table", {})], "Booking it.")

    async def scenario() -> tuple[float, list[float], dict[str, Any], list[Any]]:
        async with ScriptedLlmServer(reply, token_delay_s=0.01) as llm:
            settings = make_settings(llm_base_url=llm.base_url, agent_greeting="Hello.", stt_engine="whisper",
                                     turn_policy="progressive", turn_complete_silence_ms=1900,
                                     turn_unfinished_silence_ms=1900, turn_draft_lead_ms=1900)
            with ServedApp(create_app(settings, tools=tools)) as srv:
                async with EmulatedCall.start("twilio", srv.url) as call:
                    await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 15)
                    greeting_done = call.received_events[-1][0]
                    sent = await call.send_audio(pcm)
                    end = speech_end(pcm, sent)
                    await call.send_silence(3.0)
                    record = await record_when(srv.url, call.call_id, lambda r: any(
                        t["role"] == "agent" and "booked" in t["text"] for t in r["turns"]), timeout_s=15)
                    return end, agent_audio_after(call, greeting_done), record, [r.messages for r in llm.chat_requests]

    end, audio, record, asked = asyncio.run(scenario())
    users = [t for t in record["turns"] if t["role"] == "user"]
    assert len(users) == 1 and len(users[0]["text"].split()) >= 10, users
    # A reply was drafted on the first half and asked for the tool; it was dropped without running it.
    drafts = [m for m in asked if m[-1]["role"] == "user"
              and len(m[-1]["content"].split()) < len(users[0]["text"].split())]
    assert drafts, [m[-1] for m in asked]
    assert len(ran_at) == 1, ran_at  # once: for the reply the caller got
    assert ran_at[0] > end, (ran_at, end)
    assert audio and min(audio) > end, "the agent spoke before the caller had finished"
    agents = [t["text"] for t in record["turns"] if t["role"] == "agent"]
    assert "Your table is booked." in agents[-1], agents
