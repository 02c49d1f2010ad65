"""A caller who cuts the agent off and asks "sorry, say that again?" hears the cut sentence again, slower.

Over real sockets: the real app under uvicorn, the provider-edge emulator, the embedded LLM and TTS, and the
Deepgram client against the loopback Deepgram server, whose words are scripted (the behaviour under test is the
reply, not the recognizer's accuracy on synthetic speech). The same call runs on two servers, one with
AGENT_CLARIFY_PACE=0.85 and one with 1 (unchanged): the reply's audio per character is the pace.
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.bench.stt import synthesise_phrases
from app.edge.deepgram_server import DeepgramServer, ScriptWord, script_words
from app.edge.emulator import EmulatedCall
from tests.e2e.records import record_when

GREETING = (
    "Thanks for calling. Our opening hours are nine to five on weekdays, and ten to two on Saturdays. "
    "You can ask about an order, a delivery or a refund, and I will do my best to help you with it."
)
ASKED = "sorry say that again"


async def _reply_after_clarification(server_factory: Any, pace: float, starting: asyncio.Lock) -> dict[str, Any]:
    def script(connection: int) -> list[ScriptWord]:
        return script_words(ASKED, start_s=0.2, word_s=0.2, gap_s=0.03)

    [asked] = await synthesise_phrases(["Sorry, say that again?"], "en-gb")
    async with DeepgramServer(script) as dg:
        # Started from a thread, as this loop runs the loopback; one server starting at a time.
        async with starting:
            srv = await asyncio.to_thread(
                server_factory, agent_greeting=GREETING, stt_engine="deepgram", deepgram_url=dg.url,
                deepgram_api_key="test-key", agent_clarify_pace=pace)
        async with EmulatedCall.start("twilio", srv.url) as call:
            # into the second sentence, so the cut sentence is the opening hours
            await call.wait_until(lambda: call.played_samples > 2.5 * 8000, 20)
            await call.send_audio(asked)
            await call.send_silence(1.0)
            record = await record_when(srv.url, call.call_id, lambda r: len(r["turns"]) >= 3 and bool(
                r["turns"][2]["ended_at"]), timeout_s=30)
    greeting, user, reply = record["turns"][:3]
    assert greeting["interrupted"] and user["text"] == ASKED, record["turns"]
    assert reply["role"] == "agent" and "opening hours" in reply["text"], reply  # the cut sentence, whole
    return reply


def test_the_cut_sentence_asked_for_again_is_said_slower(server_factory: Any) -> None:
    async def both() -> list[dict[str, Any]]:
        # the two calls at once, each on its own server: the pace is in the audio's length, not the wall clock's
        starting = asyncio.Lock()
        return list(await asyncio.gather(_reply_after_clarification(server_factory, 0.85, starting),
                                         _reply_after_clarification(server_factory, 1.0, starting)))

    slower, usual = asyncio.run(both())
    assert slower["text"] == usual["text"]
    ms_per_char = [t["audio_ms"] / len(t["text"]) for t in (slower, usual)]
    # 0.85 of the words per minute: about 1/0.85 = 1.18 x the audio (espeak's pauses do not all stretch)
    assert ms_per_char[0] > 1.1 * ms_per_char[1], ms_per_char
