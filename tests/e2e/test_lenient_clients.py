"""Over real sockets: clients that differ from the documented wire shape without ambiguity are still heard, and
a normal barge-in (which aborts the embedded LLM's HTTP stream mid-reply) logs no error.

The lenient client is a raw `websockets` client written here, not the emulator, because the emulator speaks the
documented shape: it plays a third-party browser Media Streams client that omits `streamSid` on every frame after
`start`, sends numbers as JSON numbers, sends no `customParameters` or `accountSid`, and sends 16 ms frames.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI

from app.audio import pcm16_to_ulaw
from app.edge.emulator import EmulatedCall
from app.offline.corpus import Clip, load_clip, read_manifest
from app.routes.embedded_llm import PREFIX, embedded_llm_router
from providers.llm.scripted import REPLIES
from tests.conftest import LogCapture, ServedApp

FRAME_SAMPLES = 128  # 16 ms of mu-law/8000: not the 160-byte frame Twilio sends
FRAME_S = FRAME_SAMPLES / 8000
ULAW_SILENCE = 0xFF


def clip(category: str, index: int = 0) -> Clip:
    return [r for r in read_manifest() if r.category == category][index]


async def get_record(url: str, call_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        response = await client.get(f"{url}/calls/{call_id}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


# --- a third-party browser client ------------------------------------------------------------------------


@dataclass
class BrowserClient:
    """A Twilio Media Streams client in the loose shape some third-party browser clients use.

    It plays what it receives in real time (a playback clock per received byte), echoes each `mark` once the
    audio before it has played, and on `clear` drops its buffer and echoes the pending marks, as Twilio does.
    """

    ws: Any
    stream_sid: str = "MZ" + "b" * 32
    call_sid: str = "CA" + "c" * 32
    received_samples: int = 0
    clears: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _play_end: float = 0.0
    _pending: list[tuple[float, str]] = field(default_factory=list)
    _seq: int = 0
    _chunk: int = 0

    async def send(self, message: dict[str, Any]) -> None:
        self._seq += 1
        message["sequenceNumber"] = self._seq  # a number, where Twilio documents a string
        await self.ws.send(json.dumps(message))

    async def open(self) -> None:
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        # No customParameters and no accountSid; sampleRate and channels as numbers.
        await self.send({
            "event": "start", "streamSid": self.stream_sid,
            "start": {"streamSid": self.stream_sid, "callSid": self.call_sid, "tracks": ["inbound"],
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
        })

    async def send_frame(self, payload: bytes) -> None:
        """One caller frame with no streamSid; chunk and timestamp as numbers."""
        self._chunk += 1
        await self.send({"event": "media", "media": {
            "track": "inbound", "chunk": self._chunk, "timestamp": round(self._chunk * FRAME_S * 1000),
            "payload": base64.b64encode(payload).decode()}})

    async def send_ulaw(self, ulaw: bytes) -> None:
        """Audio in 16 ms frames on a real-time grid."""
        t0 = time.monotonic()
        for k in range(0, len(ulaw), FRAME_SAMPLES):
            frame = ulaw[k : k + FRAME_SAMPLES]
            frame += bytes([ULAW_SILENCE]) * (FRAME_SAMPLES - len(frame))
            await asyncio.sleep(max(0.0, t0 + (k // FRAME_SAMPLES + 1) * FRAME_S - time.monotonic()))
            await self.send_frame(frame)

    async def receive_loop(self) -> None:
        async for raw in self.ws:
            now = time.monotonic()
            await self._echo_played(now)
            message = json.loads(raw)
            if message.get("streamSid") != self.stream_sid:
                self.errors.append(f"frame not addressed to our stream: {raw[:120]}")
            match message.get("event"):
                case "media":
                    samples = len(base64.b64decode(message["media"]["payload"]))
                    self.received_samples += samples
                    self._play_end = max(now, self._play_end) + samples / 8000
                case "mark":
                    self._pending.append((self._play_end, message["mark"]["name"]))
                case "clear":
                    self.clears.append(now)
                    self._play_end = now
                    for _, name in self._pending:  # Twilio echoes every mark a clear cuts [TW-WS]
                        await self.send({"event": "mark", "mark": {"name": name}})
                    self._pending.clear()
                case other:
                    self.errors.append(f"unexpected event {other!r}")

    async def _echo_played(self, now: float) -> None:
        while self._pending and self._pending[0][0] <= now:
            _, name = self._pending.pop(0)
            await self.send({"event": "mark", "mark": {"name": name}})

    async def mark_loop(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            await self._echo_played(time.monotonic())


async def wait_for(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


def test_a_client_that_omits_stream_sid_and_sends_16_ms_frames_is_heard_and_barges_in(
    server_factory: Any,
) -> None:
    greeting = "Welcome. " + " ".join(["I will keep talking until you interrupt me."] * 8)
    srv = server_factory(agent_greeting=greeting)
    speech = pcm16_to_ulaw(load_clip(clip("read", 1))[: int(1.2 * 8000)])

    async def scenario() -> tuple[BrowserClient, dict[str, Any]]:
        url = srv.url.replace("http://", "ws://") + "/twilio/stream"
        async with websockets.connect(url) as ws:
            client = BrowserClient(ws)
            await client.open()
            tasks = [asyncio.create_task(client.receive_loop()), asyncio.create_task(client.mark_loop())]
            try:
                # Silence while the greeting starts, then speech over it, all in 16 ms frames without streamSid.
                silence = bytes([ULAW_SILENCE]) * FRAME_SAMPLES
                while client.received_samples < 8000:
                    await client.send_frame(silence)
                    await asyncio.sleep(FRAME_S)
                await client.send_ulaw(speech)
                await wait_for(lambda: bool(client.clears), 5)
                await client.send_ulaw(bytes([ULAW_SILENCE]) * 8 * FRAME_SAMPLES)
                record = await get_record(srv.url, client.call_sid)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return client, record

    client, record = asyncio.run(scenario())
    assert client.clears, "the agent never heard the caller"
    assert client.errors == []
    assert record["invalid_frames"] == 0
    assert len(record["bargeins"]) == 1
    greeting_turn = record["turns"][0]
    assert greeting_turn["role"] == "agent" and greeting_turn["interrupted"]
    assert 0 < greeting_turn["heard_chars"] < len(greeting)


# --- a barge-in over the embedded LLM logs no error ------------------------------------------------------




@contextlib.contextmanager
def captured(*names: str) -> Iterator[LogCapture]:
    """A handler on the named loggers (and the root). Attach it after the server is built: uvicorn.Config
    resets the handlers of the uvicorn loggers."""
    handler = LogCapture()
    loggers = [logging.getLogger(name) for name in ("", *names)]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


# One provider: the aborted stream is between the server and its embedded LLM, the same behind either wire; the
# Twilio path of a barge-in that closes an LLM stream is tests/e2e/test_bargein.py's
# test_speech_over_a_streaming_reply_clears_closes_the_llm_and_cuts_at_the_heard_character[twilio].
@pytest.mark.parametrize("provider", ["plivo"])
def test_a_barge_in_that_aborts_the_embedded_llm_stream_logs_no_error(provider: str, server_factory: Any) -> None:
    # The embedded LLM (no llm_base_url) at 150 ms a token: its ~45-token reply streams for about 7 s, so the
    # barge-in 1.5 s into the reply closes an HTTP stream still in flight.
    srv = server_factory(agent_greeting="Hello.", embedded_llm_token_delay_ms=150.0)
    assert not srv.settings.llm_base_url

    async def scenario() -> dict[str, Any]:
        async with EmulatedCall.start(provider, srv.url) as call:
            await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 10)
            await asyncio.sleep(0.3)
            greeting = call.received_samples
            await call.send_audio(load_clip(clip("isolated_word", 0)))
            await call.wait_until(lambda: call.played_samples - greeting > 1.5 * 8000, 20)
            await call.send_audio(load_clip(clip("read", 1))[: int(1.2 * 8000)])
            await call.wait_until(lambda: bool(call.clears), 5)
            # Time for the server side of the aborted stream to finish and log whatever it logs.
            await call.send_silence(1.0)
            record = await get_record(srv.url, call.call_id)
            assert not call.violations, call.violations
            return record

    with captured("uvicorn", "uvicorn.error", "uvicorn.access") as logs:
        record = asyncio.run(scenario())
        time.sleep(0.2)

    [cut] = [t for t in record["turns"] if t["role"] == "agent" and t["interrupted"]]
    assert len(record["bargeins"]) == 1
    # The reply really was cut mid-stream: the LLM had not yet sent the whole reply.
    assert any(r.startswith(cut["intended_text"]) and len(cut["intended_text"]) < len(r) for r in REPLIES), cut
    bad = [r for r in logs.records if r.levelno >= logging.ERROR or r.exc_info or r.exc_text or r.stack_info]
    assert bad == [], [(r.name, r.levelname, r.getMessage(), r.exc_info) for r in bad]
    assert not any("Traceback" in r.getMessage() for r in logs.records)



def _errors(records: list[logging.LogRecord]) -> list[tuple[str, str, str]]:
    return [(r.name, r.levelname, r.getMessage()) for r in records
            if r.levelno >= logging.ERROR or r.exc_info or r.exc_text or "Traceback" in r.getMessage()]


def test_an_llm_request_dropped_before_or_during_its_reply_logs_no_error() -> None:
    """The embedded LLM under uvicorn as the server runs it, on a real socket: a barge-in that lands just after
    the turn sent its request (the connection closes before the route reads the body; uvicorn then answers the
    read with http.disconnect and Starlette raises ClientDisconnect), and one that lands mid-stream."""
    key = "test-key"
    app = FastAPI()
    app.include_router(embedded_llm_router(0.05, key))
    body = json.dumps({"messages": [{"role": "user", "content": "hello"}]}).encode()
    request = (
        f"POST {PREFIX}/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def drop(port: int, after_bytes: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        got = b""
        while len(got) < after_bytes:
            chunk = await asyncio.wait_for(reader.read(4096), 5)
            if not chunk:
                break
            got += chunk
        writer.transport.abort()  # as httpx does when the LLM client closes a half-read response
        return got

    with ServedApp(app) as srv, captured("uvicorn", "uvicorn.error") as logs:
        port = int(srv.url.rsplit(":", 1)[1])

        async def scenario() -> None:
            assert await drop(port, 0) == b""  # gone before the route read the request body
            await asyncio.sleep(0.3)
            streamed = await drop(port, 400)  # gone mid-stream, a few tokens in
            assert streamed.startswith(b"HTTP/1.1 200") and b"data: " in streamed
            await asyncio.sleep(0.3)

        asyncio.run(scenario())
    assert _errors(logs.records) == []


def test_a_client_gone_mid_stream_under_asgi_2_4_ends_the_response_quietly() -> None:
    """Under ASGI spec 2.4 a server's `send` raises OSError once the client has gone and Starlette turns that into
    ClientDisconnect; the route must end the response there rather than let it escape to the server's log."""
    app = FastAPI()
    app.include_router(embedded_llm_router(0.0, "k"))
    body = json.dumps({"messages": []}).encode()
    sent: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and len(sent) >= 3:
            raise OSError("client gone")  # what uvicorn's ClientDisconnected is
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": f"{PREFIX}/chat/completions", "raw_path": b"",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
        "headers": [(b"authorization", b"Bearer k"), (b"content-type", b"application/json")],
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert len(sent) == 3
