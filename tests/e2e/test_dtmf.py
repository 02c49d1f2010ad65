"""DTMF over real sockets: a key over the talking agent stops it at once, the keys go into the caller's turn and
the next LLM request, and the turn ends on the terminator key or after the inter-digit wait.

The real app under uvicorn, the provider-edge emulator sending the providers' own `dtmf` frames, and a loopback
LLM that speaks OpenAI's streaming protocol (it keeps every request, so the test reads what the LLM was asked).
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.call.session import CUT_MARK
from app.edge.emulator import EmulatedCall
from app.edge.llm_server import ScriptedLlmServer
from tests.e2e.records import record_when

GREETING = (
    "Thanks for calling. This is a long announcement that keeps the agent talking for a while. "
    "Our opening hours are nine to five on weekdays, and ten to two on Saturdays."
)


def test_a_key_over_the_agent_stops_it_and_the_keys_reach_the_llm(provider: str, server_factory: Any) -> None:
    async def scenario() -> None:
        async with ScriptedLlmServer(["You pressed some keys."], token_delay_s=0.01) as llm:
            srv = server_factory(llm_base_url=llm.base_url, agent_greeting=GREETING)
            async with EmulatedCall.start(provider, srv.url) as call:
                await call.wait_until(lambda: call.played_samples > 1.0 * 8000, 20)
                sent_at = await call.send_dtmf("1")
                await call.wait_until(lambda: bool(call.clears), 2)
                clear_after_s = call.clears[0] - sent_at
                await call.send_dtmf("2")
                await call.send_dtmf("#")  # the terminator: the caller's turn ends now, not after the wait
                await call.wait_until(lambda: bool(llm.chat_requests), 3)
                record = await record_when(srv.url, call.call_id, lambda r: any(
                    t["role"] == "user" and t["ended_at"] for t in r["turns"]))
        assert not call.violations, call.violations
        assert clear_after_s < 0.2, clear_after_s
        [event] = record["bargeins"]
        assert (event["outcome"], event["reason"]) == ("stopped", "dtmf")
        agent, user = record["turns"][0], record["turns"][1]
        assert agent["interrupted"] and GREETING.startswith(agent["heard_text"]) and agent["heard_text"] != GREETING
        assert (user["role"], user["keys"]) == ("user", "12#")
        asked = llm.chat_requests[-1].messages
        assert asked[-1] == {"role": "user", "content": "[the caller pressed the keys: 1 2 #]"}
        # the interrupted greeting goes in as heard, not as written
        assert asked[-2]["content"] == agent["heard_text"] + CUT_MARK

    asyncio.run(scenario())


def test_with_dtmf_interrupts_off_keys_over_the_agent_do_not_stop_it_and_are_answered_when_it_finishes(
    server_factory: Any,
) -> None:
    async def scenario() -> tuple[dict[str, Any], float]:
        # the greeting's first two sentences (about 5 s): the keys' turn waits out the rest of them, 10 x the wait
        srv = server_factory(agent_greeting=GREETING.split(" Our opening")[0], dtmf_interrupts=False,
                             dtmf_interdigit_ms=400)
        async with EmulatedCall.start("twilio", srv.url) as call:
            await call.wait_until(lambda: call.played_samples > 1.0 * 8000, 10)
            await call.send_dtmf("7")
            await call.send_dtmf("3")
            record = await record_when(srv.url, call.call_id, lambda r: len(r["turns"]) >= 3 and any(
                t["role"] == "user" and t["ended_at"] for t in r["turns"]), timeout_s=20)
        assert not call.clears
        return record, srv.settings.dtmf_interdigit_ms / 1000.0

    record, wait_s = asyncio.run(scenario())
    assert not record["bargeins"]
    greeting, user, reply = record["turns"][:3]
    assert not greeting["interrupted"] and greeting["ended_at"] is not None
    assert (user["role"], user["keys"], reply["role"]) == ("user", "73", "agent")
    # the keys' turn waited for the greeting to finish (the greeting lasts several seconds, the wait 0.4 s)
    assert user["ended_at"] >= greeting["ended_at"] - 0.1 and user["ended_at"] - user["started_at"] > 3 * wait_s


def test_a_key_inside_an_uninterruptible_span_does_not_stop_the_agent(
    server_factory: Any,
) -> None:
    async def scenario() -> dict[str, Any]:
        srv = server_factory(agent_greeting="[[This call may be recorded for quality and training purposes, "
                             "and by staying on the line you agree to it.]] How can I help?")
        async with EmulatedCall.start("twilio", srv.url) as call:
            await call.wait_until(lambda: call.played_samples > 0.8 * 8000, 10)
            await call.send_dtmf("5")
            await asyncio.sleep(0.5)
            cleared = bool(call.clears)
            record = await record_when(srv.url, call.call_id, lambda r: any(
                t["role"] == "user" and t["ended_at"] for t in r["turns"]), timeout_s=20)
        assert not cleared, "a key inside an uninterruptible span stopped the agent"
        return record

    record = asyncio.run(scenario())
    assert not record["turns"][0]["interrupted"]
    assert [t["keys"] for t in record["turns"] if t["role"] == "user"] == ["5"]
