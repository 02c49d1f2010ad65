"""The telephony adapter interface, plus the frame-parsing helpers the Twilio and Plivo adapters share.

Theory of operation
-------------------
An adapter is a sans-I/O codec for one call's media-stream WebSocket, in the style of websockets' `Protocol`:
the route hands it each inbound text frame and gets typed events back (`receive`), and asks it for the text of
each frame to send (`media`, `mark`, `clear`). It never touches the socket, never awaits and never reads the
clock, so it is tested by feeding it literal wire lines.

The only state is the stream identity learnt from `start`. Before `start`, stream frames are refused (there
is no stream to attribute them to) and nothing can be built, because both providers address outbound frames
by the stream id (Twilio: "nothing may be sent before start" [TW-WS]).

`receive` never raises on bad input: anything unusable becomes `InvalidMessage(reason, raw)` and an event name
we do not handle becomes `UnknownEvent(event, raw)`, so the session can log it and carry on. Today every frame
yields exactly one event; the list leaves room for frames that mean more than one thing.

Source tags ([TW-WS], [PL-REF], ...) refer to the Sources list in the shared telephony-protocols reference.
"""

from __future__ import annotations

import json
from binascii import a2b_base64
from typing import Any, Protocol, runtime_checkable

from providers.telephony.events import InvalidMessage, TelephonyEvent


@runtime_checkable
class TelephonyProtocol(Protocol):
    """One call's media-stream codec: wire text in, events out, outbound frames built as text. No I/O."""

    @property
    def name(self) -> str:
        """Registry key: "twilio" or "plivo"."""
        ...

    @property
    def acks_cleared_marks(self) -> bool:
        """True if the provider echoes every pending marker when playback is cleared (Twilio); False if
        markers cut by a clear are never acknowledged (Plivo), so the session must resolve them itself."""
        ...

    @property
    def stream_id(self) -> str | None:
        """The provider's stream id, known once `start` has been received."""
        ...

    @property
    def call_id(self) -> str | None:
        """The provider's call id (Twilio CallSid, Plivo CallUUID), known once `start` has been received."""
        ...

    def receive(self, text: str) -> list[TelephonyEvent]:
        """Parse one inbound text frame. Never raises on bad input."""
        ...

    def media(self, payload: bytes) -> str:
        """Frame that queues raw mu-law/8000 audio for playback. RuntimeError before `start`."""
        ...

    def mark(self, name: str) -> str:
        """Frame that asks to be told (by name) when the audio queued so far has played."""
        ...

    def clear(self) -> str:
        """Frame that drops all audio the provider has queued for playback."""
        ...


@runtime_checkable
class BinaryTelephonyProtocol(TelephonyProtocol, Protocol):
    """An adapter whose audio travels in binary frames (`/pcm/stream`); control frames stay JSON text.

    The minimal extension of the interface: `receive_bytes` is `receive` for a binary frame, and `outbound` maps a
    frame built by `media`/`mark`/`clear` (text, as the session and outbox expect) onto what goes on the socket.
    The carriers need neither: they send no binary frames (Twilio: warning 31950 [TW-ERR-31950]).
    """

    @property
    def rate(self) -> int:
        """Sample rate of the PCM16 frames on the wire, both ways."""
        ...

    def receive_bytes(self, data: bytes) -> list[TelephonyEvent]:
        """Parse one inbound binary frame. Never raises on bad input."""
        ...

    def outbound(self, frame: str) -> str | bytes:
        """The socket frame for a frame this adapter built: bytes for audio, the text itself otherwise."""
        ...


class ProtocolFactory(Protocol):
    """How PROTOCOLS builds an adapter: the adapter class itself, called with the per-frame payload cap."""

    def __call__(self, max_payload_bytes: int = ...) -> TelephonyProtocol: ...


class BinaryProtocolFactory(Protocol):
    """How BINARY_PROTOCOLS builds an adapter: the payload cap (in 8 kHz mu-law bytes) and the wire rate."""

    def __call__(self, max_payload_bytes: int = ..., rate: int = ...) -> BinaryTelephonyProtocol: ...


# --- Shared parsing helpers (package-internal) ------------------------------------------------------------
# Handlers raise FrameError with a human-readable reason; the adapter's `receive` turns it into
# InvalidMessage. Raising keeps the handlers straight-line, and a try block costs nothing unless it fires.


class FrameError(Exception):
    """A frame is unusable; the message is the InvalidMessage reason."""


def describe(value: object) -> str:
    """A short repr for error reasons: wire values can be arbitrarily long."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def split_frame(text: str) -> tuple[str, dict[str, Any]] | InvalidMessage:
    """Decode one text frame into (event name, object), or say why it is not a usable frame."""
    try:
        obj = json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and non-UTF-8 bytes; RecursionError, absurdly nested input.
        raw = text if isinstance(text, str) else repr(text)
        return InvalidMessage(f"malformed JSON: {exc}", raw)
    if not isinstance(obj, dict):
        return InvalidMessage(f"frame is a JSON {type(obj).__name__}, not an object", text)
    event = obj.get("event")
    if not isinstance(event, str):
        return InvalidMessage("'event' missing or not a string", text)
    return event, obj


# Below, `path` is the field's dotted path in the frame, used only in the InvalidMessage reason.
def require_object(obj: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise FrameError(f"{path} missing or not an object")
    return value


def require_str(obj: dict[str, Any], key: str, path: str) -> str:
    """A required non-empty string (ids): an empty id would address nothing."""
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise FrameError(f"{path} missing or not a non-empty string")
    return value


def optional_str(obj: dict[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise FrameError(f"{path} is not a string: {describe(value)}")


def optional_int(value: object, where: str) -> int | None:
    """Coerce a numeric field with int(): Twilio sends numbers as strings ("4") [TW-WS], Plivo mostly as
    numbers but sometimes as strings (its stream SDK types playedStream.sequenceNumber "can be string")."""
    if value is None:
        return None
    if type(value) is int:
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    elif isinstance(value, float) and value.is_integer():
        return int(value)
    # bool lands here too: `true` is not a count.
    raise FrameError(f"{where} is not an integer: {describe(value)}")


# 500 ms of mu-law/8000. Both providers send 20 ms (160-byte) frames in practice [TW-WS][PL-REF]; the cap only
# bounds what one frame can make the server do (decode, VAD windows, Silero runs), and is a setting.
DEFAULT_MAX_PAYLOAD_BYTES = 4000


def max_base64_chars(max_bytes: int) -> int:
    """The longest strict base64 text that can decode to at most `max_bytes` (no whitespace is allowed)."""
    return 4 * -(-max_bytes // 3)


def decode_payload(value: object, where: str, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """Strict base64 to raw bytes, at most `max_bytes` of them. Any length up to that is valid, including 0
    and odd: mu-law is one byte per sample and neither provider promises a chunk size [TW-WS]."""
    if not isinstance(value, str):
        raise FrameError(f"{where} missing or not a string")
    # Judged on the text's length, before decoding: a hostile frame must cost nothing to refuse.
    if len(value) > max_base64_chars(max_bytes):
        padding = 2 if value.endswith("==") else 1 if value.endswith("=") else 0
        size = len(value) * 3 // 4 - padding
        raise FrameError(f"{where} of {size} bytes exceeds the {max_bytes}-byte cap")
    try:
        # strict_mode rejects characters outside the alphabet and data after padding, which the default
        # mode silently skips (and would hand us garbled audio).
        payload = a2b_base64(value, strict_mode=True)
    except ValueError as exc:  # binascii.Error, or a non-ASCII str
        raise FrameError(f"{where} is not valid base64: {exc}") from None
    # The length check above lets through up to two bytes more than the cap (base64 comes in 3-byte groups).
    if len(payload) > max_bytes:
        raise FrameError(f"{where} of {len(payload)} bytes exceeds the {max_bytes}-byte cap")
    return payload


def string_map(value: object, where: str) -> dict[str, str]:
    """A JSON object of custom parameters as str -> str; absent means none. Non-string values (a JSON-string
    form may carry numbers or booleans) are kept in their JSON spelling."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FrameError(f"{where} is not an object")
    return {key: item if isinstance(item, str) else json.dumps(item) for key, item in value.items()}


def media_format(fmt: dict[str, Any], where: str, default_encoding: str | None) -> tuple[str, int]:
    """(encoding, sample rate) from a `mediaFormat` object.

    The encoding is normalised to a bare lower-case MIME type, so "audio/x-mulaw;rate=8000" (the spelling of
    Plivo's contentType attribute [PL-XML]) compares equal to Twilio's "audio/x-mulaw". The rate comes from
    `sampleRate`, else from a `;rate=` parameter, else 8000, the only rate mu-law telephony uses.
    """
    raw = optional_str(fmt, "encoding", f"{where}.encoding")
    if raw is None:
        if default_encoding is None:
            raise FrameError(f"{where}.encoding missing")
        raw = default_encoding
    base, _, params = raw.partition(";")
    rate = optional_int(fmt.get("sampleRate"), f"{where}.sampleRate")
    if rate is None:
        for param in params.split(";"):
            key, _, val = param.partition("=")
            if key.strip().lower() == "rate":
                rate = optional_int(val.strip(), f"{where}.encoding rate")
        if rate is None:
            rate = 8000
    if rate <= 0:
        raise FrameError(f"{where}.sampleRate is not positive: {rate}")
    encoding = base.strip().lower()
    if not encoding:
        raise FrameError(f"{where}.encoding is empty")
    return encoding, rate


# Both providers document DTMF digits as 0-9 * # A-D [PL-REF]; Twilio's keypad is the same set.
_DTMF_DIGITS = frozenset("0123456789*#ABCD")


def dtmf_digit(obj: dict[str, Any]) -> str:
    value = obj.get("digit")
    if not isinstance(value, str) or value.upper() not in _DTMF_DIGITS:
        # The value stays out of the reason: reasons get logged, digits may be a PIN (house style 7).
        raise FrameError("dtmf.digit missing or not one DTMF digit")
    return value.upper()
