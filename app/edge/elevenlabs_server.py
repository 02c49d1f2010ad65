"""A loopback server that speaks ElevenLabs' text-to-speech WebSocket protocol (`stream-input`), with real speech.

It stands in for the hosted service in tests: a real WebSocket server on 127.0.0.1 that checks what the service
checks (the path `/v1/text-to-speech/{voice_id}/stream-input`, the `xi-api-key` header, `output_format`), reads
the initialising message (`{"text": " ", ...}`), text messages and the end of input (`{"text": ""}`), and
answers like the service: `{"audio": <base64 mu-law>, "isFinal": null, "alignment": {...},
"normalizedAlignment": {...}}` messages, then `{"isFinal": true}`, then a normal close.

    async with ElevenLabsServer() as el:
        tts = ElevenLabsTts("test-key", "voice1", url=el.url)
        synthesis = await tts.synthesize("Hello there.")
        assert el.connections[0].texts == ["Hello there. "]

The audio is speech: the text is synthesised by espeak-ng (`EspeakTts`, 8 kHz), encoded as mu-law
(`output_format=ulaw_8000` is the only format this loopback makes). The reply is cut into messages of about
`chunk_chars` characters at word ends; each carries its audio and the alignment of its characters, with times
relative to the start of that message's audio (as the service documents), taken from espeak's word timings
(characters spread evenly within a word). `alignment_keys` picks the spelling of the alignment lists: "camel"
(`charStartTimesMs`, `charDurationsMs`, as clients of the live service read them) or "snake"
(`char_start_times_ms`, `chars_durations_ms`, as the API reference names them). Text is generated when a
message asks for `flush` or `try_trigger_generation`, and at the end of input.

Failures on demand, through `mode` (settable at any time; it applies to the next handshake, and to the next
text message on a connection already open, e.g. a client's warm spare):
`"ok"`; `"drop_after=N"` sends N audio messages and drops the socket (no close frame: a crash, a cut network);
`"stall_after=N"` sends N audio messages and then nothing, the socket left open; `"http_error=N"` refuses the
handshake with status N; `"policy_close"` closes 1008 with a reason after the first text (the service's way of
reporting quota and input errors); `"error_message"` sends `{"error": ..., "message": ...}` and closes 1008.
A wrong key closes 1008 "Invalid API key" after the first message, or with `bad_key_handshake` refuses the
handshake with 401 (which of the two the live service does is not verified here: the client handles both).
Without text for `inactivity_timeout` seconds (a URL option, 20 by default, as the service) it closes 1008.
`kill()` drops every open socket now.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from app.edge.ws_loopback import WsLoopback
from providers.mulaw import pcm16_to_ulaw
from providers.tts.base import Synthesis
from providers.tts.espeak import EspeakTts

_PATH = re.compile(r"/v1/text-to-speech/([^/]+)/stream-input/?")
_MODE = re.compile(r"ok|policy_close|error_message|drop_after=(\d+)|stall_after=(\d+)|http_error=(\d{3})")
_BYTES_PER_MS = 8  # mu-law at 8 kHz
# websockets logs each handshake header at DEBUG, the key among them; a test that checks no log line carries the
# key must not trip over the stand-in's own lines.
_WS_LOGGER = logging.getLogger(__name__ + ".websocket")
_WS_LOGGER.setLevel(logging.INFO)


@dataclass(slots=True)
class ElevenLabsConnection:
    """One connection the server accepted, and what happened on it."""

    voice_id: str
    params: dict[str, str]
    headers: dict[str, str]  # lower-case names
    mode: str
    received: list[dict[str, Any]] = field(default_factory=list)  # every JSON message, in order
    texts: list[str] = field(default_factory=list)  # the text of each text message after the first
    generated: list[str] = field(default_factory=list)  # each text synthesised, in order
    syntheses: list[Synthesis] = field(default_factory=list)  # and its speech (espeak output varies run to run)
    audio_messages: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    ended: str = ""  # "final", "dropped", "stalled", "policy", "error", "bad_key", "inactive", "client", "killed"
    speed: float = 1.0  # the initialising message's voice_settings.speed


def char_times(synthesis: Synthesis, text_len: int) -> list[tuple[float, float]]:
    """(start, end) ms of each character (pure): a word's characters share its sound evenly (up to where its
    sound ends, or the next word's start); a character between words (space, punctuation) spans the gap."""
    words, total = synthesis.words, synthesis.duration_ms
    times: list[tuple[float, float] | None] = [None] * text_len
    for k, w in enumerate(words):
        end = w.audio_end_ms if w.audio_end_ms is not None else (
            words[k + 1].audio_ms if k + 1 < len(words) else total)
        n = max(1, w.char_end - w.char_start)
        step = max(0.0, end - w.audio_ms) / n
        for j in range(n):
            if w.char_start + j < text_len:
                times[w.char_start + j] = (w.audio_ms + step * j, w.audio_ms + step * (j + 1))
    out: list[tuple[float, float]] = []
    for i in range(text_len):
        timed = times[i]
        if timed is None:
            start = out[-1][1] if out else 0.0
            following = next((t[0] for t in times[i + 1 :] if t is not None), total)
            timed = (start, max(start, following))
        out.append(timed)
    return out


def chunk_bounds(text: str, chunk_chars: int) -> list[int]:
    """Character offsets where messages start: about every `chunk_chars` characters, after a space (pure)."""
    bounds = [0]
    for i in range(1, len(text)):
        if i - bounds[-1] >= chunk_chars and text[i - 1] == " " and text[i] != " ":
            bounds.append(i)
    return bounds


def reply_messages(text: str, synthesis: Synthesis, chunk_chars: int, keys: Literal["camel", "snake"]
                   ) -> list[dict[str, Any]]:
    """The audio messages for one generated text (pure): audio and chunk-relative alignment per message."""
    ulaw = pcm16_to_ulaw(synthesis.pcm)
    times = char_times(synthesis, len(text))
    bounds = chunk_bounds(text, chunk_chars)
    starts_key, durations_key = (("charStartTimesMs", "charDurationsMs") if keys == "camel"
                                 else ("char_start_times_ms", "chars_durations_ms"))
    messages = []
    for k, first in enumerate(bounds):
        last = bounds[k + 1] if k + 1 < len(bounds) else len(text)
        t0 = times[first][0] if k else 0.0
        t1 = times[last][0] if last < len(text) else len(ulaw) / _BYTES_PER_MS
        audio = ulaw[int(round(t0 * _BYTES_PER_MS)) : int(round(t1 * _BYTES_PER_MS))]
        alignment = {
            "chars": list(text[first:last]),
            starts_key: [int(round(times[i][0] - t0)) for i in range(first, last)],
            durations_key: [int(round(times[i][1] - times[i][0])) for i in range(first, last)],
        }
        messages.append({"audio": base64.b64encode(audio).decode("ascii"), "isFinal": None,
                         "normalizedAlignment": alignment, "alignment": alignment})
    return messages


class _Stalled(Exception):
    pass


class ElevenLabsServer(WsLoopback):
    """A `stream-input` WebSocket server on 127.0.0.1 (see the module docstring)."""

    _ws_logger = _WS_LOGGER

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        mode: str = "ok",
        chunk_chars: int = 40,
        alignment_keys: Literal["camel", "snake"] = "camel",
        bad_key_handshake: bool = False,
        first_audio_delay_s: float = 0.0,
        voice: str = "en-us",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.mode = mode
        self.chunk_chars = chunk_chars
        self.alignment_keys: Literal["camel", "snake"] = alignment_keys
        self.bad_key_handshake = bad_key_handshake
        self.first_audio_delay_s = first_audio_delay_s
        self._tts = EspeakTts(voice=voice, end_pause=True)
        super().__init__(host, port)
        self.connections: list[ElevenLabsConnection] = []
        self.refused: list[tuple[str, int]] = []  # (path, status) of handshakes refused

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if not _MODE.fullmatch(value):
            raise ValueError(f"unknown mode {value!r}")
        self._mode = value

    @property
    def url(self) -> str:
        """The base URL to give the client (ELEVENLABS_URL): it adds the path and the query."""
        return f"ws://{self._host}:{self.port}"

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        split = urlsplit(request.path)
        if not _PATH.fullmatch(split.path):
            self.refused.append((request.path, 404))
            return connection.respond(404, "Not Found\n")
        status = re.fullmatch(r"http_error=(\d{3})", self.mode)
        if status:
            self.refused.append((request.path, int(status.group(1))))
            return connection.respond(int(status.group(1)), '{"detail": "scripted failure"}\n')
        if self.bad_key_handshake and request.headers.get("xi-api-key") != self.api_key:
            self.refused.append((request.path, 401))
            return connection.respond(401, '{"detail": {"status": "invalid_api_key"}}\n')
        params = dict(parse_qsl(split.query))
        if params.get("output_format") != "ulaw_8000":
            self.refused.append((request.path, 400))
            return connection.respond(400, "this loopback makes output_format=ulaw_8000 only\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        split = urlsplit(request.path)
        match = _PATH.fullmatch(split.path)
        assert match is not None
        params = dict(parse_qsl(split.query))
        record = ElevenLabsConnection(unquote(match.group(1)), params,
                                      {k.lower(): v for k, v in request.headers.raw_items()}, self.mode)
        self.connections.append(record)
        self._live.add(ws)
        inactivity = float(params.get("inactivity_timeout", "20"))
        try:
            await self._converse(ws, record, inactivity)
        except ConnectionClosed:
            record.ended = record.ended or "client"
        except _Stalled:
            record.ended = "stalled"
            with contextlib.suppress(ConnectionClosed):
                await ws.wait_closed()
        finally:
            if not record.ended:
                record.ended = "killed"
            self._live.discard(ws)

    async def _converse(self, ws: ServerConnection, record: ElevenLabsConnection, inactivity: float) -> None:
        pending = ""
        first = True
        while True:
            try:
                async with asyncio.timeout(inactivity):
                    raw = await ws.recv()
            except TimeoutError:
                record.ended = "inactive"
                await ws.close(1008, f"Have not received a new text input within the timeout of {inactivity:g} "
                                     "seconds. Streaming input terminated.")
                return
            try:
                message = json.loads(raw)
            except ValueError:
                message = None
            if not isinstance(message, dict) or not isinstance(message.get("text"), str):
                record.ended = "error"
                await ws.close(1008, "Invalid message received")
                return
            record.received.append(message)
            if first:
                first = False
                if record.headers.get("xi-api-key") != self.api_key:
                    record.ended = "bad_key"
                    await ws.close(1008, "Invalid API key")
                    return
                if message["text"] != " ":
                    record.ended = "error"
                    await ws.close(1008, "The first message must have text set to a single space")
                    return
                settings = message.get("voice_settings") or {}
                record.speed = float(settings.get("speed", 1.0)) if isinstance(settings, dict) else 1.0
                continue
            text = message["text"]
            record.mode = self.mode  # a mode set while this connection waited applies to its text
            if record.mode == "policy_close":
                record.ended = "policy"
                await ws.close(1008, "Quota exceeded: this request needs more credits than you have left")
                return
            if record.mode == "error_message":
                error = {"message": "Something went wrong while generating audio", "error": "generation_failed",
                         "code": 1008}
                await self._send(ws, record, error)
                record.ended = "error"
                await ws.close(1008, "generation_failed")
                return
            end = text == ""
            if not end:
                record.texts.append(text)
                pending += text
            if (end or message.get("flush") or message.get("try_trigger_generation")) and pending.strip():
                await self._generate(ws, record, pending)
                pending = ""
            if end:
                await self._send(ws, record, {"isFinal": True})
                record.ended = "final"
                await ws.close(1000)
                return

    async def _generate(self, ws: ServerConnection, record: ElevenLabsConnection, text: str) -> None:
        text = text.lstrip()
        record.generated.append(text)
        synthesis = await self._tts.paced(record.speed).synthesize(text)
        record.syntheses.append(synthesis)
        if self.first_audio_delay_s > 0:
            await asyncio.sleep(self.first_audio_delay_s)
        drop = re.fullmatch(r"drop_after=(\d+)", record.mode)
        stall = re.fullmatch(r"stall_after=(\d+)", record.mode)
        for message in reply_messages(text, synthesis, self.chunk_chars, self.alignment_keys):
            if drop and record.audio_messages >= int(drop.group(1)):
                record.ended = "dropped"
                ws.transport.abort()
                raise ConnectionClosed(None, None)
            if stall and record.audio_messages >= int(stall.group(1)):
                raise _Stalled
            await self._send(ws, record, message)
            record.audio_messages += 1

    @staticmethod
    async def _send(ws: ServerConnection, record: ElevenLabsConnection, message: dict[str, Any]) -> None:
        record.sent.append(message)
        await ws.send(json.dumps(message))
