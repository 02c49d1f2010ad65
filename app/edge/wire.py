"""The providers' wire dialects: what a Twilio Media Streams / Plivo Audio Streams edge accepts from the
server, and what it sends (docs/reference: telephony-protocols.md §1-2).

Parsing is strict: `twilio_command` / `plivo_command` turn one server message into a command or into the
reason the real edge would complain about it. The builders return fresh message dicts (the caller stamps
the sequence number). The handshake helpers build the signed answer-webhook request, read the stream element
out of the TwiML / Plivo XML it returned, map the public stream URL onto the loopback server and sign the
WebSocket upgrade.
"""

from __future__ import annotations

import base64
import binascii
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urljoin, urlsplit, urlunsplit

from app.edge.playout import SAMPLE_RATE
from app.edge.signing import sign_plivo, sign_twilio, sign_twilio_upgrade

Provider = Literal["twilio", "plivo"]

# Twilio discards audio past 10 minutes of buffer (31931); Plivo's queue holds about 60 s (§1.3, §2.3).
MAX_BUFFER_S: dict[Provider, float] = {"twilio": 600.0, "plivo": 60.0}
PLIVO_MAX_MESSAGE = 64 * 1024  # Plivo: a WebSocket message may be at most 64 KB (§2.3)
_PLIVO_CONTENT_TYPE = "audio/x-mulaw;rate=8000"


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """Something the real edge would warn about or reject (Twilio 31950/31951/31924 and the like)."""

    at: float
    reason: str
    message: str


class Leg(Protocol):
    """What the dialect needs to know about one call's leg (an EmulatedCall is one)."""

    @property
    def provider(self) -> Provider: ...
    @property
    def public_url(self) -> str: ...
    @property
    def call_id(self) -> str: ...
    @property
    def stream_id(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def from_number(self) -> str: ...
    @property
    def to_number(self) -> str: ...
    @property
    def custom_parameters(self) -> dict[str, str]: ...
    @property
    def extra_headers(self) -> str: ...


# --- what the server sends ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audio:
    data: bytes


@dataclass(frozen=True, slots=True)
class Marker:
    name: str


@dataclass(frozen=True, slots=True)
class Clear:
    pass


@dataclass(frozen=True, slots=True)
class SendDtmf:
    digits: str


Command = Audio | Marker | Clear | SendDtmf


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


def twilio_command(obj: dict[str, Any], stream_sid: str) -> Command | str:
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
        return Clear()
    inner = obj[event]
    if not isinstance(inner, dict):
        return f"{event}.{event} is not an object"
    if event == "mark":
        if err := _exact_keys(inner, {"name"}):
            return f"mark.mark: {err}"
        if not isinstance(inner["name"], str):
            return "mark.name is not a string"
        return Marker(inner["name"])
    if err := _exact_keys(inner, {"payload"}):
        return f"media.media: {err}"
    data = _payload(inner["payload"])
    return f"media: {data}" if isinstance(data, str) else Audio(data)


def plivo_command(obj: dict[str, Any], stream_id: str) -> Command | str:
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
        return Marker(obj["name"]) if isinstance(obj["name"], str) else "checkpoint.name is not a string"
    if event == "clearAudio":
        return Clear()
    if event == "sendDTMF":
        digits = obj["dtmf"]
        if not isinstance(digits, str) or not digits or set(digits) - set("0123456789*#ABCD"):
            return f"sendDTMF: bad digits {digits!r}"
        return SendDtmf(digits)
    media = obj["media"]
    if not isinstance(media, dict):
        return "playAudio.media is not an object"
    if err := _exact_keys(media, {"contentType", "sampleRate", "payload"}):
        return f"playAudio.media: {err}"
    if media["contentType"] != "audio/x-mulaw" or media["sampleRate"] != SAMPLE_RATE:
        got = f"{media['contentType']!r}/{media['sampleRate']!r}"
        return f"playAudio: {got} does not match the stream's mu-law/8000"
    data = _payload(media["payload"])
    return f"playAudio: {data}" if isinstance(data, str) else Audio(data)


# --- what the edge sends -----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def twilio_connected() -> dict[str, Any]:
    """Twilio's first message; it carries no sequence number."""
    return {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start_message(leg: Leg) -> dict[str, Any]:
    if leg.provider == "twilio":
        return {
            "event": "start",
            "streamSid": leg.stream_id,
            "start": {
                "streamSid": leg.stream_id,
                "accountSid": leg.account_id,
                "callSid": leg.call_id,
                "tracks": ["inbound"],
                "customParameters": leg.custom_parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE, "channels": 1},
            },
        }
    return {
        "event": "start",
        "start": {
            "callId": leg.call_id,
            "streamId": leg.stream_id,
            "accountId": leg.account_id,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE},
        },
        "extra_headers": leg.extra_headers,
    }


def media_message(leg: Leg, chunk: int, ts_ms: float, epoch_ms: float, payload: bytes) -> dict[str, Any]:
    """One caller frame; `ts_ms` is its timestamp from stream start, `epoch_ms` the Unix ms of the start."""
    if leg.provider == "twilio":
        media: dict[str, Any] = {
            "track": "inbound",
            "chunk": str(chunk),
            "timestamp": str(round(ts_ms)),
            "payload": _b64(payload),
        }
        return {"event": "media", "streamSid": leg.stream_id, "media": media}
    # Plivo's reference calls media.timestamp Unix ms; its Python SDK says ms from stream start
    # (UNVERIFIED, §2.1). We send Unix ms.
    media = {
        "track": "inbound",
        "timestamp": str(round(epoch_ms + ts_ms)),
        "chunk": chunk,
        "payload": _b64(payload),
    }
    return {
        "event": "media",
        "streamId": leg.stream_id,
        "media": media,
        "extra_headers": leg.extra_headers,
    }


def dtmf_message(leg: Leg, digit: str) -> dict[str, Any]:
    if leg.provider == "twilio":
        return {
            "event": "dtmf",
            "streamSid": leg.stream_id,
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    stamp = str(round(time.time() * 1000))
    return {
        "event": "dtmf",
        "streamId": leg.stream_id,
        "dtmf": {"track": "inbound", "digit": digit, "timestamp": stamp},
        "extra_headers": leg.extra_headers,
    }


def stop_message(leg: Leg) -> dict[str, Any]:
    if leg.provider == "twilio":
        return {
            "event": "stop",
            "streamSid": leg.stream_id,
            "stop": {"accountSid": leg.account_id, "callSid": leg.call_id},
        }
    return {"event": "stop", "streamId": leg.stream_id}


def ack_message(leg: Leg, name: str) -> dict[str, Any]:
    """The acknowledgement of a played mark / checkpoint."""
    if leg.provider == "twilio":
        return {"event": "mark", "streamSid": leg.stream_id, "mark": {"name": name}}
    return {"event": "playedStream", "streamId": leg.stream_id, "name": name}


def cleared_audio(leg: Leg) -> dict[str, Any]:
    return {"event": "clearedAudio", "streamId": leg.stream_id}


# --- the handshake: answer webhook, stream URL, upgrade ----------------------------------------------------


def webhook_request(
    leg: Leg, token: str | None, key_id: str | None
) -> tuple[str, dict[str, str], dict[str, str]]:
    """(path, form parameters, headers) of the answer webhook, signed over the public URL if `token`."""
    if leg.provider == "twilio":
        path = "/twilio/voice"
        params = {
            "AccountSid": leg.account_id,
            "ApiVersion": "2010-04-01",
            "CallSid": leg.call_id,
            "CallStatus": "ringing",
            "Called": leg.to_number,
            "Caller": leg.from_number,
            "Direction": "inbound",
            "From": leg.from_number,
            "To": leg.to_number,
        }
        headers = {"User-Agent": "TwilioProxy/1.1"}
        if token is not None:
            headers |= sign_twilio(token, leg.public_url + path, params, key_id=key_id)
    else:
        path = "/plivo/answer"
        params = {
            "ALegRequestUUID": leg.call_id,
            "ALegUUID": leg.call_id,
            "BillRate": "0.0085",
            "CallStatus": "ringing",
            "CallUUID": leg.call_id,
            "CallerName": leg.from_number.lstrip("+"),
            "Direction": "inbound",
            "Event": "StartApp",
            "From": leg.from_number.lstrip("+"),
            "RequestUUID": leg.call_id,
            "To": leg.to_number.lstrip("+"),
        }
        headers = {"User-Agent": "PlivoHTTP"}
        if token is not None:
            headers |= sign_plivo(token, "POST", leg.public_url + path, params)
    return path, params, headers


Violation = Callable[[str, str], None]  # (reason, offending text): recorded, the call goes on


def twilio_stream(root: ET.Element, public_url: str, violation: Violation) -> tuple[str, dict[str, str]] | None:
    """The `<Connect><Stream>` url and its `<Parameter>`s, or None if the TwiML starts no stream."""
    stream = root.find("Connect/Stream")
    if stream is None:
        if root.find("Start/Stream") is not None:
            violation("<Start><Stream> is one-way; a bidirectional stream needs <Connect>", "")
        return None
    url = stream.get("url", "")
    if not urlsplit(url).scheme:
        # A relative url is resolved against the webhook's URL, over wss (§1.4).
        parts = urlsplit(urljoin(public_url + "/twilio/voice", url))
        url = urlunsplit(("wss" if parts.scheme == "https" else "ws", *parts[1:]))
    if urlsplit(url).query:
        violation("<Stream url> has a query string (handshake fails, 31920)", url)
    if stream.get("track", "inbound_track") != "inbound_track":
        violation("<Connect><Stream> only allows track=inbound_track (31941)", url)
    return url, {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}


def plivo_stream(root: ET.Element, violation: Violation) -> tuple[str, str] | None:
    """The `<Stream>` url and its extraHeaders, or None if the XML starts no stream."""
    stream = root.find("Stream")
    if stream is None:
        return None
    url = (stream.text or "").strip()
    if stream.get("bidirectional") != "true":
        violation('<Stream> without bidirectional="true": playAudio is not allowed', url)
    if stream.get("audioTrack", "inbound") != "inbound":
        violation("a bidirectional <Stream> must use audioTrack=inbound", url)
    if stream.get("contentType") != _PLIVO_CONTENT_TYPE:
        # The XML reference's default is L16, so anything else means we would not get mu-law (§2.4).
        violation(f"<Stream contentType={stream.get('contentType')!r}>: not mu-law/8000", url)
    if stream.get("keepCallAlive") != "true":
        violation('<Stream> without keepCallAlive="true": Plivo runs the next element at once', url)
    if len(url) > 2048:
        violation("stream URL longer than 2048 characters", url)
    return url, stream.get("extraHeaders", "")


def public_ws(public_url: str) -> str:
    parts = urlsplit(public_url)
    return urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path, "", ""))


def http_form(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    return urlunsplit(("https" if parts.scheme == "wss" else "http", *parts[1:]))


def loopback(public_url: str, server: str, stream_url: str, violation: Violation) -> str | None:
    """Map the public stream URL onto the loopback server, as the proxy in front of the app would; None if
    the URL is not under PUBLIC_URL."""
    public = urlsplit(public_ws(public_url))
    target = urlsplit(stream_url)
    prefix = public.path.rstrip("/")
    if public.scheme == "wss" and target.scheme != "wss":
        violation("stream URL is not wss:// (Twilio and Plivo need TLS on 443)", stream_url)
    if target.netloc.lower() != public.netloc.lower() or not target.path.startswith(prefix + "/"):
        return None
    loop = urlsplit(server)
    scheme = "wss" if loop.scheme == "https" else "ws"
    path = loop.path.rstrip("/") + target.path[len(prefix) :]
    return urlunsplit((scheme, loop.netloc, path, target.query, ""))


def upgrade_headers(leg: Leg, token: str | None, key_id: str | None, stream_url: str) -> dict[str, str]:
    """The signature on the WebSocket upgrade (none without a token)."""
    if token is None:
        return {}
    if leg.provider == "twilio":
        return sign_twilio_upgrade(token, stream_url, key_id=key_id)
    # Plivo signs the upgrade as a GET; which URL form is UNVERIFIED (§2.5). We sign the
    # https:// form of the public stream URL, as plivo-stream-sdk-node rebuilds it.
    return sign_plivo(token, "GET", http_form(stream_url))
