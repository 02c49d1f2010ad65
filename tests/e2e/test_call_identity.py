"""One live stream per call, and tokens that mean it, over real sockets: the real app under uvicorn, the
provider-edge emulator, signed webhooks and upgrades, and an attacker who replays what it can.

The attacks: a second `start` for a live call (it would share the call's record, so the agent would answer it
with the first caller's conversation as context); a replayed signed answer webhook (it would mint a second
token); a Twilio call's token presented on /plivo/stream (which would skip the Twilio upgrade check); a
request to the embedded LLM from outside the server.
"""

from __future__ import annotations

import asyncio
import json
import time
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import numpy as np
import pytest

from app.call.registry import CallInUse, CallRegistry
from app.clock import FakeClock
from app.edge import wire
from app.edge.emulator import EmulatedCall
from app.edge.signing import sign_plivo
from app.offline.corpus import load_clip, read_manifest
from app.stream_tokens import StreamTokens
from providers.llm.scripted import REPLIES

PUBLIC = "https://agent.example.com/voice"
TOKENS = {"twilio": "twilio-auth-token-for-tests", "plivo": "plivo-auth-token-for-tests"}
ADMIN = {"Authorization": "Bearer admin-secret"}
STREAM_SECRET = "e2e-stream-token-secret"
GREETING = "Welcome. " + " ".join(["I will keep talking until you interrupt me."] * 8)
OTHER: dict[str, str] = {"twilio": "plivo", "plivo": "twilio"}


@pytest.fixture
def secured(server_factory: Any) -> Any:
    return server_factory(
        public_url=PUBLIC,
        twilio_auth_token=TOKENS["twilio"],
        plivo_auth_token=TOKENS["plivo"],
        plivo_enforce_upgrade_signature=True,
        admin_token="admin-secret",
        stream_token_secret=STREAM_SECRET,
        agent_greeting=GREETING,
    )


def speech(seconds: float = 1.0) -> np.ndarray:
    row = [r for r in read_manifest() if r.category == "read"][3]
    return load_clip(row)[: int(seconds * 8000)]


async def get_record(url: str, call_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/calls/{call_id}", headers=ADMIN)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


async def active_calls(url: str) -> int:
    async with httpx.AsyncClient() as client:
        return int((await client.get(f"{url}/healthz")).json()["active_calls"])


def identity(record: dict[str, Any]) -> dict[str, Any]:
    """What a second stream must not change: whose streams, which generation, which turns, and liveness."""
    return {
        "stream_ids": record["stream_ids"],
        "generation": record["generation"],
        "turns": [(t["id"], t["role"]) for t in record["turns"]],
        "active": record["active"],
        "ended_at": record["ended_at"],
        "bargeins": record["bargeins"],
    }


async def intrude(provider: str, url: str, call_id: str, **kwargs: Any) -> EmulatedCall:
    """A second stream that names `call_id` in its `start`; returns once the server has closed it."""
    intruder = EmulatedCall(provider, url, call_id=call_id, answer=False, **kwargs)
    try:
        await intruder.connect()
        await intruder.wait_closed(5)
    finally:
        await intruder.close()
    return intruder


async def barges_in(call: EmulatedCall, url: str) -> dict[str, Any]:
    """The caller talks over the agent: the clear comes, and the barge-in is in the call's record."""
    await call.send_audio(speech())
    await call.wait_until(lambda: bool(call.clears), 5)
    record = await get_record(url, call.call_id)
    assert len(record["bargeins"]) == 1
    assert record["turns"][0]["interrupted"]
    return record


def twilio_token(xml: str) -> str:
    params = ET.fromstring(xml).findall("./Connect/Stream/Parameter")
    return str(params[0].get("value"))


def plivo_token(xml: str) -> str:
    (stream,) = ET.fromstring(xml).findall("Stream")
    name, _, token = (stream.get("extraHeaders") or "").partition("=")
    assert name == "token"
    return token


def token_of(provider: str, xml: str) -> str:
    return twilio_token(xml) if provider == "twilio" else plivo_token(xml)


def answer_webhook(leg: EmulatedCall) -> tuple[str, dict[str, str], dict[str, str]]:
    """The provider's signed answer webhook for `leg`'s call: (path, form, headers), kept so it can be replayed."""
    return wire.webhook_request(leg, TOKENS[leg.provider], None)


async def post(url: str, path: str, params: dict[str, str], headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        return await client.post(url + path, data=params, headers=headers)


# --------------------------------------------------------------------------------------------------------
# One live stream per call
# --------------------------------------------------------------------------------------------------------


def test_the_registry_knows_which_stream_owns_a_live_call() -> None:
    registry = CallRegistry(10, 60.0, FakeClock())
    record, is_new = registry.open("CA1", "twilio", "stream-a", 1.0)
    assert is_new and registry.active == 1 and registry.calls_total == 1
    for provider in ("twilio", "plivo"):  # whatever provider the stranger claims
        with pytest.raises(CallInUse):
            registry.open("CA1", provider, "stream-b", 2.0)
    assert registry.get("CA1") is record and registry.calls_total == 1 and record.ended_at is None
    # A refused stream's end cannot end the call.
    assert not registry.close(record, "stream-b", "socket closed", 3.0)
    assert registry.active == 1 and record.ended_at is None and registry.is_live("CA1")
    # The owner's can, and then a reconnect gets the same record back.
    assert registry.close(record, "stream-a", "socket closed", 4.0)
    assert registry.active == 0 and record.ended_at == 4.0
    again, is_new = registry.open("CA1", "twilio", "stream-b", 5.0)
    assert again is record and not is_new and record.ended_at is None and registry.active == 1
    assert not registry.close(record, "stream-a", "late close of the old stream", 6.0)
    assert registry.active == 1



def test_a_second_start_for_a_live_call_is_refused_and_the_call_goes_on(provider: str, server_factory: Any) -> None:
    """Insecure development mode: no token is needed, so only the one-stream rule stands in the way."""
    srv = server_factory(agent_greeting=GREETING)

    async def scenario() -> None:
        async with EmulatedCall.start(provider, srv.url) as first:
            await first.wait_until(lambda: first.played_samples > 4000, 10)
            before = await get_record(srv.url, first.call_id)
            assert before["stream_ids"] == [first.stream_id] and before["active"]
            intruder = await intrude(provider, srv.url, first.call_id)
            assert intruder.closed_by == "server" and intruder.close_code == 1008
            assert intruder.received_samples == 0  # not a byte of the call's audio
            # Even a second stream that reuses the live stream's own id is a stranger: ids come from the peer.
            twin = EmulatedCall(provider, srv.url, call_id=first.call_id, answer=False)
            twin.stream_id = first.stream_id
            await twin.connect()
            await twin.wait_closed(5)
            await twin.close()
            assert twin.close_code == 1008 and twin.received_samples == 0
            after = await get_record(srv.url, first.call_id)
            assert identity(after) == identity(before)
            assert after["invalid_frames"] == before["invalid_frames"]
            assert await active_calls(srv.url) == 1 and srv.registry.active == 1
            # The first call still owns its stream: it plays on and the caller can still cut in.
            assert not first.closed
            await barges_in(first, srv.url)
        await first.wait_closed(5)
        for _ in range(100):  # the first stream's own end does end the call
            if not (await get_record(srv.url, first.call_id))["active"]:
                break
            await asyncio.sleep(0.05)
        assert not (await get_record(srv.url, first.call_id))["active"]
        assert await active_calls(srv.url) == 0

    asyncio.run(scenario())


def test_with_auth_on_a_second_stream_or_start_for_a_live_call_changes_nothing(provider: str, secured: Any) -> None:
    async def scenario() -> None:
        async with EmulatedCall.start(
            provider, secured.url, public_url=PUBLIC, auth_token=TOKENS[provider]
        ) as first:
            await first.wait_until(lambda: first.played_samples > 4000, 10)
            before = await get_record(secured.url, first.call_id)
            signed = {"public_url": PUBLIC, "auth_token": TOKENS[provider]}
            # Another socket, correctly signed upgrade, with the call's own (already used) token...
            used = dict(first.custom_parameters) if provider == "twilio" else dict(
                part.split("=", 1) for part in first.extra_headers.split(";") if "=" in part
            )
            replayed = await intrude(provider, secured.url, first.call_id, stream_params=used, **signed)
            # ...and with a genuine second token for the call, as a replica sharing the secret would mint it.
            minted = StreamTokens(STREAM_SECRET.encode(), 60.0, time.time).issue(provider, first.call_id)
            second = await intrude(provider, secured.url, first.call_id, stream_params={"token": minted}, **signed)
            for refused in (replayed, second):
                assert refused.closed_by == "server" and refused.close_code == 1008
                assert refused.received_samples == 0
            # A replayed answer webhook gets a hang-up, not a token.
            path, params, headers = answer_webhook(first)
            replay = await post(secured.url, path, params, headers)
            assert replay.status_code == 200
            assert [child.tag for child in ET.fromstring(replay.text)] == ["Hangup"]
            # The same socket: a second `start` (for this call, or naming another) is logged and ignored; the
            # socket stays the first call's.
            for call_id in (first.call_id, "CA" + "9" * 32 if provider == "twilio" else "00000000-0000-4000-8000-9"):
                other = EmulatedCall(provider, secured.url, call_id=call_id, answer=False)
                other.stream_id = first.stream_id
                message = wire.start_message(other)
                message["sequenceNumber"] = "900" if provider == "twilio" else 900
                await first.send_raw(json.dumps(message))
            await asyncio.sleep(0.2)
            after = await get_record(secured.url, first.call_id)
            assert identity(after) == identity(before)
            assert after["invalid_frames"] == before["invalid_frames"] + 2  # the two ignored frames, counted
            assert await active_calls(secured.url) == 1
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{secured.url}/calls/CA{'9' * 32}", headers=ADMIN)).status_code == 404
            assert not first.closed
            await barges_in(first, secured.url)

    asyncio.run(scenario())


def test_a_reconnect_after_the_first_stream_closed_is_accepted(provider: str, server_factory: Any) -> None:
    srv = server_factory(agent_greeting="Hello there.")

    async def scenario() -> None:
        async with EmulatedCall.start(provider, srv.url) as first:
            await first.wait_until(lambda: first.played_samples > 0, 10)
        for _ in range(100):
            if not (await get_record(srv.url, first.call_id))["active"]:
                break
            await asyncio.sleep(0.05)
        ended = await get_record(srv.url, first.call_id)
        assert not ended["active"]
        async with EmulatedCall.start(provider, srv.url, call_id=first.call_id, answer=False) as again:
            await asyncio.sleep(0.5)
            assert not again.closed
            record = await get_record(srv.url, first.call_id)
            assert record["stream_ids"] == [first.stream_id, again.stream_id]
            assert record["generation"] > ended["generation"]  # a fresh ledger generation
            assert record["active"] and [t["id"] for t in record["turns"]] == [t["id"] for t in ended["turns"]]
            assert await active_calls(srv.url) == 1
            # ...and while the reconnected stream is live, the first one's would-be twin is refused.
            intruder = await intrude(provider, srv.url, first.call_id)
            assert intruder.close_code == 1008

    asyncio.run(scenario())


# --------------------------------------------------------------------------------------------------------
# One token per call, bound to its provider
# --------------------------------------------------------------------------------------------------------


def test_a_replayed_answer_webhook_yields_no_second_usable_token(provider: str, secured: Any) -> None:
    async def scenario() -> None:
        leg = EmulatedCall(provider, secured.url, public_url=PUBLIC)
        path, params, headers = answer_webhook(leg)
        answered = await post(secured.url, path, params, headers)
        assert answered.status_code == 200
        token = token_of(provider, answered.text)
        async with EmulatedCall.start(
            provider, secured.url, public_url=PUBLIC, auth_token=TOKENS[provider], answer=False,
            call_id=leg.call_id, stream_params={"token": token},
        ) as call:
            await call.wait_until(lambda: call.received_samples > 0, 10)
            # The captured request, byte for byte. Twilio's signature has no nonce, so it still checks out: the
            # answer is a hang-up. Plivo's nonce was used: refused outright.
            replay = await post(secured.url, path, params, headers)
            if provider == "twilio":
                assert replay.status_code == 200
                assert [child.tag for child in ET.fromstring(replay.text)] == ["Hangup"]
            else:
                assert replay.status_code == 403
                # Even a freshly signed one (Plivo retrying late) gets only a hang-up.
                fresh = sign_plivo(TOKENS["plivo"], "POST", PUBLIC + path, params)
                late = await post(secured.url, path, params, {**headers, **fresh})
                assert [child.tag for child in ET.fromstring(late.text)] == ["Hangup"]
            assert "token" not in replay.text
            # And the token the call already used opens nothing more.
            again = await intrude(
                provider, secured.url, leg.call_id, public_url=PUBLIC, auth_token=TOKENS[provider],
                stream_params={"token": token},
            )
            assert again.close_code == 1008 and again.received_samples == 0
            assert not call.closed
            assert (await get_record(secured.url, leg.call_id))["stream_ids"] == [call.stream_id]

    asyncio.run(scenario())


def test_a_token_for_one_provider_opens_nothing_on_the_other(provider: str, secured: Any) -> None:
    other = OTHER[provider]

    async def scenario() -> None:
        leg = EmulatedCall(provider, secured.url, public_url=PUBLIC)
        path, params, headers = answer_webhook(leg)
        token = token_of(provider, (await post(secured.url, path, params, headers)).text)
        # The same call id and token on the other provider's stream, with that provider's valid upgrade signature.
        crossed = await intrude(
            other, secured.url, leg.call_id, public_url=PUBLIC, auth_token=TOKENS[other],
            stream_params={"token": token},
        )
        assert crossed.closed_by == "server" and crossed.close_code == 1008
        assert crossed.received_samples == 0
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{secured.url}/calls/{leg.call_id}", headers=ADMIN)).status_code == 404
        # The refused try burnt nothing: the token still opens its own provider's stream.
        async with EmulatedCall.start(
            provider, secured.url, public_url=PUBLIC, auth_token=TOKENS[provider], answer=False,
            call_id=leg.call_id, stream_params={"token": token},
        ) as call:
            await call.wait_until(lambda: call.received_samples > 0, 10)
            assert (await get_record(secured.url, leg.call_id))["provider"] == provider

    asyncio.run(scenario())


# --------------------------------------------------------------------------------------------------------
# The embedded LLM answers this server only
# --------------------------------------------------------------------------------------------------------


def test_the_embedded_llm_refuses_strangers_and_still_answers_the_agent(server_factory: Any) -> None:
    srv = server_factory(agent_greeting="Hello.", embedded_llm_token_delay_ms=0)
    body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}], "stream": True}

    async def scenario() -> None:
        url = f"{srv.url}/embedded-llm/v1/chat/completions"
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            # uvicorn trusts X-Forwarded-For from loopback (its default FORWARDED_ALLOW_IPS): a request relayed
            # by a proxy on this host for a remote client carries that client's address, and is refused.
            relayed = await client.post(url, json=body, headers={"X-Forwarded-For": "203.0.113.7"})
            assert relayed.status_code == 403
            # A forged loopback address (or a real local process) without the server's key: refused too.
            forged = await client.post(url, json=body, headers={"X-Forwarded-For": "127.0.0.1"})
            assert forged.status_code == 401
            assert (await client.post(url, json=body)).status_code == 401
            guessed = await client.post(url, json=body, headers={"Authorization": "Bearer guess"})
            assert guessed.status_code == 401
            assert (await client.get(f"{srv.url}/embedded-llm/v1/models")).status_code == 401
        # The server's own client has the key: the agent answers with the scripted LLM's reply.
        async with EmulatedCall.start("twilio", srv.url) as call:
            await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 10)
            greeting = call.received_samples
            await call.send_audio(speech(0.8))
            await call.send_silence(1.0)
            await call.wait_until(lambda: call.received_samples > greeting + 8000, 10)
        for _ in range(100):
            record = await get_record(srv.url, call.call_id)
            if not record["active"]:
                break
            await asyncio.sleep(0.05)
        reply = [t for t in record["turns"] if t["role"] == "agent"][1]
        assert not reply["fallback"]
        # The greeting was the first assistant turn, so the script's second reply comes back.
        assert reply["intended_text"] and REPLIES[1].startswith(reply["intended_text"])

    asyncio.run(scenario())
