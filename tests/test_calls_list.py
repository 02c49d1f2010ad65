"""GET /calls over real sockets: the real app under uvicorn, calls driven by the provider-edge emulator."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from app.call.registry import CallRegistry
from app.clock import MonotonicClock
from app.edge.emulator import EmulatedCall
from app.offline.corpus import load_clip, read_manifest

GREETING = "Welcome. " + " ".join(["I will keep talking until you interrupt me."] * 6)
PUBLIC = "https://agent.example.com/voice"
TOKENS = {"twilio": "twilio-auth-token-for-tests", "plivo": "plivo-auth-token-for-tests"}
ADMIN = {"Authorization": "Bearer admin-secret"}


async def list_calls(url: str, headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await client.get(f"{url}/calls", params=params, headers=headers)


async def wait_ended(url: str, call_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The call's entry in GET /calls once the server has read the caller's stop."""
    for _ in range(100):
        response = await list_calls(url, headers)
        response.raise_for_status()
        [entry] = [c for c in response.json()["calls"] if c["id"] == call_id]
        if entry["end_reason"] is not None:
            return dict(entry)
        await asyncio.sleep(0.05)
    raise AssertionError(f"call {call_id} never ended: {entry}")


def test_calls_lists_a_call_with_its_turn_and_bargein_counts(provider: str, server_factory: Any) -> None:
    speech = load_clip(next(c for c in read_manifest() if c.category == "read"))[: 8000]

    async def scenario() -> None:
        srv = server_factory(agent_greeting=GREETING)
        async with EmulatedCall.start(provider, srv.url) as call:
            await call.wait_until(lambda: call.played_samples > 4000, 10)
            live = (await list_calls(srv.url)).json()["calls"]
            assert [(c["id"], c["active"], c["ended_at"]) for c in live] == [(call.call_id, True, None)]
            await call.send_audio(speech)
            await call.wait_until(lambda: bool(call.clears), 5)
            await call.hangup()
            entry = await wait_ended(srv.url, call.call_id)
        record = srv.registry.get(call.call_id)
        assert entry == {
            "id": call.call_id,
            "provider": provider,
            "started_at": record.started_at,
            "ended_at": record.ended_at,
            "end_reason": "stop",
            "active": False,
            "turns": len(record.turns),
            "bargeins": len(record.bargeins),
        }
        # Speech this early in the call's first reply can first be taken for echo (and resumed) before the
        # echo guard has had time to find that the line has none: at least one barge-in ended the greeting.
        assert [b.outcome for b in record.bargeins].count("stopped") == 1
        assert entry["turns"] >= 2  # the interrupted greeting and the caller's turn
        assert entry["started_at"] <= entry["ended_at"]

    asyncio.run(scenario())


def test_calls_are_listed_newest_first_and_limit_caps_the_list(server_factory: Any) -> None:
    async def scenario() -> None:
        srv = server_factory(agent_greeting="Hello.")
        ids = []
        for provider in ("twilio", "plivo", "twilio"):
            async with EmulatedCall.start(provider, srv.url) as call:
                await call.wait_until(lambda: call.received_samples > 0, 10)  # noqa: B023
                await call.hangup()
                await wait_ended(srv.url, call.call_id)
                ids.append(call.call_id)
        newest_first = ids[::-1]
        everything = (await list_calls(srv.url)).json()["calls"]
        assert [c["id"] for c in everything] == newest_first
        assert [c["provider"] for c in everything] == ["twilio", "plivo", "twilio"]
        two = (await list_calls(srv.url, limit=2)).json()["calls"]
        assert [c["id"] for c in two] == newest_first[:2]
        assert [c["id"] for c in (await list_calls(srv.url, limit=1000)).json()["calls"]] == newest_first
        for bad in (0, -1, 1001, "many"):
            assert (await list_calls(srv.url, limit=bad)).status_code == 422, bad

    asyncio.run(scenario())


def test_calls_list_needs_the_admin_token_when_auth_is_on(server_factory: Any) -> None:
    async def scenario() -> None:
        srv = server_factory(
            public_url=PUBLIC, twilio_auth_token=TOKENS["twilio"], plivo_auth_token=TOKENS["plivo"],
            admin_token="admin-secret", agent_greeting="Hello.",
        )
        async with EmulatedCall.start("twilio", srv.url, public_url=PUBLIC, auth_token=TOKENS["twilio"]) as call:
            await call.wait_until(lambda: call.received_samples > 0, 10)
            for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "admin-secret"}):
                assert (await list_calls(srv.url, headers)).status_code == 401, headers
            # The token is checked before the query: a stranger learns nothing from a bad limit either.
            assert (await list_calls(srv.url, limit=5000)).status_code == 401
            allowed = await list_calls(srv.url, ADMIN, limit=10)
            assert allowed.status_code == 200
            assert [(c["id"], c["provider"], c["active"]) for c in allowed.json()["calls"]] == [
                (call.call_id, "twilio", True)
            ]

    asyncio.run(scenario())


@pytest.mark.parametrize("limit", [1, 2])
def test_registry_recent_lists_without_changing_records(limit: int) -> None:
    """The listing is read-only: it neither opens, closes nor reorders what GET /calls/{id} sees."""
    registry = CallRegistry(10, 3600.0, MonotonicClock())
    a, _ = registry.open("CA-a", "twilio", "key-a", 100.0)
    b, _ = registry.open("CA-b", "plivo", "key-b", 200.0)
    registry.close(a, "key-a", "stop", 150.0)
    before = (registry.active, registry.calls_total, a.to_json(), b.to_json())
    assert registry.recent(limit) == [b, a][:limit]
    assert (registry.active, registry.calls_total, a.to_json(), b.to_json()) == before
