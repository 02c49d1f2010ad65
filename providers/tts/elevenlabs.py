"""ElevenLabs streaming synthesis (WebSocket `stream-input`) behind the `TtsEngine` interface.

Wire protocol, from ElevenLabs' API reference (text-to-speech WebSocket, AsyncAPI `stream-input`):

- connect `wss://api.elevenlabs.io/v1/text-to-speech/{voice_id}/stream-input?model_id=...&output_format=ulaw_8000`
  with the key in the `xi-api-key` header (never in the URL, so never in an access log);
- send the initialising message `{"text": " ", "voice_settings": {...}}` (the first text must be one space),
  then the sentence as `{"text": "<sentence> ", "flush": true}` (text should end with a space; `flush` makes
  the server generate now instead of waiting for `chunk_length_schedule`'s 120 characters; the older
  `try_trigger_generation` is deprecated and not used), then `{"text": ""}`, which ends the input;
- receive `{"audio": <base64>, "alignment": {...}, "normalizedAlignment": {...}}` messages, then one with
  `"isFinal": true` (and no audio), after which the server closes.

Alignment: `chars`, their start times and durations in ms, **relative to the audio chunk of the same message**
(the reference says so), so each message's times are shifted by the audio received before it. The reference
names the lists `char_start_times_ms` / `chars_durations_ms`; clients of the live service read
`charStartTimesMs` / `charDurationsMs`: every spelling is accepted. `alignment` follows the text as sent
(`normalizedAlignment` the text after number expansion etc.), so it is preferred; the chars are matched to our
text in order, skipping the ones that are not there (`align_chars`). Each word's start is its first matched
character's start, its sound end its last character's end. A reply with no alignment at all gets estimated
timings (`providers.tts.openai_speech.estimate_words`).

Audio: `ulaw_8000` is G.711 mu-law at 8 kHz, the phone's own format: decoded to int16 with no resampling.

Failures, each a `ProviderError`: a refused handshake (401/403 not retryable; 429/5xx retryable); a close with
an error code before `isFinal` (1008 "policy violation" is how the service reports a bad key, quota or bad
input: not retryable; anything else is); a JSON error message; a socket dropped mid-reply; no message for
`idle_timeout_s` (a `ProviderTimeout`).

One connection per sentence: the service ends the stream after `{"text": ""}`, and the interface is one sentence
in, its audio and alignment out. The handshake (TCP, TLS, upgrade: a few round trips to the service) would add
to every sentence's first audio, so `warm_connections` spares are kept open, initialised, and a sentence takes
one when it can (then another is opened in the background). A spare older than `warm_max_age_s` (the service
drops a stream after 20 s without text) is dropped, not used; one found closed before it answered anything is
replaced by a fresh connection once, so a spare that died while waiting never costs a sentence.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from providers.errors import ProviderError, ProviderTimeout
from providers.mulaw import ulaw_to_pcm16
from providers.tts.base import Synthesis, WordTiming, word_spans
from providers.tts.openai_speech import estimate_words

DEFAULT_URL = "wss://api.elevenlabs.io"
SAMPLE_RATE = 8000
_BYTES_PER_MS = 8.0  # mu-law at 8 kHz
_STARTS = ("charStartTimesMs", "char_start_times_ms")
_DURATIONS = ("charDurationsMs", "charsDurationsMs", "chars_durations_ms", "char_durations_ms")
_REASON_CHARS = 200
# websockets writes every handshake header to its logger at DEBUG, the xi-api-key header among them: this
# connection's logger never goes below INFO, whatever LOG_LEVEL is.
_WS_LOGGER = logging.getLogger(__name__ + ".websocket")
_WS_LOGGER.setLevel(logging.INFO)


# ---- wire messages (pure) -----------------------------------------------------------------------------------


def stream_url(base: str, voice_id: str, model_id: str) -> str:
    query = urlencode({"model_id": model_id, "output_format": "ulaw_8000", "sync_alignment": "true"})
    return f"{base.rstrip('/')}/v1/text-to-speech/{quote(voice_id, safe='')}/stream-input?{query}"


def init_message(voice_settings: Mapping[str, float | bool]) -> str:
    return json.dumps({"text": " ", "voice_settings": dict(voice_settings)})


def text_message(text: str) -> str:
    return json.dumps({"text": text if text.endswith(" ") else text + " ", "flush": True})


END_OF_INPUT = json.dumps({"text": ""})


@dataclass(frozen=True, slots=True)
class CharAlignment:
    """Characters and their times (ms, relative to the audio of the message that carried them)."""

    chars: tuple[str, ...]
    starts_ms: tuple[float, ...]
    durations_ms: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class AudioChunk:
    ulaw: bytes
    alignment: CharAlignment | None


@dataclass(frozen=True, slots=True)
class FinalReply:
    pass


@dataclass(frozen=True, slots=True)
class ErrorReply:
    message: str


@dataclass(frozen=True, slots=True)
class OtherReply:
    """A message with neither audio, isFinal nor an error (e.g. alignment-only or future fields): ignored."""

    keys: tuple[str, ...]


Reply = AudioChunk | FinalReply | ErrorReply | OtherReply


def _first(mapping: Mapping[str, Any], names: Sequence[str]) -> Any:
    for name in names:
        if mapping.get(name) is not None:
            return mapping[name]
    return None


def parse_alignment(raw: object) -> CharAlignment | None:
    """An alignment object in any of its spellings; None if absent or inconsistent."""
    if not isinstance(raw, Mapping):
        return None
    chars, starts, durations = raw.get("chars"), _first(raw, _STARTS), _first(raw, _DURATIONS)
    if not isinstance(chars, list) or not isinstance(starts, list):
        return None
    if not isinstance(durations, list):
        durations = [0.0] * len(starts)
    if not len(chars) == len(starts) == len(durations):
        return None
    try:
        return CharAlignment(tuple(str(c) for c in chars), tuple(float(s) for s in starts),
                             tuple(float(d) for d in durations))
    except (TypeError, ValueError):
        return None


def parse_reply(text: str | bytes) -> Reply:
    """One server message."""
    try:
        data = json.loads(text)
    except ValueError:
        return ErrorReply("elevenlabs: a message that is not JSON")
    if not isinstance(data, dict):
        return ErrorReply("elevenlabs: a message that is not a JSON object")
    audio = data.get("audio")
    if isinstance(audio, str) and audio:
        try:
            ulaw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            return ErrorReply("elevenlabs: audio that is not base64")
        alignment = parse_alignment(data.get("alignment")) or parse_alignment(data.get("normalizedAlignment"))
        return AudioChunk(ulaw, alignment)
    if data.get("isFinal") is True:
        return FinalReply()
    error = data.get("error") or data.get("message")
    if error:
        return ErrorReply("elevenlabs: " + _short(str(error)))
    return OtherReply(tuple(sorted(str(k) for k in data)))


def _short(text: str) -> str:
    return " ".join(text.split())[:_REASON_CHARS]


# ---- alignment to our text (pure) ---------------------------------------------------------------------------

_LOOKAHEAD = 6  # characters a vendor char may skip ahead in our text (dropped or normalised characters)


def align_chars(text: str, chars: Sequence[str], starts_ms: Sequence[float], durations_ms: Sequence[float]
                ) -> list[tuple[float, float] | None]:
    """Per character of `text`: (start ms, end ms) from the vendor's chars matched in order, or None.

    Whitespace is not matched (the vendor adds and drops spaces); a char not found within `_LOOKAHEAD`
    characters of the cursor is skipped.
    """
    times: list[tuple[float, float] | None] = [None] * len(text)
    cursor = 0
    for char, start, duration in zip(chars, starts_ms, durations_ms, strict=True):
        if not char or char.isspace():
            continue
        limit = min(len(text), cursor + _LOOKAHEAD + 1)
        for j in range(cursor, limit):
            if text[j] == char:
                times[j] = (start, start + max(0.0, duration))
                cursor = j + 1
                break
    return times


def words_from_chars(text: str, times: Sequence[tuple[float, float] | None]) -> tuple[WordTiming, ...]:
    """Word timings from per-character times: a word starts at its first timed character and its sound ends
    with its last one (trailing punctuation is not part of the word, as in espeak's alignment)."""
    words: list[WordTiming] = []
    for start, end, _ in word_spans(text):
        timed = [t for t in times[start:end] if t is not None]
        if not timed:
            continue
        begin, finish = timed[0][0], max(t[1] for t in timed)
        if words and begin <= words[-1].audio_ms:
            continue
        words.append(WordTiming(char_start=start, char_end=end, audio_ms=begin,
                                audio_end_ms=finish if finish > begin else None))
    return tuple(words)


class Assembler:
    """Collects one reply's messages: the audio in order, the alignment on one timeline."""

    def __init__(self) -> None:
        self._ulaw = bytearray()
        self._chars: list[str] = []
        self._starts: list[float] = []
        self._durations: list[float] = []

    def add(self, chunk: AudioChunk) -> None:
        offset = len(self._ulaw) / _BYTES_PER_MS  # this message's times start where its audio does
        self._ulaw += chunk.ulaw
        if chunk.alignment is not None:
            self._chars.extend(chunk.alignment.chars)
            self._starts.extend(offset + s for s in chunk.alignment.starts_ms)
            self._durations.extend(chunk.alignment.durations_ms)

    def synthesis(self, text: str) -> Synthesis:
        pcm = ulaw_to_pcm16(bytes(self._ulaw))
        if self._chars:
            words = words_from_chars(text, align_chars(text, self._chars, self._starts, self._durations))
        else:
            words = estimate_words(text, pcm, SAMPLE_RATE)
        duration_ms = len(self._ulaw) / _BYTES_PER_MS
        words = tuple(w for w in words if w.audio_ms < duration_ms)
        return Synthesis(text=text, pcm=pcm, sample_rate=SAMPLE_RATE, words=words)


# ---- the engine ---------------------------------------------------------------------------------------------


class _StaleConnection(Exception):
    """A warm connection was found closed before it answered anything: worth one retry on a fresh one."""


class ElevenLabsTts:
    """ElevenLabs `stream-input`, one connection per sentence, with warm spares (see the module docstring)."""

    def __init__(
        self,
        api_key: str,
        voice_id: str,
        *,
        model_id: str = "eleven_flash_v2_5",
        url: str = DEFAULT_URL,
        stability: float = 0.5,
        similarity_boost: float = 0.8,
        connect_timeout_s: float = 5.0,
        idle_timeout_s: float = 5.0,
        warm_connections: int = 1,
        warm_max_age_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        speed: float = 1.0,
    ) -> None:
        if not api_key:
            raise ValueError("an ElevenLabs API key is required")
        if not voice_id:
            raise ValueError("an ElevenLabs voice id is required")
        if warm_connections < 0:
            raise ValueError(f"warm_connections must be >= 0, got {warm_connections}")
        self._api_key = api_key
        self.voice_id = voice_id
        self.model_id = model_id
        self._base_url = url
        self.url = stream_url(url, voice_id, model_id)
        self.voice_settings = {"stability": stability, "similarity_boost": similarity_boost}
        if speed != 1.0:  # voice_settings.speed, 0.7-1.2 in ElevenLabs' docs; left out at 1 (the voice's own)
            self.voice_settings["speed"] = speed
        self._paced: dict[float, ElevenLabsTts] = {}
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.warm_connections = warm_connections
        # The service closes a stream that gets no text for 20 s (its inactivity_timeout); a spare older than
        # this is not trusted.
        self.warm_max_age_s = warm_max_age_s
        self._clock = clock
        self._warm: deque[tuple[ClientConnection, float]] = deque()  # (open, initialised connection, opened at)
        self._warming = 0
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self.ignored_replies = 0  # messages with neither audio, isFinal nor an error
        self.warm_used = 0  # sentences that started on a warm connection

    def __repr__(self) -> str:  # never the key
        return f"ElevenLabsTts({self.url!r})"

    @property
    def spares(self) -> int:
        """Warm connections open, initialised and waiting for a sentence now."""
        return len(self._warm)

    @property
    def identity(self) -> str:
        """Everything that changes the output for a text (the cache key's first half)."""
        return f"elevenlabs:{self.url}:{json.dumps(self.voice_settings, sort_keys=True)}"

    def paced(self, factor: float) -> ElevenLabsTts:
        """This voice at `factor` x its speed (within 0.7-1.2). Kept per factor and closed with this handle; it
        keeps no warm spares: a slower reply is rare (a clarification), so it opens a connection per sentence."""
        speed = round(min(max(float(self.voice_settings.get("speed", 1.0)) * factor, 0.7), 1.2), 3)
        if speed not in self._paced:
            self._paced[speed] = ElevenLabsTts(
                self._api_key, self.voice_id, model_id=self.model_id, url=self._base_url,
                stability=float(self.voice_settings["stability"]),
                similarity_boost=float(self.voice_settings["similarity_boost"]),
                connect_timeout_s=self.connect_timeout_s, idle_timeout_s=self.idle_timeout_s, warm_connections=0,
                clock=self._clock, speed=speed)
        return self._paced[speed]

    async def synthesize(self, text: str) -> Synthesis:
        if not text.strip():
            return Synthesis(text=text, pcm=np.zeros(0, dtype=np.int16), sample_rate=SAMPLE_RATE, words=())
        ws = self._take_warm()
        warm = ws is not None
        if ws is None:
            ws = await self._open()
        self._top_up()
        try:
            try:
                synthesis = await self._converse(ws, text, warm=warm)
            except _StaleConnection:
                ws.transport.abort()
                ws = await self._open()
                synthesis = await self._converse(ws, text, warm=False)
        except BaseException:
            ws.transport.abort()  # failed or cancelled (a barge-in): drop it now, no close handshake to wait for
            raise
        if warm:
            self.warm_used += 1
        # The reply is whole: close politely, but off the caller's path (the server closes after isFinal anyway).
        self._spawn(_close(ws))
        return synthesis

    # ---- connections ----------------------------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        """A connection with its initialising message sent (the handshake is the slow part: TLS, upgrade)."""
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                ws = await connect(self.url, additional_headers={"xi-api-key": self._api_key}, open_timeout=None,
                                   ping_interval=None, close_timeout=1.0, max_size=4 * 1024 * 1024,
                                   logger=_WS_LOGGER)
                await ws.send(init_message(self.voice_settings))
        except TimeoutError as exc:
            raise ProviderTimeout("elevenlabs: connect timed out") from exc
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ProviderError(f"elevenlabs: handshake refused (HTTP {status})",
                                retryable=status == 429 or status >= 500) from exc
        except (InvalidHandshake, OSError, ConnectionClosed) as exc:
            raise ProviderError(f"elevenlabs: connect failed: {type(exc).__name__}", retryable=True) from exc
        return ws

    def _take_warm(self) -> ClientConnection | None:
        """The freshest usable spare, if any; stale or closed ones are dropped on the way."""
        while self._warm:
            ws, opened_at = self._warm.pop()
            if ws.state is State.OPEN and self._clock() - opened_at < self.warm_max_age_s:
                return ws
            ws.transport.abort()
        return None

    def _top_up(self) -> None:
        """Open spares in the background up to `warm_connections`, so the next sentence skips the handshake."""
        while not self._closed and len(self._warm) + self._warming < self.warm_connections:
            self._warming += 1
            self._spawn(self._warm_one())

    async def _warm_one(self) -> None:
        try:
            ws = await self._open()
        except ProviderError:
            return  # the next sentence opens its own connection and reports what goes wrong
        finally:
            self._warming -= 1
        if self._closed:
            ws.transport.abort()
        else:
            self._warm.append((ws, self._clock()))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- one sentence ---------------------------------------------------------------------------------------

    async def _converse(self, ws: ClientConnection, text: str, *, warm: bool) -> Synthesis:
        assembler = Assembler()
        answered = False
        try:
            await ws.send(text_message(text))
            await ws.send(END_OF_INPUT)
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout_s):
                        message = await ws.recv()
                except TimeoutError as exc:
                    raise ProviderTimeout(f"elevenlabs: no reply for {self.idle_timeout_s:g} s") from exc
                answered = True
                reply = parse_reply(message)
                if isinstance(reply, AudioChunk):
                    assembler.add(reply)
                elif isinstance(reply, FinalReply):
                    # Decoding and the word ends take a few ms per second of speech: off the event loop.
                    return await asyncio.to_thread(assembler.synthesis, text)
                elif isinstance(reply, ErrorReply):
                    raise ProviderError(reply.message)
                else:
                    self.ignored_replies += 1  # counted, not dropped unseen: a new message kind shows up here
        except ConnectionClosed as exc:
            received = exc.rcvd
            if warm and not answered:
                raise _StaleConnection from exc  # closed while it waited (idle limit, restart, a refused key)
            if received is None:
                raise ProviderError("elevenlabs: connection dropped mid-reply", retryable=True) from exc
            code, reason = received.code, _short(received.reason)
            if code == 1000:
                # Closed normally without isFinal: the audio may be cut short, and nothing says so. An error.
                raise ProviderError("elevenlabs: closed before the final message", retryable=True) from exc
            raise ProviderError(f"elevenlabs: closed ({code}) {reason}".rstrip(), retryable=code != 1008) from exc

    async def aclose(self) -> None:
        """Close the spares and wait for the background opens and polite closes."""
        self._closed = True
        for paced in self._paced.values():
            await paced.aclose()
        while self._warm:
            self._warm.pop()[0].transport.abort()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        while self._warm:  # opened while we waited
            self._warm.pop()[0].transport.abort()


async def _close(ws: ClientConnection) -> None:
    try:
        await ws.close()
    except (ConnectionClosed, OSError):
        pass
