"""The heard position under a real network: the emulator delays every frame each way by 40 ms +/- 15 ms (80 ms
round trip, the cloud-region-to-carrier-edge preset), and the server's cut must still land where the caller
stopped hearing: what the edge had played when the clear reached it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest

from app.edge.emulator import EmulatedCall, Network
from app.offline.corpus import load_clip, read_manifest

GREETING = (
    "Thanks for calling. This is a long announcement that keeps the agent talking for a while. "
    "Our opening hours are nine to five on weekdays, and ten to two on Saturdays. "
    "You can ask about an order, a delivery or a refund, and I will do my best to help you with it."
)
TOLERANCE_MS = 40.0


async def interrupt_once(provider: str, url: str, network: Network | None, after_s: float) -> dict[str, float]:
    """Interrupt the greeting `after_s` into it; the server's heard position and what the edge really played."""
    speech = [r for r in read_manifest() if r.category == "read"][1]
    async with EmulatedCall.start(provider, url, network=network) as call:
        await call.wait_until(lambda: call.played_samples > after_s * 8000, 20)
        await call.send_audio(load_clip(speech)[: int(1.2 * 8000)])
        await call.wait_until(lambda: bool(call.clears), 5)
        clear_at = call.clears[0]  # when the clear reached the edge: the caller heard the agent until then
        record: dict[str, Any] = {}
        async with httpx.AsyncClient(trust_env=False) as client:
            for _ in range(100):
                response = await client.get(f"{url}/calls/{call.call_id}")
                record = response.json()
                if record["bargeins"]:
                    break
                await asyncio.sleep(0.05)
        position = call.position_at(clear_at - 1e-4)
        delays = call.one_way_delays_ms
    assert position is not None, "nothing was playing when the clear arrived"
    assert not call.violations, call.violations
    [turn] = [t for t in record["turns"] if t["role"] == "agent" and t["interrupted"]]
    played_ms = (position + 1) / 8.0  # the greeting is the first audio of the call
    return {
        "heard_ms": float(turn["heard_audio_ms"]),
        "played_ms": played_ms,
        "error_ms": float(turn["heard_audio_ms"]) - played_ms,
        "mean_down_ms": float(np.mean(delays["to_edge"])) if delays["to_edge"] else 0.0,
    }


@pytest.mark.parametrize("after_s", [2.4, 3.3])
def test_the_cut_matches_what_the_caller_heard_over_an_80_ms_round_trip_with_jitter(
    after_s: float, server_factory: Any
) -> None:
    # One call per provider (each wire's marks or checkpoints carry the heard position), both at once, each on its
    # own server and its own seeded network.
    async def one(provider: str) -> dict[str, float]:
        srv = await asyncio.to_thread(server_factory, agent_greeting=GREETING)
        seed = int(after_s * 10) + (0 if provider == "twilio" else 100)
        return await interrupt_once(provider, srv.url, Network.cloud_to_carrier(seed=seed), after_s)

    async def scenario() -> list[dict[str, float]]:
        return list(await asyncio.gather(one("twilio"), one("plivo")))

    for provider, result in zip(("twilio", "plivo"), asyncio.run(scenario()), strict=True):
        assert 25.0 <= result["mean_down_ms"] <= 55.0, (provider, result)  # the network really was there
        assert abs(result["error_ms"]) <= TOLERANCE_MS, (provider, result)


def test_without_a_network_the_emulator_is_loopback(server_factory: Any) -> None:
    async def scenario() -> dict[str, float]:
        srv = server_factory(agent_greeting=GREETING)
        return await interrupt_once("twilio", srv.url, None, 2.4)

    result = asyncio.run(scenario())
    assert result["mean_down_ms"] == 0.0
    assert abs(result["error_ms"]) <= TOLERANCE_MS, result
