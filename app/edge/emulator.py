"""A provider-edge emulator: one caller's leg of a Twilio Media Streams or Plivo Audio Streams call.

It behaves like the real edge, not like a convenient client (docs/reference: telephony-protocols.md §0-2, §4):

- the agent's audio is played out of a buffer at 8,000 samples/s on the edge's own clock, however fast the
  server sends it; a mark / checkpoint is acknowledged only once the audio queued before it has played;
- Twilio `clear` empties the buffer and echoes every pending mark at once; Plivo `clearAudio` empties it,
  answers `clearedAudio` and never acknowledges the cut checkpoints;
- caller audio goes out as 20 ms mu-law frames, each sent at the end of its 20 ms on an absolute schedule;
- with auth on, the answer webhook is called first, signed over the public URL, and the stream is started with
  what it returned (TwiML `<Connect><Stream>` / Plivo `<Stream>`);
- every message the real edge would complain about is recorded in `violations` instead of being played;
- what the caller actually heard is logged: which bytes of the agent stream played, and when.

Playout is modelled exactly rather than drained tick by tick: a continuous run that started at `t0` at byte
`b0` has played `b0 + floor((now - t0) * 8000)` bytes at `now`, so a clear cuts at the precise sample and
there is no drift. The playout task only wakes when the next mark falls due, which keeps 100 concurrent
calls cheap.

All times come from the injected `clock` (default `time.monotonic`, which is system-wide on Linux, so the
server and the emulator share one timeline even across processes). It must advance in real time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import secrets
import time
import uuid
import wave
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.audio import pcm16_to_ulaw, ulaw_to_pcm16
from app.edge.signing import sign_plivo, sign_twilio, sign_twilio_upgrade

Provider = Literal["twilio", "plivo"]
Clock = Callable[[], float]
IdleAudio = Literal["silence", "none"]

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
ULAW_SILENCE = 0xFF
_SILENCE_FRAME = bytes([ULAW_SILENCE]) * FRAME_SAMPLES
# Twilio discards audio past 10 minutes of buffer (31931); Plivo's queue holds about 60 s (§1.3, §2.3).
_MAX_BUFFER_S: dict[Provider, float] = {"twilio": 600.0, "plivo": 60.0}
_PLIVO_MAX_MESSAGE = 64 * 1024  # Plivo: a WebSocket message may be at most 64 KB (§2.3)
_PLIVO_CONTENT_TYPE = "audio/x-mulaw;rate=8000"
# A float product such as (t0 + n/8000 - t0) * 8000 can land a hair under n; without this a mark due exactly
# now would wait one more loop turn.
_EPS = 1e-6


class CallRejected(Exception):
    """The server would not take the call: the webhook refused it or answered without a stream, or the
    WebSocket upgrade was refused (Twilio then reports error 31920)."""

    def __init__(self, stage: Literal["webhook", "upgrade"], status: int | None, body: str) -> None:
        super().__init__(f"{stage} refused (status {status}): {body[:300]}")
        self.stage = stage
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """Something the real edge would warn about or reject (Twilio 31950/31951/31924 and the like)."""

    at: float
    reason: str
    message: str


@dataclass(slots=True)
class MarkRecord:
    """A Twilio `mark` / Plivo `checkpoint` the server sent, and what became of it."""

    name: str
    received_at: float
    position: int  # byte offset in the received agent stream that must have played first
    played_at: float | None = None  # when the audio before it finished playing (None if it was cut)
    acked_at: float | None = None  # when the echo / playedStream left the edge
    cleared: bool = False  # pending at a clear: echoed at once (Twilio) or never acknowledged (Plivo)


@dataclass(frozen=True, slots=True)
class PlayedSpan:
    """One continuous stretch of agent audio the caller heard."""

    start: float
    end: float
    first_byte: int  # offsets into the received agent stream, end exclusive; mu-law is one byte per sample
    end_byte: int
    ended_by: Literal["drained", "clear", "hangup", "playing"]

    @property
    def samples(self) -> int:
        return self.end_byte - self.first_byte


@dataclass(frozen=True, slots=True)
class DroppedRange:
    """Agent audio a clear threw away before it played."""

    at: float
    first_byte: int
    end_byte: int


class Playout:
    """The edge's playback buffer on its own clock; synchronous, every method takes `now`."""

    def __init__(self, *, max_buffer_s: float = 600.0, keep_audio: bool = True) -> None:
        self._max_buffer = int(max_buffer_s * SAMPLE_RATE)
        self._keep_audio = keep_audio
        self._audio = bytearray()
        self.received = 0  # bytes ever queued (dropped ones included): the end of the agent stream
        self.played = 0  # bytes consumed by playback or by a clear
        self._run: tuple[float, int] | None = None  # (t0, b0) of the run in progress
        self._pending: deque[MarkRecord] = deque()
        self.spans: list[PlayedSpan] = []
        self.dropped: list[DroppedRange] = []
        self.first_audio_at: float | None = None

    @property
    def buffered(self) -> int:
        return self.received - self.played

    @property
    def pending_marks(self) -> list[MarkRecord]:
        return list(self._pending)

    def audio(self, now: float, data: bytes) -> bool:
        """Queue agent audio; False if the buffer is full and the edge discards it."""
        self.advance(now)
        if self.received - self.played + len(data) > self._max_buffer:
            return False
        if not data:
            return True
        if self._keep_audio:
            self._audio += data
        if self._run is None:
            # The buffer had run dry, so playback resumes the moment audio arrives.
            self._run = (now, self.received)
            if self.first_audio_at is None:
                self.first_audio_at = now
        self.received += len(data)
        return True

    def marker(self, now: float, record: MarkRecord) -> list[MarkRecord]:
        """Queue a mark behind the audio received so far; returns the marks now due (maybe this one)."""
        self._pending.append(record)
        return self.take_due(now)

    def advance(self, now: float) -> None:
        """Play up to `now`. Marks are left for `take_due`, so reading the log never swallows an ack."""
        if self._run is None:
            return
        t0, b0 = self._run
        pos = b0 + int(max(0.0, now - t0) * SAMPLE_RATE + _EPS)
        if pos >= self.received:
            pos = self.received
            self.spans.append(PlayedSpan(t0, t0 + (pos - b0) / SAMPLE_RATE, b0, pos, "drained"))
            self._run = None
        self.played = max(self.played, pos)

    def take_due(self, now: float) -> list[MarkRecord]:
        """The marks whose audio has finished playing by `now`, with `played_at` set."""
        self.advance(now)
        due: list[MarkRecord] = []
        while self._pending and self._pending[0].position <= self.played:
            mark = self._pending.popleft()
            played_at = self._time_of(mark.position)
            mark.played_at = mark.received_at if played_at is None else max(mark.received_at, played_at)
            due.append(mark)
        return due

    def _time_of(self, position: int) -> float | None:
        """When byte `position` of the agent stream finished playing (None if it never played)."""
        if self._run is not None and position >= self._run[1]:
            t0, b0 = self._run
            return t0 + (position - b0) / SAMPLE_RATE
        for span in reversed(self.spans):
            if span.first_byte < position <= span.end_byte:
                return span.start + (position - span.first_byte) / SAMPLE_RATE
            if span.end_byte < position:
                break
        return None

    def next_due(self) -> float | None:
        """When the oldest pending mark falls due (-inf if it already has), or None if nothing is pending."""
        if not self._pending:
            return None
        if self._pending[0].position <= self.played:
            return float("-inf")
        if self._run is None:
            return None
        t0, b0 = self._run
        return t0 + (self._pending[0].position - b0) / SAMPLE_RATE

    def clear(self, now: float) -> tuple[list[MarkRecord], list[MarkRecord]]:
        """Empty the buffer at `now`: (marks that had played before the clear, marks cut by it)."""
        due = self.take_due(now)
        self._stop_run(now, "clear")
        if self.played < self.received:
            self.dropped.append(DroppedRange(now, self.played, self.received))
        self.played = self.received
        cut = list(self._pending)
        self._pending.clear()
        for mark in cut:
            mark.cleared = True
        return due, cut

    def hangup(self, now: float) -> None:
        """The call ended: nothing more is heard."""
        self.advance(now)
        self._stop_run(now, "hangup")

    def _stop_run(self, now: float, why: Literal["clear", "hangup"]) -> None:
        if self._run is not None:
            t0, b0 = self._run
            if self.played > b0:
                self.spans.append(PlayedSpan(t0, max(t0, now), b0, self.played, why))
            self._run = None

    def spans_until(self, now: float) -> list[PlayedSpan]:
        self.advance(now)
        spans = list(self.spans)
        if self._run is not None:
            t0, b0 = self._run
            spans.append(PlayedSpan(t0, now, b0, self.played, "playing"))
        return spans

    def received_audio(self) -> bytes:
        self._need_audio()
        return bytes(self._audio)

    def heard(self, now: float, since: float | None = None, until: float | None = None) -> bytes:
        """The mu-law bytes that played between `since` and `until` (clock times), in play order."""
        self._need_audio()
        out = bytearray()
        for span in self.spans_until(now):
            lo = span.first_byte
            hi = span.end_byte
            if since is not None:
                lo = max(lo, span.first_byte + int(max(0.0, since - span.start) * SAMPLE_RATE + _EPS))
            if until is not None:
                hi = min(hi, span.first_byte + int(max(0.0, until - span.start) * SAMPLE_RATE + _EPS))
            if hi > lo:
                out += self._audio[lo:hi]
        return bytes(out)

    def position_at(self, now: float, t: float) -> int | None:
        """The byte of the agent stream playing at clock time `t`, or None if nothing was heard then."""
        for span in self.spans_until(now):
            if span.start <= t < span.end:
                return min(span.end_byte - 1, span.first_byte + int((t - span.start) * SAMPLE_RATE + _EPS))
        return None

    def _need_audio(self) -> None:
        if not self._keep_audio:
            raise RuntimeError("this call was started with keep_audio=False")


# --- wire dialects ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Audio:
    data: bytes


@dataclass(frozen=True, slots=True)
class _Marker:
    name: str


@dataclass(frozen=True, slots=True)
class _Clear:
    pass


@dataclass(frozen=True, slots=True)
class _SendDtmf:
    digits: str


_Command = _Audio | _Marker | _Clear | _SendDtmf


def _exact_keys(
    obj: dict[str, Any], required: set[str], optional: frozenset[str] = frozenset()
) -> str | None:
    keys = set(obj)
    if missing := required - keys:
        return f"missing field(s) {sorted(missing)}"
    if extra := keys - required - optional:
        return f"unexpected field(s) {sorted(extra)}"
    return None


def _payload(value: object) -> bytes | str:
    if not isinstance(value, str):
        return "payload is not a string"
    try:
        data = base64.b64decode(value, validate=True)
    except binascii.Error:
        return "payload is not valid base64"
    if data[:4] == b"RIFF":
        return "payload carries a WAV header (Twilio plays it as garbled audio)"
    return data


def _twilio_command(obj: dict[str, Any], stream_sid: str) -> _Command | str:
    """Twilio accepts only media, mark and clear, with exactly the documented fields (31951, 31924)."""
    event = obj.get("event")
    required = {"media": {"event", "streamSid", "media"}, "mark": {"event", "streamSid", "mark"}}
    if event not in ("media", "mark", "clear"):
        return f"unknown event {event!r} (Twilio accepts media, mark, clear)"
    if err := _exact_keys(obj, required.get(event, {"event", "streamSid"})):
        return f"{event}: {err}"
    if obj["streamSid"] != stream_sid:
        return f"{event}: wrong streamSid {obj['streamSid']!r}"
    if event == "clear":
        return _Clear()
    inner = obj[event]
    if not isinstance(inner, dict):
        return f"{event}.{event} is not an object"
    if event == "mark":
        if err := _exact_keys(inner, {"name"}):
            return f"mark.mark: {err}"
        if not isinstance(inner["name"], str):
            return "mark.name is not a string"
        return _Marker(inner["name"])
    if err := _exact_keys(inner, {"payload"}):
        return f"media.media: {err}"
    data = _payload(inner["payload"])
    return f"media: {data}" if isinstance(data, str) else _Audio(data)


def _plivo_command(obj: dict[str, Any], stream_id: str) -> _Command | str:
    """Plivo's four inbound events; `playAudio` must match the stream's contentType (§2.2)."""
    event = obj.get("event")
    if event == "playAudio":
        if err := _exact_keys(obj, {"event", "media"}, frozenset({"streamId"})):
            return f"playAudio: {err}"
    elif event == "checkpoint":
        if err := _exact_keys(obj, {"event", "streamId", "name"}):
            return f"checkpoint: {err}"
    elif event == "clearAudio":
        if err := _exact_keys(obj, {"event", "streamId"}):
            return f"clearAudio: {err}"
    elif event == "sendDTMF":
        if err := _exact_keys(obj, {"event", "dtmf"}):
            return f"sendDTMF: {err}"
    else:
        return f"unknown event {event!r} (Plivo accepts playAudio, checkpoint, clearAudio, sendDTMF)"
    if "streamId" in obj and obj["streamId"] != stream_id:
        return f"{event}: wrong streamId {obj['streamId']!r}"
    if event == "checkpoint":
        return _Marker(obj["name"]) if isinstance(obj["name"], str) else "checkpoint.name is not a string"
    if event == "clearAudio":
        return _Clear()
    if event == "sendDTMF":
        digits = obj["dtmf"]
        if not isinstance(digits, str) or not digits or set(digits) - set("0123456789*#ABCD"):
            return f"sendDTMF: bad digits {digits!r}"
        return _SendDtmf(digits)
    media = obj["media"]
    if not isinstance(media, dict):
        return "playAudio.media is not an object"
    if err := _exact_keys(media, {"contentType", "sampleRate", "payload"}):
        return f"playAudio.media: {err}"
    if media["contentType"] != "audio/x-mulaw" or media["sampleRate"] != SAMPLE_RATE:
        got = f"{media['contentType']!r}/{media['sampleRate']!r}"
        return f"playAudio: {got} does not match the stream's mu-law/8000"
    data = _payload(media["payload"])
    return f"playAudio: {data}" if isinstance(data, str) else _Audio(data)


# --- one call ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Batch:
    remaining: int
    done: asyncio.Future[None]
    times: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Frame:
    payload: bytes
    batch: _Batch
    fast: bool


def _hex_id(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class EmulatedCall:
    """One call through the emulated edge.

    `async with EmulatedCall.start("twilio", "http://127.0.0.1:8123") as call:` (or
    `call = await EmulatedCall.start(...)`, then `await call.close()`). `server` is the loopback base URL
    the app listens on; `public_url` is the PUBLIC_URL the app was configured with (default: `server`). The
    answer webhook is called when `auth_token` is given, or always with `answer=True`; `answer=False`
    connects straight to the stream path (signed if a token is given). `key_id` signs Twilio requests with a
    webhook shared key instead.
    """

    def __init__(
        self,
        provider: Provider,
        server: str,
        *,
        public_url: str | None = None,
        auth_token: str | None = None,
        key_id: str | None = None,
        call_id: str | None = None,
        answer: bool | None = None,
        clock: Clock = time.monotonic,
        idle_audio: IdleAudio = "silence",
        keep_audio: bool = True,
        from_number: str = "+14155550100",
        to_number: str = "+14155550199",
        stream_params: dict[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if provider not in ("twilio", "plivo"):
            raise ValueError(f"unknown provider {provider!r}")
        self.provider: Provider = provider
        self.server = server.rstrip("/")
        self.public_url = (public_url or server).rstrip("/")
        self._token = auth_token
        self._key_id = key_id
        self._answer = auth_token is not None if answer is None else answer
        self._clock = clock
        self._idle_audio = idle_audio
        self._http = http
        self.from_number = from_number
        self.to_number = to_number
        if provider == "twilio":
            self.call_id = call_id or _hex_id("CA")
            self.stream_id = _hex_id("MZ")
            self.account_id = _hex_id("AC")
        else:
            self.call_id = call_id or str(uuid.uuid4())
            self.stream_id = str(uuid.uuid4())
            self.account_id = "MA" + secrets.token_hex(9).upper()

        self.playout = Playout(max_buffer_s=_MAX_BUFFER_S[provider], keep_audio=keep_audio)
        self.webhook_xml: str | None = None
        self.stream_url: str | None = None  # the public wss:// URL the stream was opened on
        self.custom_parameters: dict[str, str] = dict(stream_params or {})  # Twilio <Parameter>s
        self.extra_headers: str = ";".join(f"{k}={v}" for k, v in (stream_params or {}).items())  # Plivo
        self.marks: list[MarkRecord] = []
        self.clears: list[float] = []
        self.violations: list[ProtocolViolation] = []
        self.received_events: list[tuple[float, str]] = []
        self.dtmf_received: list[tuple[float, str]] = []  # Plivo sendDTMF from the server
        self.frames_sent = 0
        self.connected_at: float | None = None
        self.started_at: float | None = None  # when `start` went out: the caller-frame grid starts here
        self.closed_at: float | None = None
        self.closed_by: Literal["caller", "server"] | None = None
        self.close_code: int | None = None

        self._ws: ClientConnection | None = None
        self._seq = 0
        self._chunk = 0
        self._last_ts = -FRAME_S * 1000
        self._epoch_ms = 0.0
        self._send_lock = asyncio.Lock()
        self._caller_queue: deque[_Frame] = deque()
        self._caller_wake = asyncio.Event()
        self._playout_wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._hanging_up = False
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def start(cls, provider: Provider, server: str, **kwargs: Any) -> EmulatedCall:
        """A call that connects on `async with` or `await`; keyword arguments as for the constructor."""
        return cls(provider, server, **kwargs)

    def __await__(self) -> Generator[Any, None, EmulatedCall]:
        return self.__aenter__().__await__()

    async def __aenter__(self) -> EmulatedCall:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- what the caller heard ---------------------------------------------------------------------------

    @property
    def played_samples(self) -> int:
        """Agent samples the caller has heard so far (bytes consumed by clears are not counted)."""
        return sum(span.samples for span in self.played_spans)

    @property
    def played_spans(self) -> list[PlayedSpan]:
        return self.playout.spans_until(self._now())

    @property
    def buffered_samples(self) -> int:
        self.playout.advance(self._now())
        return self.playout.buffered

    @property
    def received_samples(self) -> int:
        return self.playout.received

    @property
    def first_audio_at(self) -> float | None:
        return self.playout.first_audio_at

    @property
    def dropped(self) -> list[DroppedRange]:
        return self.playout.dropped

    @property
    def acked_marks(self) -> list[MarkRecord]:
        return [m for m in self.marks if m.acked_at is not None]

    def heard_audio(self, since: float | None = None, until: float | None = None) -> bytes:
        """The mu-law the caller actually heard between two clock times."""
        return self.playout.heard(self._now(), since, until)

    def heard_pcm(self, since: float | None = None, until: float | None = None) -> npt.NDArray[np.int16]:
        return ulaw_to_pcm16(self.heard_audio(since, until))

    def received_audio(self) -> bytes:
        """Every byte of agent audio the server sent, heard or not."""
        return self.playout.received_audio()

    def position_at(self, t: float) -> int | None:
        return self.playout.position_at(self._now(), t)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait until `predicate()` holds; re-checked on every message and at least every 10 ms."""
        deadline = self._clock() + timeout_s
        while not predicate():
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise TimeoutError("condition not met in time")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(0.01, remaining))

    async def wait_closed(self, timeout_s: float = 5.0) -> None:
        await asyncio.wait_for(self._closed.wait(), timeout_s)

    # --- connecting --------------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Answer webhook (if any), WebSocket upgrade, then `connected`/`start`, and the edge's tasks."""
        if self._ws is not None:
            raise RuntimeError("already connected")
        path = "/twilio/stream" if self.provider == "twilio" else "/plivo/stream"
        if self._answer:
            await self._call_webhook()
        else:
            self.stream_url = self._public_ws() + path
        assert self.stream_url is not None
        headers: dict[str, str] = {}
        if self._token is not None:
            if self.provider == "twilio":
                headers = sign_twilio_upgrade(self._token, self.stream_url, key_id=self._key_id)
            else:
                # Plivo signs the upgrade as a GET; which URL form is UNVERIFIED (§2.5). We sign the
                # https:// form of the public stream URL, as plivo-stream-sdk-node rebuilds it.
                headers = sign_plivo(self._token, "GET", self._http_form(self.stream_url))
        try:
            self._ws = await connect(
                self._loopback(self.stream_url),
                additional_headers=headers,
                compression=None,
                proxy=None,
                ping_interval=None,
                max_size=None,
                user_agent_header=None,
                open_timeout=10,
                close_timeout=5,
            )
        except InvalidStatus as exc:
            body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
            raise CallRejected("upgrade", exc.response.status_code, body) from exc
        self.connected_at = self._clock()
        self._tasks = [asyncio.create_task(self._receive_loop(), name=f"edge-rx-{self.call_id}")]
        # One turn for the receiver, so whatever the server sent before `start` is judged as such.
        await asyncio.sleep(0)
        try:
            await self._send_start()
        except ConnectionClosed:
            return  # the server hung up at once; the receiver has recorded it
        self._tasks += [
            asyncio.create_task(self._playout_loop(), name=f"edge-playout-{self.call_id}"),
            asyncio.create_task(self._caller_loop(), name=f"edge-caller-{self.call_id}"),
        ]

    async def _call_webhook(self) -> None:
        if self.provider == "twilio":
            path = "/twilio/voice"
            params = {
                "AccountSid": self.account_id,
                "ApiVersion": "2010-04-01",
                "CallSid": self.call_id,
                "CallStatus": "ringing",
                "Called": self.to_number,
                "Caller": self.from_number,
                "Direction": "inbound",
                "From": self.from_number,
                "To": self.to_number,
            }
            headers = {"User-Agent": "TwilioProxy/1.1"}
            if self._token is not None:
                headers |= sign_twilio(self._token, self.public_url + path, params, key_id=self._key_id)
        else:
            path = "/plivo/answer"
            params = {
                "ALegRequestUUID": self.call_id,
                "ALegUUID": self.call_id,
                "BillRate": "0.0085",
                "CallStatus": "ringing",
                "CallUUID": self.call_id,
                "CallerName": self.from_number.lstrip("+"),
                "Direction": "inbound",
                "Event": "StartApp",
                "From": self.from_number.lstrip("+"),
                "RequestUUID": self.call_id,
                "To": self.to_number.lstrip("+"),
            }
            headers = {"User-Agent": "PlivoHTTP"}
            if self._token is not None:
                headers |= sign_plivo(self._token, "POST", self.public_url + path, params)
        client = self._http or httpx.AsyncClient(trust_env=False, timeout=10)
        try:
            response = await client.post(self.server + path, data=params, headers=headers)
        finally:
            if self._http is None:
                await client.aclose()
        self.webhook_xml = response.text
        if response.status_code != 200:
            raise CallRejected("webhook", response.status_code, response.text)
        try:
            root = ET.fromstring(response.text)
        except ET.ParseError as exc:
            raise CallRejected("webhook", response.status_code, response.text) from exc
        url = self._twilio_stream(root) if self.provider == "twilio" else self._plivo_stream(root)
        if url is None:
            raise CallRejected("webhook", response.status_code, response.text)
        self.stream_url = url

    def _twilio_stream(self, root: ET.Element) -> str | None:
        stream = root.find("Connect/Stream")
        if stream is None:
            if root.find("Start/Stream") is not None:
                self._violation("<Start><Stream> is one-way; a bidirectional stream needs <Connect>", "")
            return None
        url = stream.get("url", "")
        if not urlsplit(url).scheme:
            # A relative url is resolved against the webhook's URL, over wss (§1.4).
            parts = urlsplit(urljoin(self.public_url + "/twilio/voice", url))
            url = urlunsplit(("wss" if parts.scheme == "https" else "ws", *parts[1:]))
        if urlsplit(url).query:
            self._violation("<Stream url> has a query string (handshake fails, 31920)", url)
        if stream.get("track", "inbound_track") != "inbound_track":
            self._violation("<Connect><Stream> only allows track=inbound_track (31941)", url)
        self.custom_parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        return url

    def _plivo_stream(self, root: ET.Element) -> str | None:
        stream = root.find("Stream")
        if stream is None:
            return None
        url = (stream.text or "").strip()
        if stream.get("bidirectional") != "true":
            self._violation('<Stream> without bidirectional="true": playAudio is not allowed', url)
        if stream.get("audioTrack", "inbound") != "inbound":
            self._violation("a bidirectional <Stream> must use audioTrack=inbound", url)
        if stream.get("contentType") != _PLIVO_CONTENT_TYPE:
            # The XML reference's default is L16, so anything else means we would not get mu-law (§2.4).
            self._violation(f"<Stream contentType={stream.get('contentType')!r}>: not mu-law/8000", url)
        if stream.get("keepCallAlive") != "true":
            self._violation('<Stream> without keepCallAlive="true": Plivo runs the next element at once', url)
        if len(url) > 2048:
            self._violation("stream URL longer than 2048 characters", url)
        self.extra_headers = stream.get("extraHeaders", "")
        return url

    def _public_ws(self) -> str:
        parts = urlsplit(self.public_url)
        return urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path, "", ""))

    @staticmethod
    def _http_form(ws_url: str) -> str:
        parts = urlsplit(ws_url)
        return urlunsplit(("https" if parts.scheme == "wss" else "http", *parts[1:]))

    def _loopback(self, stream_url: str) -> str:
        """Map the public stream URL onto the loopback server, as the proxy in front of the app would."""
        public = urlsplit(self._public_ws())
        target = urlsplit(stream_url)
        prefix = public.path.rstrip("/")
        if public.scheme == "wss" and target.scheme != "wss":
            self._violation("stream URL is not wss:// (Twilio and Plivo need TLS on 443)", stream_url)
        if target.netloc.lower() != public.netloc.lower() or not target.path.startswith(prefix + "/"):
            raise CallRejected(
                "webhook", None, f"stream URL {stream_url} is not under PUBLIC_URL {self.public_url}"
            )
        server = urlsplit(self.server)
        scheme = "wss" if server.scheme == "https" else "ws"
        path = server.path.rstrip("/") + target.path[len(prefix) :]
        return urlunsplit((scheme, server.netloc, path, target.query, ""))

    # --- sending -----------------------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> float:
        """Send one event with the next sequence number; returns when it was handed to the socket."""
        assert self._ws is not None
        async with self._send_lock:
            self._seq += 1
            message["sequenceNumber"] = str(self._seq) if self.provider == "twilio" else self._seq
            text = json.dumps(message, separators=(",", ":"))
            sent_at = self._clock()
            await self._ws.send(text)
            return sent_at

    async def _send_start(self) -> None:
        assert self._ws is not None
        if self.provider == "twilio":
            await self._ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            start: dict[str, Any] = {
                "event": "start",
                "streamSid": self.stream_id,
                "start": {
                    "streamSid": self.stream_id,
                    "accountSid": self.account_id,
                    "callSid": self.call_id,
                    "tracks": ["inbound"],
                    "customParameters": self.custom_parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE, "channels": 1},
                },
            }
        else:
            start = {
                "event": "start",
                "start": {
                    "callId": self.call_id,
                    "streamId": self.stream_id,
                    "accountId": self.account_id,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE},
                },
                "extra_headers": self.extra_headers,
            }
        self._epoch_ms = time.time() * 1000
        self.started_at = await self._send(start)

    async def _send_frame(self, payload: bytes, slot_ts_ms: float) -> float:
        self._chunk += 1
        ts = max(slot_ts_ms, self._last_ts + FRAME_S * 1000)
        self._last_ts = ts
        if self.provider == "twilio":
            media: dict[str, Any] = {
                "track": "inbound",
                "chunk": str(self._chunk),
                "timestamp": str(round(ts)),
                "payload": _b64(payload),
            }
            message: dict[str, Any] = {"event": "media", "streamSid": self.stream_id, "media": media}
        else:
            # Plivo's reference calls media.timestamp Unix ms; its Python SDK says ms from stream start
            # (UNVERIFIED, §2.1). We send Unix ms.
            media = {
                "track": "inbound",
                "timestamp": str(round(self._epoch_ms + ts)),
                "chunk": self._chunk,
                "payload": _b64(payload),
            }
            message = {
                "event": "media",
                "streamId": self.stream_id,
                "media": media,
                "extra_headers": self.extra_headers,
            }
        sent_at = await self._send(message)
        self.frames_sent += 1
        return sent_at

    async def send_audio(self, pcm16: npt.NDArray[np.int16], realtime: bool = True) -> list[float]:
        """Send caller audio (8 kHz int16) as 20 ms mu-law frames; returns each frame's send time.

        Frame k covers [t - 20 ms, t] where t is its send time: with `realtime`, frames go out on the
        stream's absolute 20 ms grid, at the end of each frame's 20 ms, so the first may follow the call by
        up to 20 ms. The last partial frame is padded with silence. If the call ends midway, the times of
        the frames that went out are returned.
        """
        if pcm16.dtype != np.int16:
            raise TypeError(f"send_audio wants int16 PCM at 8 kHz, got {pcm16.dtype}")
        if self._ws is None:
            raise RuntimeError("not connected")
        ulaw = pcm16_to_ulaw(pcm16)
        if len(ulaw) % FRAME_SAMPLES:
            ulaw += bytes([ULAW_SILENCE]) * (FRAME_SAMPLES - len(ulaw) % FRAME_SAMPLES)
        if not ulaw or self.closed:
            return []
        batch = _Batch(len(ulaw) // FRAME_SAMPLES, asyncio.get_running_loop().create_future())
        frames = [
            _Frame(ulaw[i : i + FRAME_SAMPLES], batch, not realtime)
            for i in range(0, len(ulaw), FRAME_SAMPLES)
        ]
        self._caller_queue.extend(frames)
        self._caller_wake.set()
        try:
            await batch.done
        except asyncio.CancelledError:
            self._caller_queue = deque(f for f in self._caller_queue if f.batch is not batch)
            raise
        return batch.times

    async def send_silence(self, seconds: float, realtime: bool = True) -> list[float]:
        return await self.send_audio(np.zeros(round(seconds * SAMPLE_RATE), dtype=np.int16), realtime)

    async def send_wav(self, path: str | Path, realtime: bool = True) -> list[float]:
        """Send a corpus clip (8 kHz mono 16-bit WAV)."""
        with wave.open(str(path), "rb") as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (SAMPLE_RATE, 1, 2):
                raise ValueError(f"{path}: want 8 kHz mono 16-bit PCM")
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
        return await self.send_audio(pcm, realtime)

    async def send_dtmf(self, digit: str) -> float:
        """A caller key press, as the edge reports it."""
        if self.provider == "twilio":
            return await self._send(
                {
                    "event": "dtmf",
                    "streamSid": self.stream_id,
                    "dtmf": {"track": "inbound_track", "digit": digit},
                }
            )
        stamp = str(round(time.time() * 1000))
        return await self._send(
            {
                "event": "dtmf",
                "streamId": self.stream_id,
                "dtmf": {"track": "inbound", "digit": digit, "timestamp": stamp},
                "extra_headers": self.extra_headers,
            }
        )

    async def send_raw(self, data: str | bytes) -> None:
        """Send a frame verbatim (bad JSON, binary, a forged event) for robustness tests."""
        assert self._ws is not None
        async with self._send_lock:
            await self._ws.send(data)

    # --- ending ------------------------------------------------------------------------------------------

    async def hangup(self) -> None:
        """The caller hangs up: `stop`, then the socket closes."""
        if self._ws is None or self.closed or self._hanging_up:
            return
        self._hanging_up = True
        now = self._clock()
        self.playout.hangup(now)
        await self._cancel_tasks(skip_receiver=True)
        stop: dict[str, Any]
        if self.provider == "twilio":
            stop = {
                "event": "stop",
                "streamSid": self.stream_id,
                "stop": {"accountSid": self.account_id, "callSid": self.call_id},
            }
        else:
            stop = {"event": "stop", "streamId": self.stream_id}
        with contextlib.suppress(ConnectionClosed):
            await self._send(stop)
        await self._ws.close()
        self._mark_closed(now, "caller")

    async def close(self) -> None:
        """Hang up if the call is still up, and stop every task of this call."""
        await self.hangup()
        await self._cancel_tasks(skip_receiver=False)
        if self._ws is not None:
            await self._ws.close()
        self._release_batches()

    async def _cancel_tasks(self, *, skip_receiver: bool) -> None:
        current = asyncio.current_task()
        tasks = [t for i, t in enumerate(self._tasks) if t is not current and not (skip_receiver and i == 0)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _mark_closed(self, now: float, by: Literal["caller", "server"]) -> None:
        if self._closed.is_set():
            return
        self.playout.hangup(now)
        self.closed_at = now
        self.closed_by = by
        self.close_code = self._ws.close_code if self._ws is not None else None
        self._closed.set()
        self._notify()

    def _release_batches(self) -> None:
        for frame in self._caller_queue:
            if not frame.batch.done.done():
                frame.batch.done.set_result(None)
        self._caller_queue.clear()

    # --- the edge's three tasks --------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                await self._on_message(self._clock(), raw)
        except ConnectionClosed:
            pass
        finally:
            if not self._hanging_up:
                self._mark_closed(self._clock(), "server")
                # The call is over: nothing more is played or sent.
                for task in self._tasks[1:]:
                    task.cancel()
                self._release_batches()

    async def _on_message(self, now: float, raw: str | bytes) -> None:
        self._notify()
        if isinstance(raw, bytes):
            self.received_events.append((now, "<binary>"))
            self._violation("binary frame (text JSON only; Twilio warning 31950)", repr(raw[:60]), now)
            return
        if self.provider == "plivo" and len(raw.encode()) > _PLIVO_MAX_MESSAGE:
            self._violation("message larger than Plivo's 64 KB limit", raw, now)
        try:
            obj = json.loads(raw)
        except ValueError:
            self.received_events.append((now, "<invalid>"))
            self._violation("invalid JSON", raw, now)
            return
        if not isinstance(obj, dict):
            self.received_events.append((now, "<invalid>"))
            self._violation("JSON that is not an object", raw, now)
            return
        self.received_events.append((now, str(obj.get("event"))))
        if self._hanging_up:
            return
        if self.started_at is None:
            self._violation("message before start (no stream id exists yet)", raw, now)
            return
        if self.provider == "twilio":
            command = _twilio_command(obj, self.stream_id)
        else:
            command = _plivo_command(obj, self.stream_id)
        if isinstance(command, str):
            # Whether the real edge then drops the message is UNVERIFIED (§1.2); dropping it here makes a
            # violation visible in what the caller hears too.
            self._violation(command, raw, now)
            return
        match command:
            case _Audio(data=data):
                if not self.playout.audio(now, data):
                    self._violation("playback buffer full; audio discarded (Twilio 31931)", "", now)
                await self._ack(self.playout.take_due(now))
            case _Marker(name=name):
                record = MarkRecord(name, now, self.playout.received)
                self.marks.append(record)
                await self._ack(self.playout.marker(now, record))
                self._playout_wake.set()
            case _Clear():
                self.clears.append(now)
                due, cut = self.playout.clear(now)
                await self._ack(due)
                if self.provider == "twilio":
                    # Twilio echoes every mark still pending; a cut mark looks exactly like a played one.
                    await self._ack(cut)
                else:
                    # Plivo acks the clear; cut checkpoints never get a playedStream (§2.3).
                    await self._send({"event": "clearedAudio", "streamId": self.stream_id})
                self._playout_wake.set()
            case _SendDtmf(digits=digits):
                self.dtmf_received.append((now, digits))

    async def _ack(self, marks: list[MarkRecord]) -> None:
        for mark in marks:
            if self.provider == "twilio":
                message = {"event": "mark", "streamSid": self.stream_id, "mark": {"name": mark.name}}
            else:
                message = {"event": "playedStream", "streamId": self.stream_id, "name": mark.name}
            mark.acked_at = await self._send(message)
        if marks:
            self._notify()

    async def _playout_loop(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                self._playout_wake.clear()
                await self._ack(self.playout.take_due(self._clock()))
                due = self.playout.next_due()
                timeout = None if due is None else max(0.0, due - self._clock())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._playout_wake.wait(), timeout)

    async def _caller_loop(self) -> None:
        assert self.started_at is not None
        grid0 = self.started_at
        slot = 0
        silence = self._idle_audio == "silence"
        try:
            while True:
                if not self._caller_queue and not silence:
                    self._caller_wake.clear()
                    await self._caller_wake.wait()
                    # Idle with nothing sent: the next frame is the one being captured now.
                    slot = max(slot, int((self._clock() - grid0) / FRAME_S))
                if self._caller_queue and self._caller_queue[0].fast:
                    frame = self._caller_queue.popleft()
                    self._frame_sent(frame, await self._send_frame(frame.payload, slot * FRAME_S * 1000))
                    continue
                # Sleep to the end of this slot on the absolute grid; when late, catch up without drifting.
                delay = grid0 + (slot + 1) * FRAME_S - self._clock()
                if delay > 0:
                    self._caller_wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._caller_wake.wait(), delay)
                    if self._clock() < grid0 + (slot + 1) * FRAME_S:
                        continue  # woken early by new audio: re-evaluate (it may be a fast batch)
                if self._caller_queue:
                    frame = self._caller_queue.popleft()
                    self._frame_sent(frame, await self._send_frame(frame.payload, slot * FRAME_S * 1000))
                elif silence:
                    await self._send_frame(_SILENCE_FRAME, slot * FRAME_S * 1000)
                slot += 1
        except ConnectionClosed:
            pass
        finally:
            self._release_batches()

    @staticmethod
    def _frame_sent(frame: _Frame, sent_at: float) -> None:
        frame.batch.times.append(sent_at)
        frame.batch.remaining -= 1
        if frame.batch.remaining == 0 and not frame.batch.done.done():
            frame.batch.done.set_result(None)

    # --- helpers -----------------------------------------------------------------------------------------

    def _now(self) -> float:
        return self.closed_at if self.closed_at is not None else self._clock()

    def _notify(self) -> None:
        # set() wakes every current waiter; clearing at once re-arms the event for the next change.
        self._changed.set()
        self._changed.clear()

    def _violation(self, reason: str, message: str, at: float | None = None) -> None:
        self.violations.append(ProtocolViolation(self._clock() if at is None else at, reason, message[:300]))


class EdgeEmulator:
    """Shared settings and one HTTP client for many calls to one server (the load generator's view).

    `async with EdgeEmulator("http://127.0.0.1:8123", twilio_auth_token=...) as edge:` then
    `async with edge.call("twilio") as call: ...`. Leaving the block closes every call still up.
    """

    def __init__(
        self,
        server: str,
        *,
        public_url: str | None = None,
        twilio_auth_token: str | None = None,
        plivo_auth_token: str | None = None,
        twilio_key_id: str | None = None,
        answer: bool | None = None,
        clock: Clock = time.monotonic,
        idle_audio: IdleAudio = "silence",
        keep_audio: bool = True,
    ) -> None:
        self.server = server
        self.public_url = public_url
        self._tokens: dict[Provider, str | None] = {"twilio": twilio_auth_token, "plivo": plivo_auth_token}
        self._twilio_key_id = twilio_key_id
        self._answer = answer
        self._clock = clock
        self._idle_audio: IdleAudio = idle_audio
        self._keep_audio = keep_audio
        self._http: httpx.AsyncClient | None = None
        self.calls: list[EmulatedCall] = []

    async def __aenter__(self) -> EdgeEmulator:
        self._http = httpx.AsyncClient(trust_env=False, timeout=10, limits=httpx.Limits(max_connections=200))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.gather(*(call.close() for call in self.calls), return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def call(self, provider: Provider, **overrides: Any) -> EmulatedCall:
        """A new call (not yet connected); `overrides` are EmulatedCall keyword arguments."""
        options: dict[str, Any] = {
            "public_url": self.public_url,
            "auth_token": self._tokens[provider],
            "key_id": self._twilio_key_id if provider == "twilio" else None,
            "answer": self._answer,
            "clock": self._clock,
            "idle_audio": self._idle_audio,
            "keep_audio": self._keep_audio,
            "http": self._http,
        }
        options.update(overrides)
        call = EmulatedCall(provider, self.server, **options)
        self.calls.append(call)
        return call
