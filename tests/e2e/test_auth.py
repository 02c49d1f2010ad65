"""Signatures and per-call tokens over real sockets: the app sees http:// and 127.0.0.1 while the providers sign
the public https:// URL, as behind a TLS-terminating proxy."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from app.edge.emulator import CallRejected, EmulatedCall

PUBLIC = "https://agent.example.com/voice"
TOKENS = {"twilio": "twilio-auth-token-for-tests", "plivo": "plivo-auth-token-for-tests"}


@pytest.fixture
def secured(server_factory: Any) -> Any:
    return server_factory(
        public_url=PUBLIC,
        twilio_auth_token=TOKENS["twilio"],
        plivo_auth_token=TOKENS["plivo"],
        plivo_enforce_upgrade_signature=True,
        admin_token="admin-secret",
        agent_greeting="Hello there. How can I help?",
    )


def test_signed_webhook_and_upgrade_over_the_public_url_are_accepted(provider: str, secured: Any) -> None:
    async def scenario() -> None:
        async with EmulatedCall.start(provider, secured.url, public_url=PUBLIC, auth_token=TOKENS[provider]) as call:
            assert call.stream_url == f"wss://agent.example.com/voice/{provider}/stream"
            await call.wait_until(lambda: call.received_samples > 0, 10)
            assert not call.violations
        async with httpx.AsyncClient() as client:
            denied = await client.get(f"{secured.url}/calls/{call.call_id}")
            assert denied.status_code == 401  # transcripts are private when auth is on
            allowed = await client.get(
                f"{secured.url}/calls/{call.call_id}", headers={"Authorization": "Bearer admin-secret"}
            )
            assert allowed.status_code == 200
            assert allowed.json()["provider"] == provider

    asyncio.run(scenario())


@pytest.mark.parametrize("case", ["unsigned", "forged", "wrong_url"])
def test_bad_webhook_signatures_are_refused(provider: str, secured: Any, case: str) -> None:
    kwargs: dict[str, Any] = {
        "unsigned": {"public_url": PUBLIC, "answer": True},
        "forged": {"public_url": PUBLIC, "auth_token": "not-the-token"},
        # Signed over the URL the app itself sees, not the public one the provider called.
        "wrong_url": {"public_url": secured.url, "auth_token": TOKENS[provider]},
    }[case]

    async def scenario() -> None:
        with pytest.raises(CallRejected) as rejected:
            await EmulatedCall.start(provider, secured.url, **kwargs)
        assert rejected.value.stage == "webhook"
        assert rejected.value.status == 403

    asyncio.run(scenario())


@pytest.mark.parametrize("case", ["unsigned", "forged"])
def test_bad_upgrade_signatures_are_refused(provider: str, secured: Any, case: str) -> None:
    async def scenario() -> None:
        url = secured.url.replace("http://", "ws://") + f"/{provider}/stream"
        headers = {}
        if case == "forged":
            headers = (
                {"X-Twilio-Signature": "bm90LWEtc2lnbmF0dXJl"}
                if provider == "twilio"
                else {"X-Plivo-Signature-V3": "bm90LWEtc2lnbmF0dXJl", "X-Plivo-Signature-V3-Nonce": "12345"}
            )
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 403

    asyncio.run(scenario())


def test_a_signed_upgrade_with_a_wrong_or_reused_stream_token_is_refused(provider: str, secured: Any) -> None:
    async def scenario() -> None:
        # A correctly signed upgrade, but the per-call token was never issued by the answer webhook.
        forged = EmulatedCall(
            provider, secured.url, public_url=PUBLIC, auth_token=TOKENS[provider], answer=False,
            stream_params={"token": "a" * 60},
        )
        await forged.connect()
        await forged.wait_closed(5)
        assert forged.closed_by == "server"
        assert forged.received_samples == 0  # no audio was ever bridged
        # A genuine call, then a replay of its token for the same call id: single use.
        async with EmulatedCall.start(provider, secured.url, public_url=PUBLIC, auth_token=TOKENS[provider]) as call:
            await call.wait_until(lambda: call.received_samples > 0, 10)
            replay = EmulatedCall(
                provider, secured.url, public_url=PUBLIC, auth_token=TOKENS[provider], answer=False,
                call_id=call.call_id, stream_params=dict(call.custom_parameters) or _plivo_params(call.extra_headers),
            )
            await replay.connect()
            await replay.wait_closed(5)
            assert replay.closed_by == "server"
            assert replay.received_samples == 0

    asyncio.run(scenario())


def _plivo_params(extra_headers: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in extra_headers.replace(",", ";").split(";") if "=" in part)


def test_media_before_start_is_ignored_and_the_call_goes_on(server_factory: Any) -> None:
    srv = server_factory(agent_greeting="Hi.")

    async def scenario() -> None:
        url = srv.url.replace("http://", "ws://") + "/twilio/stream"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send(json.dumps({"event": "media", "sequenceNumber": "1", "streamSid": "MZ1",
                                      "media": {"track": "inbound", "chunk": "1", "timestamp": "0",
                                                "payload": "//7+/w=="}}))
            await ws.send(json.dumps({"event": "start", "sequenceNumber": "2", "streamSid": "MZ1",
                                      "start": {"streamSid": "MZ1", "accountSid": "AC1", "callSid": "CA1",
                                                "tracks": ["inbound"], "customParameters": {},
                                                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                                "channels": 1}}}))
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert first["event"] == "media" and first["streamSid"] == "MZ1"
        async with httpx.AsyncClient() as client:
            record = (await client.get(f"{srv.url}/calls/CA1")).json()
        assert record["turns"][0]["role"] == "agent"

    asyncio.run(scenario())
