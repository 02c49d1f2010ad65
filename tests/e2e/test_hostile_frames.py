"""Hostile frames over real sockets: one caller's oversized media must cost the server almost nothing.

The real app under uvicorn (websockets-sansio, the WebSocket message cap as `bargein serve` sets it), an honest
call through the provider-edge emulator, and beside it a hostile party sending the worst media there is:
silence with a loud tail (the silence is queued for Silero, the tail makes the model run it all at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from app.audio import pcm16_to_ulaw
from app.edge import wire
from app.edge.emulator import EmulatedCall, Provider
from app.offline.corpus import Clip, load_clip, read_manifest, white_noise

GREETING = "Welcome. " + " ".join(["I will keep talking until you interrupt me."] * 8)
HEALTH_EVERY_S = 0.02
HEALTH_BOUND_S = 0.2
ONSET_TO_CLEAR_BOUND_S = 0.4
# LoopWatch wakes every 10 ms and records how late it woke, and how much of that the loop thread spent on the
# CPU (`loop_held_ms`): waiting for the GIL, which this in-process server shares with the emulator, the health
# probe and the hostile client, or for one of the two cores, is not counted. The target is no stall over 20 ms;
# the bound is looser for a busy CI box: measured 3-13 ms here with the caps in place, against 1-5 s for the
# old server on the 1 MB frame alone.
LOOP_STALL_BOUND_MS = 100.0


def speech_clip() -> tuple[Clip, float]:
    """A read sentence, and when its speech starts (s into the clip)."""
    clip = [r for r in read_manifest() if r.category == "read"][3]
    assert clip.speech_onset_s is not None
    return clip, clip.speech_onset_s


def worst_media(size: int) -> bytes:
    """`size` bytes of mu-law: digital silence, then 500 ms of loud noise."""
    tail = pcm16_to_ulaw(white_noise(0.5, -10.0, seed=3))[: min(4000, size)]
    return b"\xff" * (size - len(tail)) + tail


def media_text(call: EmulatedCall, payload: bytes, chunk: int = 9000, suffix: str = "") -> str:
    message = wire.media_message(call, chunk, chunk * 20.0, 0.0, payload)
    message["media"]["payload"] += suffix
    return json.dumps(message, separators=(",", ":"))


@dataclass
class HealthProbe:
    """GET /healthz every 20 ms for as long as it runs; each answer's latency, and any failure."""

    url: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, trust_env=False, timeout=2.0) as http:
            while True:
                started = time.monotonic()
                try:
                    response = await http.get("/healthz")
                    if response.status_code != 200:
                        self.failures.append(f"status {response.status_code}")
                except httpx.HTTPError as exc:
                    self.failures.append(type(exc).__name__)
                took = time.monotonic() - started
                self.latencies.append(took)
                await asyncio.sleep(max(0.0, HEALTH_EVERY_S - took))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def hostile_stream(provider: Provider, url: str, call_id: str | None, size: int) -> EmulatedCall:
    """A stream of the hostile call that sends one media frame of `size` bytes, once it has started."""
    for _ in range(100):
        # The previous stream of this call may not have been let go yet (the server allows one stream per call
        # and refuses a second with 1008): then try again.
        call = EmulatedCall(provider, url, call_id=call_id, idle_audio="none")
        await call.connect()
        try:
            await call.send_raw(media_text(call, worst_media(size)))
        except ConnectionClosed:
            pass  # the server hung up while the frame was still going out
        with contextlib.suppress(TimeoutError):
            await call.wait_closed(1.0)  # (not closed: the frame was taken in, and the assertions say so)
        await call.close()
        if call.close_code != 1008:
            return call
        await asyncio.sleep(0.01)
    raise AssertionError("the hostile stream was never accepted")


async def stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
        data: dict[str, Any] = (await http.get("/stats")).json()
        return data


async def invalid_frames_total(url: str, provider: str) -> float:
    async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
        text = (await http.get("/metrics")).text
    prefix = f'bargein_invalid_frames_total{{kind="invalid",provider="{provider}"}} '
    return sum(float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix))


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
def test_oversized_frames_close_only_their_stream_and_the_honest_call_barges_in(
    provider: Provider, server_factory: Any
) -> None:
    async def scenario() -> None:
        srv = server_factory(agent_greeting=GREETING)
        probe = HealthProbe(srv.url)
        async with EmulatedCall.start(provider, srv.url) as honest:
            await honest.wait_until(lambda: honest.played_samples > 4000, 10)
            async with httpx.AsyncClient(base_url=srv.url, trust_env=False) as http:
                await http.post("/stats/reset")  # start-up (model load, first synthesis) is not under test
            probe.start()

            async def hostile_party() -> list[EmulatedCall]:
                first = await hostile_stream(provider, srv.url, None, 1_000_000)
                rest = [await hostile_stream(provider, srv.url, first.call_id, 100_000) for _ in range(20)]
                return [first, *rest]

            speech, speech_onset_s = speech_clip()
            speaking = asyncio.create_task(honest.send_audio(load_clip(speech)[:8000]))
            # The hostile frames go out from the caller's speech onset on: while the server detects it.
            await asyncio.sleep(speech_onset_s)
            hostile = await hostile_party()
            sent = await speaking
            await honest.wait_until(lambda: bool(honest.clears), 5)
            await probe.stop()
            server_stats = await stats(srv.url)

        # Every hostile stream was closed for its message's size, by the WebSocket layer, before any parsing.
        assert [c.close_code for c in hostile] == [1009] * 21, [c.close_code for c in hostile]
        assert all(c.closed_by == "server" for c in hostile)
        # The honest call never noticed.
        onset = sent[0] - 0.02 + speech_onset_s
        assert hostile[0].connected_at is not None and hostile[-1].closed_at is not None
        assert hostile[0].connected_at < honest.clears[0] and hostile[-1].closed_at > onset, "no overlap"
        assert not honest.violations, honest.violations
        assert 0 < honest.clears[0] - onset <= ONSET_TO_CLEAR_BOUND_S, honest.clears[0] - onset
        assert not probe.failures, probe.failures
        assert len(probe.latencies) >= 20
        assert max(probe.latencies) <= HEALTH_BOUND_S, max(probe.latencies)
        assert server_stats["loop_held_ms"]["max"] < LOOP_STALL_BOUND_MS, server_stats

    asyncio.run(scenario())


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
def test_a_frame_under_the_message_cap_but_over_the_payload_cap_is_refused_undecoded(
    provider: Provider, server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="app.call.session")
    # 45,000 bytes is 60,000 base64 characters: the message fits the 64 KiB WebSocket cap, the audio does not
    # fit the 4000-byte payload cap.
    size = 45_000

    async def scenario() -> None:
        srv = server_factory(agent_greeting=GREETING)
        assert srv.settings.ws_max_message_bytes == 65_536 and srv.settings.media_max_payload_bytes == 4000
        probe = HealthProbe(srv.url)
        async with EmulatedCall.start(provider, srv.url) as call:
            await call.wait_until(lambda: call.played_samples > 4000, 10)
            before = await invalid_frames_total(srv.url, provider)
            async with httpx.AsyncClient(base_url=srv.url, trust_env=False) as http:
                await http.post("/stats/reset")
            probe.start()
            # Not base64 at its very end: decoding would refuse it for that, so the reason tells which check ran.
            frames = [media_text(call, worst_media(size), 9000, suffix="@")]
            frames += [media_text(call, worst_media(size), 9001 + i) for i in range(19)]
            assert all(len(f) < 65_536 for f in frames)
            for frame in frames:
                await call.send_raw(frame)
            # The call goes on: its caller still barges in.
            speech, speech_onset_s = speech_clip()
            sent = await call.send_audio(load_clip(speech)[:8000])
            await call.wait_until(lambda: bool(call.clears), 5)
            after = await invalid_frames_total(srv.url, provider)
            async with httpx.AsyncClient(base_url=srv.url, trust_env=False) as http:
                record = (await http.get(f"/calls/{call.call_id}")).json()
            await probe.stop()
            server_stats = await stats(srv.url)
            assert not call.closed

        assert after - before == 20
        assert record["invalid_frames"] == 20
        assert len(record["bargeins"]) == 1
        assert call.clears[0] - (sent[0] - 0.02 + speech_onset_s) <= ONSET_TO_CLEAR_BOUND_S
        reasons = [r.getMessage() for r in caplog.records if "ignored inbound frame" in r.getMessage()]
        assert any(f"media.payload of {size} bytes exceeds the 4000-byte cap" in m for m in reasons), reasons
        assert not any("not valid base64" in m for m in reasons), reasons
        assert max(probe.latencies) <= HEALTH_BOUND_S
        assert server_stats["loop_held_ms"]["max"] < LOOP_STALL_BOUND_MS, server_stats

    asyncio.run(scenario())
