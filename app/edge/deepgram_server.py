"""A loopback server that speaks Deepgram's live-transcription protocol (`/v1/listen`), with scripted "recognition".

It stands in for the hosted service in tests: a real WebSocket server on 127.0.0.1 that checks what Deepgram
checks (the path, `Authorization: Token <key>`, the URL options), reads binary audio, answers with `Results`
JSON shaped like Deepgram's, and honours `KeepAlive`, `Finalize` and `CloseStream`.

    async with DeepgramServer(script_words("I need to move my booking to Friday")) as dg:
        stt = DeepgramStt("test-key", url=dg.url)
        ...
        assert dg.connections[0].keepalives

What it "recognises" is the script the test gives it: words with start and end times in seconds of audio. Time
is the audio received (bytes / rate), not the clock, so a test that feeds audio faster than real time gets the
same results. As audio arrives:
- a word counts as heard once the audio has reached its end;
- every `interim_every_ms` of audio, the heard words not yet final go out as an interim result
  (`is_final: false`) if they changed;
- once the audio reaches `endpointing` ms past the last heard word with no next word started, they go out as a
  final with `speech_final: true` (the URL's `endpointing=false` turns this off); a stretch that runs past
  `max_segment_ms` is finalised without `speech_final`, as Deepgram does for long speech;
- `utterance_end_ms` ms after a final's last word with no new word, an `UtteranceEnd` goes out (if asked for);
- `Finalize` and `CloseStream` flush the heard words as a final (`from_finalize: true` for Finalize);
  `CloseStream` then sends `Metadata` and closes normally (1000).

Failures on demand: `die_after_ms` (the socket is dropped, no close frame, once that much audio has arrived),
`kill()` (drop every socket now), `hang_on_close_stream` (CloseStream is
never answered), and Deepgram's idle rule (close 1011 NET-0001 after `idle_timeout_s` with
neither audio nor KeepAlive; 10 s at Deepgram, shorter in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from app.edge.ws_loopback import WsLoopback

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ScriptWord:
    """A word the server will "recognise": its punctuated text and where it sits in the audio (seconds)."""

    text: str
    start_s: float
    end_s: float
    confidence: float = 0.98


def script_words(text: str, start_s: float = 0.3, word_s: float = 0.3, gap_s: float = 0.05) -> list[ScriptWord]:
    """Words of `text` evenly paced from `start_s`; a "/" between words is a pause of one second."""
    out: list[ScriptWord] = []
    t = start_s
    for token in text.split():
        if token == "/":
            t += 1.0
            continue
        out.append(ScriptWord(token, round(t, 3), round(t + word_s, 3)))
        t += word_s + gap_s
    return out


@dataclass(slots=True)
class DeepgramConnection:
    """One connection the server accepted, and what happened on it."""

    path: str
    params: dict[str, str]
    headers: dict[str, str]  # lower-case names
    audio_bytes: int = 0
    audio_ms: float = 0.0
    keepalives: list[float] = field(default_factory=list)  # server clock at each KeepAlive
    finalizes: int = 0
    close_stream_at: float | None = None
    sent: list[dict[str, Any]] = field(default_factory=list)  # every JSON message sent, in order
    ended: str = ""  # "closed" (after CloseStream), "idle", "died", "client" (the client went away)
    unknown: list[str] = field(default_factory=list)  # text frames the server did not understand


def _bare(word: str) -> str:
    return re.sub(r"[^\w']", "", word).lower()


class _Recogniser:
    """Turns audio progress into Deepgram messages for one connection (pure; times in ms of audio)."""

    def __init__(
        self,
        script: Sequence[ScriptWord],
        *,
        endpointing_ms: float | None,
        utterance_end_ms: float | None,
        interim_every_ms: float,
        max_segment_ms: float,
        punctuate: bool,
        request_id: str,
    ) -> None:
        self.words = list(script)
        self.endpointing_ms = endpointing_ms
        self.utterance_end_ms = utterance_end_ms
        self.interim_every_ms = interim_every_ms
        self.max_segment_ms = max_segment_ms
        self.punctuate = punctuate
        self.request_id = request_id
        self.cursor = 0  # first word not yet in a final
        self.window_start_ms = 0.0  # where the next result's window starts (finals tile the audio)
        self.last_interim_ms = 0.0
        self.last_interim_count = 0
        self.utterance_end_due: float | None = None  # audio ms at which to send UtteranceEnd
        self.last_final_word_end_ms = 0.0

    def _heard(self, audio_ms: float) -> list[ScriptWord]:
        out = []
        for w in self.words[self.cursor :]:
            if w.end_s * 1000.0 > audio_ms:
                break
            out.append(w)
        return out

    def _next_start_ms(self, index: int) -> float | None:
        return self.words[index].start_s * 1000.0 if index < len(self.words) else None

    def _result(
        self, words: list[ScriptWord], audio_ms: float, *, is_final: bool, speech_final: bool, from_finalize: bool
    ) -> dict[str, Any]:
        shown = [w.text if self.punctuate else _bare(w.text) for w in words]
        confidence = min((w.confidence for w in words), default=0.0)
        start = self.window_start_ms / 1000.0
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round((audio_ms - self.window_start_ms) / 1000.0, 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {
                "alternatives": [
                    {
                        "transcript": " ".join(shown),
                        "confidence": confidence,
                        "words": [
                            {
                                "word": _bare(w.text),
                                "start": w.start_s,
                                "end": w.end_s,
                                "confidence": w.confidence,
                                "punctuated_word": w.text,
                            }
                            for w in words
                        ],
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": "scripted", "version": "0", "arch": "loopback"},
                "model_uuid": "00000000-0000-0000-0000-000000000000",
            },
            "from_finalize": from_finalize,
        }

    def _finalise(self, words: list[ScriptWord], audio_ms: float, *, speech_final: bool, from_finalize: bool = False
                  ) -> dict[str, Any]:
        message = self._result(words, audio_ms, is_final=True, speech_final=speech_final, from_finalize=from_finalize)
        self.cursor += len(words)
        self.window_start_ms = audio_ms
        self.last_interim_count = 0
        if words:
            self.last_final_word_end_ms = words[-1].end_s * 1000.0
            if self.utterance_end_ms is not None:
                self.utterance_end_due = self.last_final_word_end_ms + self.utterance_end_ms
        return message

    def advance(self, audio_ms: float) -> list[dict[str, Any]]:
        """Messages due now that `audio_ms` of audio has arrived."""
        out: list[dict[str, Any]] = []
        heard = self._heard(audio_ms)
        if heard:
            last_end = heard[-1].end_s * 1000.0
            nxt = self._next_start_ms(self.cursor + len(heard))
            pause_over = self.endpointing_ms is not None and audio_ms >= last_end + self.endpointing_ms
            next_started = nxt is not None and nxt < last_end + (self.endpointing_ms or 0.0)
            if pause_over and not next_started:
                out.append(self._finalise(heard, audio_ms, speech_final=True))
            elif last_end - heard[0].start_s * 1000.0 >= self.max_segment_ms:
                out.append(self._finalise(heard, audio_ms, speech_final=False))
            elif audio_ms - self.last_interim_ms >= self.interim_every_ms and len(heard) != self.last_interim_count:
                out.append(self._result(heard, audio_ms, is_final=False, speech_final=False, from_finalize=False))
                self.last_interim_ms = audio_ms
                self.last_interim_count = len(heard)
        due = self.utterance_end_due
        if due is not None and audio_ms >= due:
            nxt = self._next_start_ms(self.cursor)
            if nxt is None or nxt >= self.last_final_word_end_ms + (self.utterance_end_ms or 0.0):
                last_word_end = self.last_final_word_end_ms / 1000.0
                out.append({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": last_word_end})
            self.utterance_end_due = None
        return out

    def flush(self, audio_ms: float, *, from_finalize: bool) -> list[dict[str, Any]]:
        """Finalize / CloseStream: what was heard so far, as a final."""
        heard = self._heard(audio_ms)
        return [self._finalise(heard, audio_ms, speech_final=bool(heard), from_finalize=from_finalize)]


Script = Sequence[ScriptWord] | Callable[[int], Sequence[ScriptWord]]


class DeepgramServer(WsLoopback):
    """A `/v1/listen` WebSocket server on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        script: Script = (),
        *,
        api_key: str = "test-key",
        interim_every_ms: float = 250.0,
        max_segment_ms: float = 8000.0,
        idle_timeout_s: float = 10.0,
        die_after_ms: float | None = None,
        hang_on_close_stream: bool = False,
        clock: Clock = time.monotonic,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.script = script
        self.api_key = api_key
        self.interim_every_ms = interim_every_ms
        self.max_segment_ms = max_segment_ms
        self.idle_timeout_s = idle_timeout_s
        self.die_after_ms = die_after_ms
        self.hang_on_close_stream = hang_on_close_stream
        self._clock = clock
        super().__init__(host, port)
        self.connections: list[DeepgramConnection] = []
        self.refused: list[tuple[str, int]] = []  # (path, status) of handshakes refused

    @property
    def url(self) -> str:
        """The base URL to give the client (it adds the query)."""
        return f"ws://{self._host}:{self.port}/v1/listen"

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path.rstrip("/") != "/v1/listen":
            self.refused.append((request.path, 404))
            return connection.respond(404, "Not Found\n")
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            self.refused.append((request.path, 401))
            return connection.respond(401, "Unauthorized\n")
        params = dict(parse_qsl(urlsplit(request.path).query))
        if params.get("encoding") not in ("mulaw", "linear16") or params.get("sample_rate") != "8000":
            self.refused.append((request.path, 400))
            return connection.respond(400, "Bad Request: this loopback takes 8 kHz mulaw or linear16\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        split = urlsplit(request.path)
        params = dict(parse_qsl(split.query))
        record = DeepgramConnection(
            path=split.path, params=params, headers={k.lower(): v for k, v in request.headers.raw_items()}
        )
        n = len(self.connections)
        self.connections.append(record)
        self._live.add(ws)
        script = self.script(n) if callable(self.script) else self.script
        endpointing = params.get("endpointing", "10")  # Deepgram's default endpointing is 10 ms
        recogniser = _Recogniser(
            script,
            endpointing_ms=None if endpointing == "false" else float(endpointing),
            utterance_end_ms=float(params["utterance_end_ms"]) if "utterance_end_ms" in params else None,
            interim_every_ms=self.interim_every_ms if params.get("interim_results") == "true" else float("inf"),
            max_segment_ms=self.max_segment_ms,
            punctuate=params.get("punctuate") == "true",
            request_id=str(uuid.uuid4()),
        )
        bytes_per_ms = 8.0 if params.get("encoding") == "mulaw" else 16.0
        last_activity = self._clock()
        idle = asyncio.get_running_loop().create_task(self._idle_watch(ws, record, lambda: last_activity))

        async def send(messages: list[dict[str, Any]]) -> None:
            for m in messages:
                record.sent.append(m)
                await ws.send(json.dumps(m))

        try:
            async for message in ws:
                if isinstance(message, bytes):
                    last_activity = self._clock()
                    record.audio_bytes += len(message)
                    record.audio_ms = record.audio_bytes / bytes_per_ms
                    if self.die_after_ms is not None and record.audio_ms >= self.die_after_ms:
                        record.ended = "died"
                        ws.transport.abort()
                        return
                    await send(recogniser.advance(record.audio_ms))
                    continue
                try:
                    kind = json.loads(message).get("type")
                except (ValueError, AttributeError):
                    kind = None
                if kind == "KeepAlive":
                    last_activity = self._clock()
                    record.keepalives.append(last_activity)
                elif kind == "Finalize":
                    record.finalizes += 1
                    await send(recogniser.flush(record.audio_ms, from_finalize=True))
                elif kind == "CloseStream":
                    record.close_stream_at = self._clock()
                    if self.hang_on_close_stream:
                        continue  # neither results nor a close: the client must give up on its own
                    await send(recogniser.flush(record.audio_ms, from_finalize=False))
                    await send([self._metadata(recogniser.request_id, record.audio_ms)])
                    record.ended = "closed"
                    await ws.close(1000)
                    return
                else:
                    record.unknown.append(message)
        except ConnectionClosed:
            pass
        finally:
            if not record.ended:
                record.ended = "client"
            idle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await idle
            self._live.discard(ws)

    async def _idle_watch(self, ws: ServerConnection, record: DeepgramConnection, last: Callable[[], float]) -> None:
        while True:
            left = last() + self.idle_timeout_s - self._clock()
            if left <= 0:
                record.ended = "idle"
                # Deepgram: "If no audio data or KeepAlive messages are sent within a 10-second window, the
                # connection will close with a NET-0001 error."
                await ws.close(1011, "NET-0001")
                return
            await asyncio.sleep(min(left, 0.05))

    @staticmethod
    def _metadata(request_id: str, audio_ms: float) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": request_id,
            "sha256": "0" * 64,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "duration": round(audio_ms / 1000.0, 3),
            "channels": 1,
            "models": ["00000000-0000-0000-0000-000000000000"],
            "model_info": {},
        }
