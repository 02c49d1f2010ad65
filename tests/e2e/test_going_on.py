"""A caller turn that stopped the agent but held no words: the agent goes on with the rest of what it was saying.

Over real sockets: the real app under uvicorn, the provider-edge emulator, a loopback LLM speaking OpenAI's
streaming protocol (it keeps every request), and the Deepgram client against the loopback Deepgram server, whose
words are scripted: the behaviour under test is what the agent does with a turn's words (none, "mm-hmm", a
question), not the recognizer's accuracy. The caller's audio is a real read sentence (1.7 s), long enough to be
taken as the caller's turn by the barge-in policy, so the agent's turn is stopped, not resumed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.bench.stt import read_wav
from app.call.going_on import rest_from
from app.edge.deepgram_server import DeepgramServer, script_words
from app.edge.emulator import EmulatedCall
from app.edge.llm_server import ScriptedLlmServer
from tests.e2e.records import record_when
from tests.e2e.speech import GREETING

CLIP = Path(__file__).resolve().parents[1] / "corpus" / "speech" / "read_01_libri3982F.wav"  # one utterance
ANSWER = "We open at nine."


def _third_turn_over(record: dict[str, Any]) -> bool:
    turns = record["turns"]
    return len(turns) >= 3 and turns[2]["role"] == "agent" and bool(turns[2]["ended_at"])


async def _call(server_factory: Any, provider: str, words: str, starting: asyncio.Lock) -> dict[str, Any]:
    script = script_words(words, start_s=0.3, word_s=0.25) if words else ()
    async with DeepgramServer(script) as dg, ScriptedLlmServer([ANSWER], token_delay_s=0.005) as llm:
        async with starting:  # started from a thread, as this loop runs the loopbacks; one at a time
            srv = await asyncio.to_thread(
                server_factory, agent_greeting=GREETING, stt_engine="deepgram", deepgram_url=dg.url,
                deepgram_api_key="test-key", llm_base_url=llm.base_url)
        async with EmulatedCall.start(provider, srv.url) as call:
            # into the third sentence of the greeting: the rest is a few seconds long
            await call.wait_until(lambda: call.played_samples > 7.5 * 8000, 20)
            await call.send_audio(read_wav(CLIP))
            sent = call.played_samples
            await call.send_silence(1.2)
            record = await record_when(srv.url, call.call_id, _third_turn_over, timeout_s=30)
            played = call.played_samples - sent  # the third turn's audio at the edge (the second is the caller's)
        async with httpx.AsyncClient(trust_env=False) as client:
            metrics = (await client.get(f"{srv.url}/metrics")).text
    return {"record": record, "asked": len(llm.chat_requests), "played": played, "metrics": metrics}


def _went_on_metric(metrics: str, reason: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("bargein_bargein_resumed_total{") and f'reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# One provider: the decision is the session's; each wire's clear and audio are tested in test_bargein.py.
@pytest.mark.parametrize("provider", ["twilio"])
def test_a_turn_without_words_gets_the_rest_of_the_cut_turn_and_a_question_gets_an_answer(
        provider: str, server_factory: Any) -> None:
    async def all_three() -> list[dict[str, Any]]:
        starting = asyncio.Lock()
        return list(await asyncio.gather(*(
            _call(server_factory, provider, words, starting)
            for words in ("", "Mm-hmm.", "What time do you open?"))))

    silent, listener, question = asyncio.run(all_three())
    for outcome, reason in ((silent, "no_words"), (listener, "listener_words")):
        greeting, user, rest = outcome["record"]["turns"][:3]
        assert greeting["interrupted"] and greeting["heard_chars"] < len(GREETING), greeting
        assert user["went_on"] and rest["continues"] == greeting["id"], outcome["record"]["turns"]
        # the unheard rest, from the start of the word the caller stopped hearing: nothing heard in full is lost
        assert rest["text"] == rest_from(greeting["intended_text"], greeting["heard_chars"]), rest
        assert GREETING.endswith(rest["text"]) and len(rest["text"]) > 20, rest
        assert outcome["asked"] == 0, "the LLM was asked about a turn without words"
        assert outcome["played"] > 0.5 * 8000, "the rest was not heard at the edge"
        assert _went_on_metric(outcome["metrics"], reason) == 1.0, reason
        # the barge-in's record carries the kind of the words that followed it (none: no kind)
        assert outcome["record"]["bargeins"][0]["kind"] == (None if reason == "no_words" else "backchannel")
    assert silent["record"]["turns"][1]["text"] == "" and listener["record"]["turns"][1]["text"] == "Mm-hmm."
    # words that are not a listener's: answered as ever, the cut turn left cut
    greeting, user, answer = question["record"]["turns"][:3]
    assert greeting["interrupted"] and not user["went_on"] and user["text"] == "What time do you open?"
    assert answer["continues"] is None and answer["text"] == ANSWER, answer
    assert question["asked"] >= 1 and _went_on_metric(question["metrics"], "no_words") == 0.0
    assert question["record"]["bargeins"][0]["kind"] == "redirect"


LONG_REPLY = (
    "Sure. Your order left our warehouse yesterday afternoon and it is on the delivery truck this morning. "
    "The driver usually arrives between nine and eleven, and you will get a text message about an hour before. "
    "If nobody is at home, the parcel goes to the pickup point on Main Street, next to the pharmacy. "
    "You can also change the delivery address or the day until eight tonight, on the website or here with me."
)


def test_a_reply_cut_while_the_llm_streams_goes_on_to_its_last_whole_sentence(server_factory: Any) -> None:
    async def scenario() -> tuple[dict[str, Any], int]:
        # 50 ms a token: the reply streams for about 4 s, and the caller's sound comes 2 s into its audio
        async with DeepgramServer(()) as dg, ScriptedLlmServer([LONG_REPLY], token_delay_s=0.05) as llm:
            srv = await asyncio.to_thread(
                server_factory, agent_greeting="Hello.", stt_engine="deepgram", deepgram_url=dg.url,
                deepgram_api_key="test-key", llm_base_url=llm.base_url)
            async with EmulatedCall.start("twilio", srv.url) as call:
                await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 10)
                await call.send_audio(read_wav(CLIP))  # a turn the LLM answers (with no words: as ever)
                await call.send_silence(1.0)
                await record_when(srv.url, call.call_id, lambda r: len(r["turns"]) >= 3, timeout_s=20)
                start = call.played_samples
                await call.wait_until(lambda: call.played_samples - start > 2.0 * 8000, 20)
                await call.send_audio(read_wav(CLIP))  # a sound while the reply still streams: stopped
                await call.send_silence(1.2)
                record = await record_when(srv.url, call.call_id, lambda r: len(r["turns"]) >= 5 and bool(
                    r["turns"][4]["ended_at"]), timeout_s=30)
            return record, len(llm.chat_requests)

    record, asked = asyncio.run(scenario())
    reply, user, rest = record["turns"][2:5]
    assert reply["interrupted"] and len(reply["intended_text"]) < len(LONG_REPLY), reply  # cut mid-stream
    assert user["went_on"] and rest["continues"] == reply["id"], record["turns"]
    # the unheard rest as far as whole sentences went, ending on a full stop, never beyond what the LLM said
    assert rest["text"] and rest["text"][-1] in ".!?" and rest["text"] in LONG_REPLY, rest
    assert asked == 1, "the LLM was asked about the turn without words"


async def _went_on_after(server_factory: Any, words: str, at_pause_ms: float, starting: asyncio.Lock) -> float:
    """Seconds from the end of the caller's sound to the agent's next audio at the edge, with a 2.5 s turn-end
    silence: a turn heard at its pause (BARGEIN_GO_ON_AT_PAUSE_MS) need not wait for it."""
    script = script_words(words, start_s=0.3, word_s=0.25) if words else ()
    async with DeepgramServer(script) as dg, ScriptedLlmServer([ANSWER], token_delay_s=0.005) as llm:
        async with starting:
            srv = await asyncio.to_thread(
                server_factory, agent_greeting=GREETING, stt_engine="deepgram", deepgram_url=dg.url,
                deepgram_api_key="test-key", llm_base_url=llm.base_url, turn_end_silence_ms=2500,
                bargein_go_on_at_pause_ms=at_pause_ms)
        async with EmulatedCall.start("twilio", srv.url) as call:
            await call.wait_until(lambda: call.played_samples > 7.5 * 8000, 20)
            sent = (await call.send_audio(read_wav(CLIP)))[-1]
            before = call.played_samples
            silence = asyncio.create_task(call.send_silence(6.0))
            try:
                await call.wait_until(lambda: call.played_samples > before + 0.1 * 8000, 15)
                back = asyncio.get_running_loop().time()
            finally:
                silence.cancel()
            record = await record_when(srv.url, call.call_id, lambda r: len(r["turns"]) >= 3, timeout_s=20)
    user = record["turns"][1]
    assert user["went_on"] is (not words), record["turns"]  # going on early changes when, never whether
    return back - sent


def test_a_turn_without_words_is_heard_at_its_pause_and_the_agent_goes_on_before_the_turn_end_silence(
        server_factory: Any) -> None:
    async def three() -> list[float]:
        starting = asyncio.Lock()
        return list(await asyncio.gather(
            _went_on_after(server_factory, "", 250.0, starting),
            _went_on_after(server_factory, "", 0.0, starting),
            _went_on_after(server_factory, "What time do you open?", 250.0, starting)))

    early, at_turn_end, answered = asyncio.run(three())
    print(f"went on after {early:.2f} s (heard at the pause), {at_turn_end:.2f} s (at the turn's end); "
          f"answered after {answered:.2f} s")
    # 250 ms of pause, the recognizer (loopback) and the playback lead, well inside the 2.5 s silence
    assert early < 1.5, f"went on {early:.2f} s after the sound"
    # (from the clip's last frame: its speech ends a little before it, so 2.0 s, not 2.5)
    assert at_turn_end > 2.0, f"without hearing at the pause it went on after {at_turn_end:.2f} s"
    # words: the pause's hearing lets the turn run to its silence, and the answer comes after it, as ever
    assert answered > 2.0, f"answered {answered:.2f} s after the caller's words"


def test_a_turn_that_ends_while_its_pause_is_being_heard_goes_on_or_is_answered_by_its_words(
        server_factory: Any) -> None:
    """The turn-end silence (280 ms) comes a frame after the pause's hearing starts (250 ms). Without words (the
    Deepgram loopback, quick) the agent goes on. With words, heard by the embedded Whisper (hundreds of ms, so
    still in flight when the turn ends), the turn is heard whole and answered, not taken for a turn of sounds."""
    async def call(stt: str, starting: asyncio.Lock) -> tuple[dict[str, Any], int]:
        async with DeepgramServer(()) as dg, ScriptedLlmServer([ANSWER], token_delay_s=0.005) as llm:
            async with starting:
                srv = await asyncio.to_thread(
                    server_factory, agent_greeting=GREETING, stt_engine=stt, deepgram_url=dg.url,
                    deepgram_api_key="test-key", llm_base_url=llm.base_url, turn_end_silence_ms=280,
                    bargein_go_on_at_pause_ms=250)
            async with EmulatedCall.start("twilio", srv.url) as call:
                await call.wait_until(lambda: call.played_samples > 7.5 * 8000, 20)
                await call.send_audio(read_wav(CLIP))
                await call.send_silence(2.0)
                record = await record_when(srv.url, call.call_id, _third_turn_over, timeout_s=30)
        return record, len(llm.chat_requests)

    async def both() -> list[tuple[dict[str, Any], int]]:
        starting = asyncio.Lock()
        return list(await asyncio.gather(call("deepgram", starting), call("whisper", starting)))

    (silent, asked_silent), (spoken, asked_spoken) = asyncio.run(both())
    greeting, user, rest = silent["turns"][:3]
    assert user["went_on"] and rest["continues"] == greeting["id"] and asked_silent == 0, silent["turns"]
    greeting, user, answer = spoken["turns"][:3]
    assert greeting["interrupted"] and not user["went_on"], spoken["turns"]
    assert len(user["text"].split()) >= 2, user  # the read clip's words ("Chapter twenty-nine"), heard whole
    assert answer["text"] == ANSWER and answer["continues"] is None and asked_spoken >= 1, answer
