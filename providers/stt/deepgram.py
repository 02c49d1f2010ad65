"""Deepgram streaming recognition (`/v1/listen` over a WebSocket) behind the `SttEngine` interface.

A session owns one socket and one task. `open()` returns at once; the task connects (bounded by
`connect_timeout_s`) while `feed()` queues audio, so the caller's first words are never lost to the handshake.
Then two loops share the socket:

- the sender forwards queued audio as binary frames; when nothing has been queued for `keepalive_s` it sends
  a KeepAlive text frame (Deepgram closes a socket with NET-0001 after 10 s without audio or KeepAlive; its
  "Audio Keep Alive" guide asks for one every 3-5 s); on `finish()` it sends CloseStream and gives the server
  `finish_timeout_s` to send its last results and close;
- the receiver parses every text frame (`deepgram_wire.parse_message`) into the results queue.

Every way the socket can end becomes data: a normal close after CloseStream ends `results()`; a refused
handshake, an error close, a peer that vanished (reset, EOF) or stopped answering pings (`ping_timeout_s`),
or a server that never closes after CloseStream ends it with an `SttError`. Nothing waits without a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from providers.errors import ProviderError
from providers.stt.base import AudioEncoding, Final, Partial, SttError, SttResult, UtteranceEnd, Word, bytes_per_ms
from providers.stt.deepgram_wire import (
    CLOSE_STREAM,
    FINALIZE,
    KEEP_ALIVE,
    Metadata,
    Unknown,
    auth_header,
    close_error,
    listen_url,
    parse_message,
)

logger = logging.getLogger(__name__)

DEFAULT_URL = "wss://api.deepgram.com/v1/listen"
_FINISH = object()
_FINALIZE = object()
_END = object()


class DeepgramStt:
    """Deepgram live transcription; one session per stream (one per call is the intended use)."""

    def __init__(
        self,
        api_key: str,
        *,
        url: str = DEFAULT_URL,
        model: str | None = "nova-3",
        endpointing_ms: int | None = 300,
        utterance_end_ms: int | None = 1000,
        keepalive_s: float = 4.0,
        connect_timeout_s: float = 5.0,
        finish_timeout_s: float = 5.0,
        ping_interval_s: float = 5.0,
        ping_timeout_s: float = 5.0,
    ) -> None:
        if not api_key:
            raise ValueError("a Deepgram API key is required")
        self._api_key = api_key
        self.url = url
        self.model = model
        self.endpointing_ms = endpointing_ms
        self.utterance_end_ms = utterance_end_ms
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self.finish_timeout_s = finish_timeout_s
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s

    async def open(self, encoding: AudioEncoding = "mulaw") -> DeepgramSession:
        url = listen_url(
            self.url,
            encoding,
            model=self.model,
            endpointing_ms=self.endpointing_ms,
            utterance_end_ms=self.utterance_end_ms,
        )
        return DeepgramSession(self, url, encoding)

    async def transcribe(self, audio: bytes, encoding: AudioEncoding = "mulaw", at_ms: float = 0.0) -> Final:
        """Stream a whole clip, close the stream and join its finals. Raises ProviderError on failure."""
        session = await self.open(encoding)
        finals: list[Final] = []
        try:
            session.feed(audio, at_ms)
            await session.finish()
            async for result in session.results():
                if isinstance(result, SttError):
                    raise ProviderError(result.message, retryable=result.retryable)
                if isinstance(result, Final):
                    finals.append(result)
        finally:
            await session.aclose()
        end_ms = at_ms + len(audio) / bytes_per_ms(encoding)
        words: tuple[Word, ...] = tuple(w for f in finals for w in f.words)
        text = " ".join(f.text for f in finals if f.text)
        return Final(text=text, words=words, start_ms=at_ms, end_ms=end_ms, speech_final=True)

    async def aclose(self) -> None:
        """Nothing shared to release: each session owns its socket."""


class DeepgramSession:
    """One `/v1/listen` stream (see the module docstring)."""

    def __init__(self, engine: DeepgramStt, url: str, encoding: AudioEncoding) -> None:
        self._engine = engine
        self._url = url
        self._encoding: AudioEncoding = encoding
        self._outbox: asyncio.Queue[bytes | object] = asyncio.Queue()
        self._results: asyncio.Queue[SttResult | object] = asyncio.Queue()
        self._origin_ms: float | None = None
        self._finished = False
        self._done = False  # the socket's life is over (closed, failed or dropped)
        self._closed = False
        self.keepalives_sent = 0
        self.metadata: Metadata | None = None
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def encoding(self) -> AudioEncoding:
        return self._encoding

    def feed(self, audio: bytes, at_ms: float) -> None:
        if self._finished or self._done or self._closed or not audio:
            return
        if self._origin_ms is None:
            self._origin_ms = at_ms
        self._outbox.put_nowait(bytes(audio))

    async def results(self) -> AsyncIterator[SttResult]:
        while True:
            item = await self._results.get()
            if item is _END:
                return
            assert isinstance(item, Partial | Final | UtteranceEnd | SttError)
            yield item
            if isinstance(item, SttError):
                return

    async def finish(self) -> None:
        """Send CloseStream after the queued audio; the server's last results then arrive and the socket closes."""
        if self._finished or self._closed:
            return
        self._finished = True
        self._outbox.put_nowait(_FINISH)

    def finalize(self) -> None:
        """Ask for a final of what was heard so far now (Deepgram `Finalize`), e.g. when our own VAD ends the
        turn before Deepgram's endpointing would; the stream stays open. Deepgram-only, not in `SttSession`."""
        if not (self._finished or self._done or self._closed):
            self._outbox.put_nowait(_FINALIZE)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._results.put_nowait(_END)

    # --- the socket's life --------------------------------------------------------------------------------

    def _fail(self, error: SttError) -> None:
        if not self._done:
            self._done = True
            self._results.put_nowait(error)

    async def _run(self) -> None:
        engine = self._engine
        name, value = auth_header(engine._api_key)
        try:
            async with asyncio.timeout(engine.connect_timeout_s):
                ws = await connect(
                    self._url,
                    additional_headers={name: value},
                    open_timeout=None,  # bounded by the timeout around it
                    ping_interval=engine.ping_interval_s,
                    ping_timeout=engine.ping_timeout_s,
                    close_timeout=1.0,
                    max_queue=256,
                )
        except TimeoutError:
            self._fail(SttError("deepgram: connect timed out", retryable=True))
            return self._end()
        except InvalidStatus as exc:
            status = exc.response.status_code
            # 401/403: a wrong key will not get better; 429 and 5xx may.
            self._fail(SttError(f"deepgram: handshake refused ({status})", retryable=status == 429 or status >= 500))
            return self._end()
        except (OSError, InvalidHandshake) as exc:
            self._fail(SttError(f"deepgram: connect failed: {type(exc).__name__}: {exc}", retryable=True))
            return self._end()
        sender = asyncio.get_running_loop().create_task(self._send(ws))
        try:
            await self._receive(ws)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            with contextlib.suppress(Exception):
                await ws.close()  # already closed unless we are being cancelled
        self._end()

    def _end(self) -> None:
        self._done = True
        self._results.put_nowait(_END)

    async def _receive(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    logger.warning("deepgram: unexpected binary frame (%d bytes)", len(message))
                    continue
                parsed = parse_message(message, self._origin_ms or 0.0)
                if parsed is None:
                    continue
                if isinstance(parsed, Metadata):
                    self.metadata = parsed
                elif isinstance(parsed, Unknown):
                    logger.info("deepgram: unknown message (%d chars)", len(parsed.raw))
                elif isinstance(parsed, SttError):
                    self._fail(parsed)
                    return
                else:
                    self._results.put_nowait(parsed)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            if rcvd is None:
                self._fail(SttError("deepgram: connection lost", retryable=True))
            else:
                error = close_error(rcvd.code, rcvd.reason)
                if error is not None:
                    self._fail(error)
            return
        # The iterator ended on a normal close (1000); one that came before finish() is still a failure.
        if not self._finished:
            self._fail(SttError("deepgram: server closed the stream", retryable=True))

    async def _send(self, ws: ClientConnection) -> None:
        engine = self._engine
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self._outbox.get(), engine.keepalive_s)
                except TimeoutError:
                    await ws.send(KEEP_ALIVE)
                    self.keepalives_sent += 1
                    continue
                if item is _FINISH:
                    await ws.send(CLOSE_STREAM)
                    break
                if item is _FINALIZE:
                    await ws.send(FINALIZE)
                    continue
                assert isinstance(item, bytes)
                await ws.send(item)
            await asyncio.sleep(engine.finish_timeout_s)
        except ConnectionClosed:
            return  # the receiver sees the close and reports it
        # The server had finish_timeout_s to send its last results and close, and did not.
        self._fail(SttError("deepgram: no close after CloseStream", retryable=True))
        await ws.close()

