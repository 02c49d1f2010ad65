"""The provisional stop over real sockets: the clear goes out at once, then the agent either resumes from where
the caller stopped hearing it (a backchannel, a noise) or ends its turn (the caller goes on talking).

The real app under uvicorn with its defaults (resume policy, echo guard, second look), the provider-edge
emulator, real recorded speech from the test corpus, in real time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.edge.emulator import EmulatedCall
from app.edge.llm_server import ScriptedLlmServer
from app.offline.corpus import load_clip, read_manifest
from tests.e2e.records import record_when

GREETING = (
    "Thanks for calling. This is a long announcement that keeps the agent talking for a while. "
    "Our opening hours are nine to five on weekdays, and ten to two on Saturdays. "
    "You can ask about an order, a delivery or a refund, and I will do my best to help you with it."
)
REPLY = (
    "Sure. Your order left our warehouse yesterday afternoon and it is on the truck now. "
    "The driver usually arrives between nine and eleven in the morning. If nobody is home, the parcel goes to "
    "the pickup point on Main Street. You can also change the address until tonight. Is there anything else?"
)


def speech(category: str, index: int = 0) -> Any:
    return load_clip([r for r in read_manifest() if r.category == category][index])


async def barge_ins(url: str, call_id: str, outcome: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The call record once it holds a barge-in with `outcome`."""
    return await record_when(url, call_id, lambda r: any(b["outcome"] == outcome for b in r["bargeins"]), timeout_s)


def test_a_short_word_over_the_agent_pauses_it_and_it_resumes_from_the_word_the_caller_last_heard(
    provider: str, server_factory: Any
) -> None:
    async def scenario() -> None:
        srv = server_factory(agent_greeting=GREETING)
        async with EmulatedCall.start(provider, srv.url) as call:
            await call.wait_until(lambda: call.played_samples > 2.0 * 8000, 20)
            await call.send_audio(speech("isolated_word"))  # a one-word digit: the stand-in for "yeah"
            await call.wait_until(lambda: bool(call.clears), 5)
            at_clear = call.received_samples  # nothing is sent while the turn is held
            await call.wait_until(lambda: call.received_samples > at_clear + 4000, 3)
            record = await barge_ins(srv.url, call.call_id, "resumed")
            audio = call.received_audio()
        assert not call.violations, call.violations
        [event] = record["bargeins"]
        assert event["reason"] == "backchannel", event
        assert event["llm_closed_ms"] is None
        # The greeting is the call's first audio, so turn positions are positions in what the edge received.
        heard, resumed_from = event["heard_audio_ms"], event["resumed_from_ms"]
        assert resumed_from <= heard <= at_clear / 8.0
        assert heard - resumed_from < 800.0, "resumed more than one word back"
        start = int(round(resumed_from * 8))
        again = audio[at_clear:]
        overlap = min(at_clear - start, len(again), 2000)
        assert overlap > 0 and again[:overlap] == audio[start:start + overlap], "the resumed audio is not the turn's"
        # The turn went on: nothing of the greeting was cut.
        agent = [t for t in record["turns"] if t["role"] == "agent"]
        assert agent and not agent[0]["interrupted"]
        assert not [t for t in record["turns"] if t["role"] == "user"], "a backchannel is not a caller turn"

    asyncio.run(scenario())


def test_the_caller_talking_on_ends_the_agents_turn_closes_its_llm_at_once_and_cuts_it_at_the_clear(
    provider: str, server_factory: Any
) -> None:
    async def scenario() -> None:
        async with ScriptedLlmServer([REPLY], token_delay_s=0.12) as llm:
            srv = server_factory(llm_base_url=llm.base_url, agent_greeting="Hello.")
            async with EmulatedCall.start(provider, srv.url) as call:
                await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 10)
                await asyncio.sleep(0.3)
                start_of_reply = call.received_samples
                await call.send_audio(speech("isolated_word"))  # one word: the agent replies
                await call.wait_until(lambda: call.played_samples - start_of_reply > 2.0 * 8000, 20)
                sent = await call.send_audio(speech("read", 1)[: int(2.0 * 8000)])
                await call.wait_until(lambda: bool(call.clears), 5)
                clear_at = call.clears[0]
                record = await barge_ins(srv.url, call.call_id, "stopped")
                events = list(call.received_events)
        assert not call.violations, call.violations
        [event] = [b for b in record["bargeins"] if b["outcome"] == "stopped"]
        assert event["reason"] == "caller"
        # Settled once the speech outlasted a backchannel, and everything after that was immediate.
        assert 200.0 <= event["settled_ms"] <= 1500.0, event
        assert event["llm_closed_ms"] is not None and event["llm_closed_ms"] <= 100.0, event
        reply_request = [r for r in llm.chat_requests if r.started_at < clear_at][-1]
        assert reply_request.disconnected
        # Cut where the caller stopped hearing it: at the clear, not at the later decision.
        [agent] = [t for t in record["turns"] if t["role"] == "agent" and t["interrupted"]]
        assert agent["heard_audio_ms"] == event["heard_audio_ms"]
        assert REPLY.startswith(agent["heard_text"]) and agent["text"] == agent["heard_text"]
        # Nothing of the interrupted turn played after the clear (the next turn waits for the turn-end silence).
        next_turn = sent[-1] + srv.settings.turn_end_silence_ms / 1000.0
        assert not [t for t, kind in events if kind in ("media", "playAudio") and clear_at < t < next_turn]

    asyncio.run(scenario())


@pytest.mark.parametrize("settings", [
    {"bargein_policy": "confirm"}, {"bargein_policy": "resume"},
    # the echo guard in the path: a guard that muted the caller while the agent talks would fail this
    {"bargein_preset": "speakerphone"}, {"bargein_policy": "resume", "echo_guard": True},
], ids=["confirm", "resume", "speakerphone", "resume-guard"])
def test_speech_over_the_agent_is_detected_under_each_provisional_policy(
    settings: dict[str, Any], server_factory: Any
) -> None:
    async def scenario() -> dict[str, Any]:
        srv = server_factory(agent_greeting=GREETING, **settings)
        async with EmulatedCall.start("twilio", srv.url) as call:
            await call.wait_until(lambda: call.played_samples > 1.5 * 8000, 20)
            sent = await call.send_audio(speech("read", 2)[: int(2.0 * 8000)])
            await call.wait_until(lambda: bool(call.clears), 5)
            record = await barge_ins(srv.url, call.call_id, "stopped")
            record["_clear_after_s"] = call.clears[0] - sent[0]
        return record

    record = asyncio.run(scenario())
    [event] = record["bargeins"]
    assert event["outcome"] == "stopped" and event["reason"] == "caller"
    assert record["_clear_after_s"] < 1.0
