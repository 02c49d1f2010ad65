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
- what the caller actually heard is logged: which bytes of the agent stream played, and when;
- with an `echo` (`echo.EchoSpec`; default none), the caller is on a speakerphone: every caller frame is the
  caller's own audio plus the echo of the agent audio the edge PLAYED (its playout log, read on the caller
  frame grid), through `echo.StreamingEcho` (band limit, soft clip, room, drifting delay, ERL), then the
  line's mu-law; the frames as sent are kept in `caller_audio`;
- with a `network` (see `network.Network`; default none: loopback), every frame each way is delivered after a
  one-way delay with jitter, in order: caller media, acks and `stop` on the way to the server, the server's
  media, marks and clears on the way to the edge. Times recorded here are edge times: a frame was *sent*
  when it left the edge and *received* when it reached it.

The pieces live beside this module: `playout` (the playback buffer, modelled exactly on the edge's clock),
`wire` (each provider's messages, parsed and built, and the handshake: webhook, stream URL, upgrade) and
`caller` (the caller's 20 ms frames). Every name this module exported before the split is still exported.

All times come from the injected `clock` (default `time.monotonic`, which is system-wide on Linux, so the
server and the emulator share one timeline even across processes). It must advance in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
import wave
import xml.etree.ElementTree as ET
from collections.abc import Callable, Generator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx
import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.audio import pcm16_to_ulaw, ulaw_to_pcm16
from app.edge import wire
from app.edge.caller import FRAME_S, FRAME_SAMPLES, ULAW_SILENCE, CallerFrames, Clock, IdleAudio, wait_event
from app.edge.echo import EchoSpec, StreamingEcho
from app.edge.network import Direction, Link, Network
from app.edge.playout import SAMPLE_RATE, DroppedRange, MarkRecord, PlayedSpan, Playout
from app.edge.wire import ProtocolViolation, Provider

__all__ = [
    "FRAME_S",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "ULAW_SILENCE",
    "CallRejected",
    "Direction",
    "Clock",
    "DroppedRange",
    "EchoSpec",
    "EdgeEmulator",
    "EmulatedCall",
    "IdleAudio",
    "MarkRecord",
    "Network",
    "PlayedSpan",
    "Playout",
    "ProtocolViolation",
    "Provider",
]


class CallRejected(Exception):
    """The server would not take the call: the webhook refused it or answered without a stream, or the
    WebSocket upgrade was refused (Twilio then reports error 31920)."""

    def __init__(self, stage: Literal["webhook", "upgrade"], status: int | None, body: str) -> None:
        super().__init__(f"{stage} refused (status {status}): {body[:300]}")
        self.stage = stage
        self.status = status
        self.body = body


# --- one call ----------------------------------------------------------------------------------------------


def _hex_id(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


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
        network: Network | None = None,
        echo: EchoSpec | None = None,
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

        # The echo path reads the played audio back, so a call with an echo keeps it.
        self.playout = Playout(max_buffer_s=wire.MAX_BUFFER_S[provider], keep_audio=keep_audio or echo is not None)
        self.echo = echo
        self._echo = StreamingEcho(echo) if echo is not None else None
        self._echo_frames = 0  # caller frame slots the echo path has rendered
        self.caller_audio = bytearray()  # with an echo: every caller frame as sent, in order
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
        self._caller = CallerFrames(self._send_frame, clock, idle_audio)
        self._playout_wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._hanging_up = False
        self._tasks: list[asyncio.Task[None]] = []
        self.network = network or Network()
        self._up: Link[str | bytes] | None = None  # edge -> server, when there is a network that way
        self._down: Link[str | bytes] | None = None  # server -> edge
        self._net_tasks: list[asyncio.Task[None]] = []
        self._up_error: ConnectionClosed | None = None

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
            await wait_event(self._changed, min(0.01, remaining))

    async def wait_closed(self, timeout_s: float = 5.0) -> None:
        if not await wait_event(self._closed, timeout_s):
            raise TimeoutError("the call did not close in time")

    # --- connecting --------------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Answer webhook (if any), WebSocket upgrade, then `connected`/`start`, and the edge's tasks."""
        if self._ws is not None:
            raise RuntimeError("already connected")
        path = "/twilio/stream" if self.provider == "twilio" else "/plivo/stream"
        if self._answer:
            await self._call_webhook()
        else:
            self.stream_url = wire.public_ws(self.public_url) + path
        assert self.stream_url is not None
        headers = wire.upgrade_headers(self, self._token, self._key_id, self.stream_url)
        target = wire.loopback(self.public_url, self.server, self.stream_url, self._violation)
        if target is None:
            raise CallRejected(
                "webhook", None, f"stream URL {self.stream_url} is not under PUBLIC_URL {self.public_url}"
            )
        try:
            self._ws = await connect(
                target,
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
        self._start_network()
        self._tasks = [asyncio.create_task(self._receive_loop(), name=f"edge-rx-{self.call_id}")]
        # One turn for the receiver, so whatever the server sent before `start` is judged as such.
        await asyncio.sleep(0)
        try:
            await self._send_start()
        except ConnectionClosed:
            return  # the server hung up at once; the receiver has recorded it
        assert self.started_at is not None
        self._tasks += [
            asyncio.create_task(self._playout_loop(), name=f"edge-playout-{self.call_id}"),
            asyncio.create_task(self._caller.run(self.started_at), name=f"edge-caller-{self.call_id}"),
        ]

    async def _call_webhook(self) -> None:
        path, params, headers = wire.webhook_request(self, self._token, self._key_id)
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
        if self.provider == "twilio":
            twilio = wire.twilio_stream(root, self.public_url, self._violation)
            if twilio is None:
                raise CallRejected("webhook", response.status_code, response.text)
            self.stream_url, self.custom_parameters = twilio
        else:
            plivo = wire.plivo_stream(root, self._violation)
            if plivo is None:
                raise CallRejected("webhook", response.status_code, response.text)
            self.stream_url, self.extra_headers = plivo

    # --- sending -----------------------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> float:
        """Send one event with the next sequence number; returns when it left the edge."""
        assert self._ws is not None
        async with self._send_lock:
            self._seq += 1
            message["sequenceNumber"] = str(self._seq) if self.provider == "twilio" else self._seq
            text = json.dumps(message, separators=(",", ":"))
            sent_at = self._clock()
            await self._transmit(text, sent_at)
            return sent_at

    async def _transmit(self, data: str | bytes, now: float) -> None:
        """Put one frame on the wire towards the server: straight onto the socket, or into the network."""
        assert self._ws is not None
        if self._up is None:
            await self._ws.send(data)
            return
        if self._up_error is not None:
            raise self._up_error
        self._up.put(data, now)

    # --- the network ----------------------------------------------------------------------------------

    def _start_network(self) -> None:
        net = self.network
        if not net.to_server.direct:
            self._up = Link(net.to_server, net.seed * 2, self._clock, self._arrive_at_server)
        if not net.to_edge.direct:
            self._down = Link(net.to_edge, net.seed * 2 + 1, self._clock, self._arrive_at_edge)
        self._net_tasks = [
            asyncio.create_task(link.run(), name=f"edge-net-{self.call_id}")
            for link in (self._up, self._down) if link is not None
        ]

    async def _arrive_at_server(self, data: str | bytes) -> None:
        assert self._ws is not None
        if self._up_error is not None:
            return
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            self._up_error = exc  # later sends raise it, as a direct send would

    async def _arrive_at_edge(self, raw: str | bytes) -> None:
        with contextlib.suppress(ConnectionClosed):  # replying to it found the socket closed: the call is over
            await self._on_message(self._clock(), raw)

    @property
    def one_way_delays_ms(self) -> dict[str, list[float]]:
        """Each frame's actual one-way delay so far, per direction (empty without a network that way)."""
        return {
            "to_server": list(self._up.delays_ms) if self._up is not None else [],
            "to_edge": list(self._down.delays_ms) if self._down is not None else [],
        }

    async def _send_start(self) -> None:
        assert self._ws is not None
        if self.provider == "twilio":
            await self._transmit(json.dumps(wire.twilio_connected()), self._clock())
        start = wire.start_message(self)
        self._epoch_ms = time.time() * 1000
        self.started_at = await self._send(start)

    async def _send_frame(self, payload: bytes, slot_ts_ms: float) -> float:
        if self._echo is not None:
            payload = self._with_echo(payload, round(slot_ts_ms / (FRAME_S * 1000)))
        self._chunk += 1
        ts = max(slot_ts_ms, self._last_ts + FRAME_S * 1000)
        self._last_ts = ts
        message = wire.media_message(self, self._chunk, ts, self._epoch_ms, payload)
        sent_at = await self._send(message)
        self.frames_sent += 1
        return sent_at

    def _with_echo(self, payload: bytes, slot: int) -> bytes:
        """The caller frame of grid slot `slot` with the echo of what played during it added, as mu-law."""
        assert self._echo is not None and self.started_at is not None
        now = self._clock()
        echo = np.zeros(FRAME_SAMPLES)
        # Slots skipped while idle (idle_audio="none") still pass through the path, so its state (room tail,
        # delay line) stays on the same timeline as the loudspeaker.
        while self._echo_frames <= slot:
            t0 = self.started_at + self._echo_frames * FRAME_S
            played = ulaw_to_pcm16(self.playout.render(now, t0, FRAME_SAMPLES)).astype(np.float64)
            echo = self._echo.frame(played)
            self._echo_frames += 1
        mixed = ulaw_to_pcm16(payload).astype(np.float64) + echo
        out = pcm16_to_ulaw(np.clip(np.round(mixed), -32768, 32767).astype(np.int16))
        self.caller_audio += out
        return out

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
        return await self._caller.send(ulaw, realtime)

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
        return await self._send(wire.dtmf_message(self, digit))

    async def send_raw(self, data: str | bytes) -> None:
        """Send a frame verbatim (bad JSON, binary, a forged event) for robustness tests."""
        assert self._ws is not None
        async with self._send_lock:
            await self._transmit(data, self._clock())

    # --- ending ------------------------------------------------------------------------------------------

    async def hangup(self) -> None:
        """The caller hangs up: `stop`, then the socket closes."""
        if self._ws is None or self.closed or self._hanging_up:
            return
        self._hanging_up = True
        now = self._clock()
        self.playout.hangup(now)
        await self._cancel_tasks(skip_receiver=True)
        with contextlib.suppress(ConnectionClosed):
            await self._send(wire.stop_message(self))
        if self._up is not None:
            await self._up.drain(2.0)  # `stop` and whatever is still in flight reach the server first
        await self._ws.close()
        self._mark_closed(now, "caller")

    async def close(self) -> None:
        """Hang up if the call is still up, and stop every task of this call."""
        await self.hangup()
        await self._cancel_tasks(skip_receiver=False)
        for task in self._net_tasks:
            task.cancel()
        await asyncio.gather(*self._net_tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        self._caller.release()

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

    # --- the edge's three tasks --------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                if self._down is not None:
                    self._down.put(raw, self._clock())
                else:
                    await self._on_message(self._clock(), raw)
        except ConnectionClosed:
            pass
        finally:
            if self._down is not None and not self._hanging_up:
                await self._down.drain(2.0)  # what the server sent before it closed is still on its way
            if not self._hanging_up:
                self._mark_closed(self._clock(), "server")
                # The call is over: nothing more is played or sent.
                for task in self._tasks[1:]:
                    task.cancel()
                self._caller.release()

    async def _on_message(self, now: float, raw: str | bytes) -> None:
        self._notify()
        if isinstance(raw, bytes):
            self.received_events.append((now, "<binary>"))
            self._violation("binary frame (text JSON only; Twilio warning 31950)", repr(raw[:60]), now)
            return
        if self.provider == "plivo" and len(raw.encode()) > wire.PLIVO_MAX_MESSAGE:
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
            command = wire.twilio_command(obj, self.stream_id)
        else:
            command = wire.plivo_command(obj, self.stream_id)
        if isinstance(command, str):
            # Whether the real edge then drops the message is UNVERIFIED (§1.2); dropping it here makes a
            # violation visible in what the caller hears too.
            self._violation(command, raw, now)
            return
        match command:
            case wire.Audio(data=data):
                if not self.playout.audio(now, data):
                    self._violation("playback buffer full; audio discarded (Twilio 31931)", "", now)
                await self._ack(self.playout.take_due(now))
            case wire.Marker(name=name):
                record = MarkRecord(name, now, self.playout.received)
                self.marks.append(record)
                await self._ack(self.playout.marker(now, record))
                self._playout_wake.set()
            case wire.Clear():
                self.clears.append(now)
                due, cut = self.playout.clear(now)
                await self._ack(due)
                if self.provider == "twilio":
                    # Twilio echoes every mark still pending; a cut mark looks exactly like a played one.
                    await self._ack(cut)
                else:
                    # Plivo acks the clear; cut checkpoints never get a playedStream (§2.3).
                    await self._send(wire.cleared_audio(self))
                self._playout_wake.set()
            case wire.SendDtmf(digits=digits):
                self.dtmf_received.append((now, digits))

    async def _ack(self, marks: list[MarkRecord]) -> None:
        for mark in marks:
            mark.acked_at = await self._send(wire.ack_message(self, mark.name))
        if marks:
            self._notify()

    async def _playout_loop(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                self._playout_wake.clear()
                await self._ack(self.playout.take_due(self._clock()))
                due = self.playout.next_due()
                timeout = None if due is None else max(0.0, due - self._clock())
                await wait_event(self._playout_wake, timeout)

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
        network: Network | None = None,
        echo: EchoSpec | None = None,
    ) -> None:
        self.server = server
        self.public_url = public_url
        self._tokens: dict[Provider, str | None] = {"twilio": twilio_auth_token, "plivo": plivo_auth_token}
        self._twilio_key_id = twilio_key_id
        self._answer = answer
        self._clock = clock
        self._idle_audio: IdleAudio = idle_audio
        self._keep_audio = keep_audio
        self._network = network
        self._echo = echo
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
            "network": self._network.reseeded(len(self.calls)) if self._network is not None else None,
            "echo": self._echo,
        }
        options.update(overrides)
        call = EmulatedCall(provider, self.server, **options)
        self.calls.append(call)
        return call
