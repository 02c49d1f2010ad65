"""A loopback OpenAI-compatible speech endpoint (`POST /v1/audio/speech`) that streams real speech.

A real HTTP/1.1 server on asyncio streams, no framework, like `app/edge/llm_server.py`: it reads the request
(`Authorization: Bearer <key>`, JSON `{"model", "input", "voice", "response_format"}`), synthesises `input` with
espeak-ng at 24 kHz, and streams the body with chunked transfer encoding, `chunk_ms` of audio per chunk:

- `response_format: "pcm"`: raw 16-bit signed little-endian mono at 24 kHz, no header (as OpenAI documents it);
- `"wav"`: a RIFF header first whose sizes are the 0xFFFFFFFF placeholder a streamed WAV carries, then the same.

Any other format gets a 400 (this loopback makes only those two).

    async with SpeechServer() as speech:
        tts = OpenAiSpeechTts(speech.base_url, "test-key")
        synthesis = await tts.synthesize("Hello there.")
        assert speech.requests[0].body["voice"] == "alloy"

Errors are OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`. A wrong key gets 401 with the
message OpenAI writes, which echoes a masked form of the key (the client must not log it).

Failure modes (`mode`, settable at any time; it applies to the next request): `"ok"`; `"dead"` reads the request
and never answers; `"close"` closes the connection without answering; `"stall_after=N"` sends N audio chunks
and then nothing, the socket left open; `"drop_after=N"` sends N audio chunks and resets the connection;
`"http_error=N"` answers status N with an error body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.edge.http_loopback import HttpLoopback
from providers.tts.espeak import EspeakTts

Clock = Callable[[], float]

PCM_RATE = 24_000
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024


@dataclass(slots=True)
class SpeechRequest:
    """One request the server received, and what it did with it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any] | None
    mode: str
    status: int = 0
    audio_bytes: int = 0  # body bytes of audio sent
    completed: bool = False  # the whole body was sent
    received_at: float = 0.0


def wav_header(sample_rate: int) -> bytes:
    """A streamed WAV's header: 16-bit PCM mono, the RIFF and data sizes unknown (0xFFFFFFFF) (pure)."""
    unknown = 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", unknown))


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def masked(key: str) -> str:
    """How OpenAI's 401 message shows a wrong key: its first and last few characters."""
    return key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 7 else "****"


class SpeechServer(HttpLoopback):
    """`POST /v1/audio/speech` on 127.0.0.1 (see the module docstring)."""

    MODES = re.compile(r"ok|dead|close|stall_after=(\d+)|drop_after=(\d+)|http_error=(\d{3})")

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        mode: str = "ok",
        chunk_ms: float = 100.0,
        chunk_delay_s: float = 0.0,
        voice: str = "en-us",
        clock: Clock = time.monotonic,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(mode, host, port)
        self.api_key = api_key
        self.chunk_ms = chunk_ms
        self.chunk_delay_s = chunk_delay_s
        self._tts = EspeakTts(voice=voice, sample_rate=PCM_RATE)
        self._clock = clock
        self._writers: set[asyncio.StreamWriter] = set()
        self.requests: list[SpeechRequest] = []

    async def _end_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.sleep(0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read and answer one request; False when the connection must close."""
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEAD:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        raw = await reader.readexactly(min(length, _MAX_BODY)) if length else b""
        body: dict[str, Any] | None = None
        with contextlib.suppress(ValueError):
            parsed = json.loads(raw) if raw else None
            body = parsed if isinstance(parsed, dict) else None
        record = SpeechRequest(method, path, headers, body, self.mode, received_at=self._clock())
        self.requests.append(record)
        keep_alive = headers.get("connection", "").lower() != "close"

        if path.split("?", 1)[0].rstrip("/") != "/v1/audio/speech":
            return await self._json(writer, record, 404, _error("Not found", "invalid_request_error"), keep_alive)
        if method != "POST":
            return await self._json(writer, record, 405, _error("Use POST", "invalid_request_error"), keep_alive)
        if headers.get("authorization") != f"Bearer {self.api_key}":
            given = headers.get("authorization", "").removeprefix("Bearer ")
            message = (f"Incorrect API key provided: {masked(given)}. You can find your API key at "
                       "https://platform.openai.com/account/api-keys.")
            return await self._json(writer, record, 401, _error(message, "invalid_request_error", "invalid_api_key"),
                                    keep_alive)
        text = body.get("input") if body else None
        fmt = (body or {}).get("response_format", "mp3")
        if not isinstance(text, str) or not text or not body or not body.get("model") or not body.get("voice"):
            return await self._json(writer, record, 400, _error("model, input and voice are required",
                                                                "invalid_request_error"), keep_alive)
        if fmt not in ("pcm", "wav"):
            return await self._json(writer, record, 400, _error(f"this loopback makes pcm or wav, not {fmt}",
                                                                "invalid_request_error"), keep_alive)
        mode = record.mode
        if mode == "close":
            return False
        if mode == "dead":
            await asyncio.Event().wait()
        failure = re.fullmatch(r"http_error=(\d{3})", mode)
        if failure:
            status = int(failure.group(1))
            return await self._json(writer, record, status, _error("The server had an error while processing your "
                                                                   "request.", "server_error"), keep_alive)
        speed = body.get("speed", 1.0) if body else 1.0
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            return await self._json(writer, record, 400, _error("speed must be a number from 0.25 to 4.0",
                                                                "invalid_request_error"), keep_alive)
        return await self._stream(writer, record, text, fmt, keep_alive, float(speed))

    async def _stream(self, writer: asyncio.StreamWriter, record: SpeechRequest, text: str, fmt: str,
                      keep_alive: bool, speed: float = 1.0) -> bool:
        # `speed` as the API means it: the same voice, faster or slower (espeak's words per minute x speed)
        synthesis = await self._tts.paced(speed).synthesize(text)
        audio = synthesis.pcm.astype("<i2").tobytes()
        step = max(2, int(PCM_RATE * self.chunk_ms / 1000.0) * 2)
        chunks = [audio[i : i + step] for i in range(0, len(audio), step)]
        if fmt == "wav":
            chunks.insert(0, wav_header(PCM_RATE))
        content_type = "audio/pcm" if fmt == "pcm" else "audio/wav"
        record.status = 200
        writer.write((f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n"
                      f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n").encode())
        stall = re.fullmatch(r"stall_after=(\d+)", record.mode)
        drop = re.fullmatch(r"drop_after=(\d+)", record.mode)
        for n, chunk in enumerate(chunks):
            if stall and n >= int(stall.group(1)):
                await writer.drain()
                await asyncio.Event().wait()
            if drop and n >= int(drop.group(1)):
                await writer.drain()
                writer.transport.abort()
                return False
            if self.chunk_delay_s > 0 and n:
                await asyncio.sleep(self.chunk_delay_s)
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
            record.audio_bytes += len(chunk)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        record.completed = True
        return keep_alive

    @staticmethod
    async def _json(writer: asyncio.StreamWriter, record: SpeechRequest, status: int, payload: dict[str, Any],
                    keep_alive: bool) -> bool:
        record.status = status
        data = json.dumps(payload).encode()
        writer.write((f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\ncontent-type: application/json\r\n"
                      f"content-length: {len(data)}\r\nconnection: {'keep-alive' if keep_alive else 'close'}"
                      "\r\n\r\n").encode() + data)
        await writer.drain()
        record.completed = True
        return keep_alive
