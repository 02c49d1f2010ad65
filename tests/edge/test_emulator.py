"""The edge emulator against a tiny fake server that, like ours, sends audio and markers as fast as it can."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import numpy as np
import pytest
from plivo.utils.signature_v3 import validate_v3_signature
from twilio.request_validator import RequestValidator
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from app.audio import pcm16_to_ulaw
from app.edge.emulator import (
    SAMPLE_RATE,
    CallRejected,
    EdgeEmulator,
    EmulatedCall,
    MarkRecord,
    Playout,
    Provider,
)

Script = Callable[[ServerConnection, "FakeServer"], Awaitable[None]]
Upgrade = Callable[[ServerConnection, Request], Response | None]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def agent_audio(n: int, seed: int = 0) -> bytes:
    """Recognisable mu-law bytes (no silence), so the heard log can be compared byte for byte."""
    return bytes((i * 7 + seed * 13 + 3) % 255 for i in range(n))


class FakeServer:
    """A websockets server standing in for ours: a script drives it; everything it receives is logged."""

    def __init__(self, script: Script, process_request: Upgrade | None = None) -> None:
        self.script = script
        self.process_request = process_request
        self.received: list[tuple[float, Any]] = []
        self.changed = asyncio.Event()
        self.url = ""

    async def __aenter__(self) -> FakeServer:
        self.server = await serve(
            self._handler, "127.0.0.1", 0, compression=None, process_request=self.process_request
        )
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _handler(self, ws: ServerConnection) -> None:
        reader = asyncio.create_task(self._read(ws))
        try:
            await self.script(ws, self)
            await reader  # until the caller hangs up
        finally:
            reader.cancel()

    async def _read(self, ws: ServerConnection) -> None:
        async for message in ws:
            self.received.append((time.monotonic(), json.loads(message)))
            self.changed.set()
            self.changed.clear()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for _, m in self.received if m.get("event") == name]

    def times(self, name: str) -> list[float]:
        return [t for t, m in self.received if m.get("event") == name]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 3.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await self.changed.wait()

    async def stream_id(self) -> str:
        await self.wait_for(lambda: bool(self.events("start")))
        start = self.events("start")[0]
        return str(start["streamSid"] if "streamSid" in start else start["start"]["streamId"])


def twilio_media(sid: str, data: bytes) -> str:
    payload = base64.b64encode(data).decode()
    return json.dumps({"event": "media", "streamSid": sid, "media": {"payload": payload}})


def plivo_play(sid: str, data: bytes) -> str:
    media = {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": base64.b64encode(data).decode()}
    return json.dumps({"event": "playAudio", "streamId": sid, "media": media})


# --- the playout model on its own (no sockets, no clock) ---------------------------------------------------


def test_playout_model_plays_at_8000_per_second_and_cuts_exactly() -> None:
    playout = Playout()
    playout.audio(10.0, agent_audio(1600))
    first = MarkRecord("a", 10.0, playout.received)
    assert playout.marker(10.0, first) == []
    playout.audio(10.05, agent_audio(1600, seed=1))
    second = MarkRecord("b", 10.05, playout.received)
    assert playout.marker(10.05, second) == []
    assert playout.next_due() == pytest.approx(10.2)
    assert playout.take_due(10.199) == []
    assert playout.take_due(10.2) == [first] and first.played_at == pytest.approx(10.2)
    due, cut = playout.clear(10.25)
    assert due == [] and cut == [second] and second.cleared and second.played_at is None
    (span,) = playout.spans
    assert (span.start, span.end, span.ended_by) == (10.0, 10.25, "clear")
    assert (span.first_byte, span.end_byte) == (0, 2000)
    assert playout.dropped[0].first_byte == 2000 and playout.dropped[0].end_byte == 3200
    # A mark behind an empty buffer is due at once; new audio starts a new run on arrival.
    assert [m.name for m in playout.marker(10.3, MarkRecord("c", 10.3, playout.received))] == ["c"]
    playout.audio(11.0, agent_audio(80, seed=2))
    playout.advance(12.0)
    assert playout.spans[-1].start == 11.0 and playout.spans[-1].end == pytest.approx(11.01)
    heard = agent_audio(1600) + agent_audio(1600, seed=1)[:400] + agent_audio(80, seed=2)
    assert playout.heard(12.0) == heard
    assert playout.position_at(12.0, 10.1) == 800 and playout.position_at(12.0, 10.5) is None


# --- Twilio ------------------------------------------------------------------------------------------------


def test_twilio_playout_is_real_time_and_marks_wait_for_their_audio() -> None:
    audio = agent_audio(SAMPLE_RATE)  # 1 s, sent as five 200 ms chunks each followed by a mark, at once

    async def script(ws: ServerConnection, server: FakeServer) -> None:
        sid = await server.stream_id()
        for i in range(5):
            await ws.send(twilio_media(sid, audio[i * 1600 : (i + 1) * 1600]))
            await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": f"m{i}"}}))

    async def main() -> None:
        async with FakeServer(script) as server:
            async with EmulatedCall.start("twilio", server.url, idle_audio="none") as call:
                await call.wait_until(lambda: len(call.acked_marks) == 5, timeout_s=3)
                t0 = call.first_audio_at
                assert t0 is not None
                for i, mark in enumerate(call.marks):
                    assert mark.played_at is not None and mark.acked_at is not None
                    assert mark.played_at - t0 == pytest.approx(0.2 * (i + 1), abs=1e-6)
                    assert 0 <= mark.acked_at - mark.played_at < 0.1  # bound: a hiccup on a busy CI box, not a tick
                assert call.marks[-1].received_at - t0 < 0.1  # it all arrived long before it played
                assert call.played_samples == SAMPLE_RATE
                (span,) = call.played_spans
                assert (span.first_byte, span.end_byte, span.ended_by) == (0, SAMPLE_RATE, "drained")
                assert span.end - span.start == pytest.approx(1.0)
                assert call.heard_audio() == audio
                assert call.heard_audio(since=t0 + 0.5) == audio[4000:]
                assert call.violations == []
                await server.wait_for(lambda: len(server.events("mark")) == 5)

        echo_times = server.times("mark")
        assert [t - echo_times[0] for t in echo_times] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8], abs=0.04)
        first, start = server.received[0][1], server.received[1][1]
        assert first == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        assert start["sequenceNumber"] == "1" and start["streamSid"].startswith("MZ")
        assert start["start"]["callSid"].startswith("CA") and start["start"]["tracks"] == ["inbound"]
        media_format = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        assert start["start"]["mediaFormat"] == media_format
        echo = server.events("mark")[0]
        assert set(echo) == {"event", "sequenceNumber", "streamSid", "mark"}
        assert echo["mark"] == {"name": "m0"}
        stop = server.events("stop")[0]
        assert stop["stop"] == {"accountSid": call.account_id, "callSid": call.call_id}
        seqs = [int(m["sequenceNumber"]) for _, m in server.received[1:]]
        assert seqs == list(range(1, len(seqs) + 1))
        assert call.closed_by == "caller"

    run(main())


def test_twilio_clear_echoes_pending_marks_at_once_and_cuts_the_audio_exactly() -> None:
    audio = agent_audio(SAMPLE_RATE)
    clear_sent: list[float] = []

    async def script(ws: ServerConnection, server: FakeServer) -> None:
        sid = await server.stream_id()
        for i in range(5):
            await ws.send(twilio_media(sid, audio[i * 1600 : (i + 1) * 1600]))
            await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": f"m{i}"}}))
        await asyncio.sleep(0.3)
        clear_sent.append(time.monotonic())
        await ws.send(json.dumps({"event": "clear", "streamSid": sid}))
        # Audio sent after the clear survives it and plays at once.
        await ws.send(twilio_media(sid, agent_audio(800, seed=5)))
        await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "after"}}))

    async def main() -> None:
        async with FakeServer(script) as server:
            async with EmulatedCall.start("twilio", server.url, idle_audio="none") as call:
                await call.wait_until(lambda: len(call.acked_marks) == 6, timeout_s=3)
                (cleared_at,) = call.clears
                assert cleared_at - clear_sent[0] < 0.1  # at once, not after the 1 s of buffered audio
                m0, *cut = call.marks[:5]
                t0 = call.first_audio_at
                assert t0 is not None
                assert not m0.cleared and m0.played_at == pytest.approx(t0 + 0.2)
                for mark in cut:
                    assert mark.cleared and mark.played_at is None
                    assert mark.acked_at is not None and 0 <= mark.acked_at - cleared_at < 0.01
                after = call.marks[5]
                assert not after.cleared and after.acked_at is not None
                assert after.acked_at - cleared_at == pytest.approx(0.1, abs=0.04)

                first, second = call.played_spans
                assert first.ended_by == "clear" and first.end == cleared_at
                assert first.end_byte == int((cleared_at - t0) * SAMPLE_RATE + 1e-6)
                assert 2400 - 160 < first.end_byte < 2400 + 400
                assert (second.first_byte, second.end_byte) == (SAMPLE_RATE, SAMPLE_RATE + 800)
                assert call.played_samples == first.end_byte + 800
                assert call.heard_audio() == audio[: first.end_byte] + agent_audio(800, seed=5)
                (dropped,) = call.dropped
                assert (dropped.first_byte, dropped.end_byte) == (first.end_byte, SAMPLE_RATE)
                await server.wait_for(lambda: len(server.events("mark")) == 6)
        # The four cut marks reached the server right after the clear, before the post-clear one.
        names = [m["mark"]["name"] for m in server.events("mark")]
        assert names == ["m0", "m1", "m2", "m3", "m4", "after"]
        echo_times = server.times("mark")
        assert max(echo_times[1:5]) - clear_sent[0] < 0.1

    run(main())


def test_twilio_rejects_what_the_real_edge_would_complain_about() -> None:
    async def script(ws: ServerConnection, server: FakeServer) -> None:
        await ws.send(json.dumps({"event": "mark", "streamSid": "MZx", "mark": {"name": "early"}}))
        sid = await server.stream_id()
        await ws.send(b"\x00\x01")
        await ws.send("{not json")
        await ws.send(json.dumps({"event": "playAudio", "streamSid": sid}))
        await ws.send(json.dumps({"event": "media", "streamSid": "MZwrong", "media": {"payload": "AAAA"}}))
        extra = {"payload": "AAAA", "track": "x"}
        await ws.send(json.dumps({"event": "media", "streamSid": sid, "media": extra}))
        await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {}}))
        await ws.send(json.dumps({"event": "clear", "streamSid": sid, "extra": 1}))
        await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "ok"}}))

    async def main() -> None:
        async with FakeServer(script) as server:
            async with EmulatedCall.start("twilio", server.url, idle_audio="none") as call:
                await call.wait_until(lambda: len(call.acked_marks) == 1)
                reasons = [v.reason for v in call.violations]
                assert len(reasons) == 8, reasons
                assert "before start" in reasons[0]
                assert "binary" in reasons[1] and "invalid JSON" in reasons[2]
                assert "unknown event" in reasons[3] and "wrong streamSid" in reasons[4]
                assert "unexpected field" in reasons[5] and "missing field" in reasons[6]
                assert "unexpected field" in reasons[7]
                assert call.received_samples == 0 and call.clears == []
                assert call.acked_marks[0].name == "ok"

    run(main())


def test_caller_frames_leave_on_an_absolute_20ms_schedule() -> None:
    t = np.arange(4000) / SAMPLE_RATE  # 0.5 s: 25 frames
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)

    async def script(ws: ServerConnection, server: FakeServer) -> None:
        return None

    async def main() -> None:
        async with FakeServer(script) as server:
            async with EmulatedCall.start("twilio", server.url, idle_audio="none") as call:
                await asyncio.sleep(0.05)
                called_at = time.monotonic()
                times = await call.send_audio(pcm)
                assert len(times) == 25
                assert call.started_at is not None
                assert 0 <= times[0] - called_at < 0.02 + 0.01  # sent at the end of its 20 ms
                slots = [(s - call.started_at) / 0.02 for s in times]
                assert [round(s) - round(slots[0]) for s in slots] == list(range(25))
                # No drift: on an absolute schedule the last frames are as punctual as the first, whereas
                # sleeping 20 ms after each send would pile up every oversleep.
                lateness = [t - (times[0] + 0.02 * i) for i, t in enumerate(times)]
                assert abs(float(np.median(lateness[-5:]) - np.median(lateness[:5]))) < 0.005
                await server.wait_for(lambda: len(server.events("media")) == 25)
                more = await call.send_silence(0.04, realtime=False)
                assert len(more) == 2 and more[1] - more[0] < 0.01
                await server.wait_for(lambda: len(server.events("media")) == 27)
                await call.send_dtmf("5")
                await server.wait_for(lambda: bool(server.events("dtmf")))
        media = server.events("media")
        ulaw = pcm16_to_ulaw(pcm)
        assert b"".join(base64.b64decode(m["media"]["payload"]) for m in media[:25]) == ulaw
        assert [m["media"]["chunk"] for m in media] == [str(i) for i in range(1, 28)]
        stamps = [int(m["media"]["timestamp"]) for m in media]
        assert [s - stamps[0] for s in stamps[:25]] == [20 * i for i in range(25)]
        assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
        assert set(media[0]) == {"event", "sequenceNumber", "streamSid", "media"}
        assert set(media[0]["media"]) == {"track", "chunk", "timestamp", "payload"}
        assert server.events("dtmf")[0]["dtmf"] == {"track": "inbound_track", "digit": "5"}

    run(main())


def test_idle_caller_sends_silence_and_server_hangup_is_recorded() -> None:
    async def script(ws: ServerConnection, server: FakeServer) -> None:
        await server.stream_id()
        await asyncio.sleep(0.2)
        await ws.close()

    async def main() -> None:
        async with FakeServer(script) as server, EmulatedCall.start("twilio", server.url) as call:
            await call.wait_closed(2)
            assert call.closed_by == "server" and call.close_code == 1000
            assert 7 <= call.frames_sent <= 12
            assert await call.send_audio(np.zeros(160, dtype=np.int16)) == []
        frames = server.events("media")
        silence = base64.b64encode(b"\xff" * 160).decode()
        assert frames and all(m["media"]["payload"] == silence for m in frames)

    run(main())


def test_a_hissing_idle_line_sends_quiet_white_noise_not_digital_silence() -> None:
    from app.audio import ulaw_to_pcm16
    from app.edge.caller import HISS_DBFS

    async def script(ws: ServerConnection, server: FakeServer) -> None:
        await server.stream_id()
        await asyncio.sleep(0.3)
        await ws.close()

    async def main() -> None:
        async with FakeServer(script) as server, EmulatedCall.start("twilio", server.url, idle_audio="hiss") as call:
            await call.wait_closed(2)
        payloads = [base64.b64decode(m["media"]["payload"]) for m in server.events("media")]
        assert len(payloads) >= 8 and len(set(payloads)) == len(payloads)  # no frame repeats another
        pcm = ulaw_to_pcm16(b"".join(payloads)).astype(np.float64)
        level = 20 * np.log10(np.sqrt(np.mean(pcm * pcm)) / 32768)
        assert abs(level - HISS_DBFS) < 3.0, level  # mu-law's coarse low steps move it a little
        assert abs(float(np.mean(pcm))) < 5.0  # no offset: hiss around zero

    run(main())


# --- Plivo -------------------------------------------------------------------------------------------------


def test_plivo_clear_audio_answers_cleared_audio_and_never_acks_cut_checkpoints() -> None:
    async def script(ws: ServerConnection, server: FakeServer) -> None:
        sid = await server.stream_id()
        for i in range(3):
            await ws.send(plivo_play(sid, agent_audio(800, seed=i)))
            await ws.send(json.dumps({"event": "checkpoint", "streamId": sid, "name": f"c{i}"}))
        await asyncio.sleep(0.15)
        await ws.send(json.dumps({"event": "clearAudio", "streamId": sid}))
        await ws.send(json.dumps({"event": "sendDTMF", "dtmf": "12#"}))

    async def main() -> None:
        async with FakeServer(script) as server:
            async with EmulatedCall.start("plivo", server.url, idle_audio="none") as call:
                await server.wait_for(lambda: bool(server.events("clearedAudio")))
                await asyncio.sleep(0.25)  # past when c1 and c2 would have played
                c0, c1, c2 = call.marks
                assert c0.acked_at is not None and not c0.cleared
                assert c1.cleared and c2.cleared and c1.acked_at is None and c2.acked_at is None
                assert 0.15 <= call.played_samples / SAMPLE_RATE < 0.15 + 0.05
                assert [d for _, d in call.dtmf_received] == ["12#"]
                assert call.violations == []
        assert [m["name"] for m in server.events("playedStream")] == ["c0"]
        played, cleared = server.events("playedStream")[0], server.events("clearedAudio")[0]
        assert set(played) == {"event", "sequenceNumber", "streamId", "name"}
        assert set(cleared) == {"event", "sequenceNumber", "streamId"}
        start = server.received[0][1]
        assert start["event"] == "start" and start["sequenceNumber"] == 1
        assert start["start"]["callId"] == call.call_id and start["start"]["accountId"].startswith("MA")
        assert all(isinstance(m["sequenceNumber"], int) for _, m in server.received)

    run(main())


# --- answer webhook and signatures -------------------------------------------------------------------------

PUBLIC = "https://agent.example.com/voice"
TOKEN = "secret-token"


def twilio_webhook(request: httpx.Request) -> httpx.Response:
    params = dict(parse_qsl(request.content.decode()))
    url = PUBLIC + request.url.path
    assert RequestValidator(TOKEN).validate(url, params, request.headers["X-Twilio-Signature"])
    assert {"CallSid", "AccountSid", "From", "To", "CallStatus", "Direction"} <= set(params)
    if params["From"] == "+15550000000":
        return httpx.Response(200, text="<Response><Say>busy</Say><Hangup/></Response>")
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://agent.example.com/voice/'
        'twilio/stream"><Parameter name="token" value="abc123" /></Stream></Connect></Response>'
    )
    return httpx.Response(200, text=twiml, headers={"content-type": "application/xml"})


def plivo_webhook(request: httpx.Request) -> httpx.Response:
    params = dict(parse_qsl(request.content.decode()))
    url = PUBLIC + request.url.path
    headers = request.headers
    assert validate_v3_signature(
        "POST", url, headers["X-Plivo-Signature-V3-Nonce"], TOKEN, headers["X-Plivo-Signature-V3"], params
    )
    xml = (
        '<Response><Stream bidirectional="true" keepCallAlive="true" contentType="audio/x-mulaw;rate=8000" '
        'audioTrack="inbound" extraHeaders="token=abc123">wss://agent.example.com/voice/plivo/stream</Stream>'
        "</Response>"
    )
    return httpx.Response(200, text=xml)


def check_upgrade(connection: ServerConnection, request: Request) -> Response | None:
    headers: Headers = request.headers
    if request.path == "/twilio/stream":
        signature = headers.get("X-Twilio-Signature", "")
        ok = RequestValidator(TOKEN).validate(PUBLIC.replace("https", "wss") + request.path, {}, signature)
    else:
        ok = validate_v3_signature(
            "GET",
            PUBLIC + request.path,
            headers.get("X-Plivo-Signature-V3-Nonce", ""),
            TOKEN,
            headers.get("X-Plivo-Signature-V3", ""),
        )
    return None if ok else connection.respond(403, "bad signature\n")


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
def test_auth_on_calls_the_signed_webhook_first_and_streams_what_it_returned(provider: Provider) -> None:
    async def script(ws: ServerConnection, server: FakeServer) -> None:
        await server.stream_id()

    async def main() -> None:
        handler = twilio_webhook if provider == "twilio" else plivo_webhook
        async with (
            FakeServer(script, process_request=check_upgrade) as server,
            httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http,
        ):
            async with EmulatedCall.start(
                provider, server.url, public_url=PUBLIC, auth_token=TOKEN, http=http, idle_audio="none"
            ) as call:
                assert call.stream_url == f"wss://agent.example.com/voice/{provider}/stream"
                await server.wait_for(lambda: bool(server.events("start")))
                assert call.violations == []
            start = server.events("start")[0]
            if provider == "twilio":
                assert start["start"]["customParameters"] == {"token": "abc123"}
            else:
                assert start["extra_headers"] == "token=abc123"

            # A wrong token: the signed upgrade is refused, as Twilio would see (31920).
            with pytest.raises(CallRejected) as refused:
                async with EmulatedCall.start(
                    provider, server.url, public_url=PUBLIC, auth_token="nope", answer=False
                ):
                    pass
            assert refused.value.stage == "upgrade" and refused.value.status == 403

            if provider == "twilio":
                async with EdgeEmulator(server.url, public_url=PUBLIC, twilio_auth_token=TOKEN) as edge:
                    busy = edge.call("twilio", http=http, from_number="+15550000000")
                    with pytest.raises(CallRejected) as no_stream:
                        await busy
                    assert no_stream.value.stage == "webhook" and "Hangup" in no_stream.value.body

    run(main())
