"""Twilio Media Streams (bidirectional, `<Connect><Stream>`): connected/start/media/dtmf/mark/stop in;
media/mark/clear out. Wire reference: https://www.twilio.com/docs/voice/media-streams/websocket-messages
"""

from __future__ import annotations

import json
from binascii import b2a_base64
from typing import Any, Final

from providers.telephony.base import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    FrameError,
    decode_payload,
    describe,
    dtmf_digit,
    media_format,
    optional_int,
    optional_str,
    require_object,
    require_str,
    split_frame,
    string_map,
)
from providers.telephony.events import (
    AudioReceived,
    CallEnded,
    CallStarted,
    DtmfReceived,
    InvalidMessage,
    MarkPlayed,
    StreamConnected,
    TelephonyEvent,
    UnknownEvent,
)


class TwilioProtocol:
    """Codec for one Twilio Media Streams WebSocket."""

    name: Final = "twilio"
    # On `clear`, Twilio empties its buffer and echoes a `mark` for every mark still pending; the echo looks
    # exactly like a played one [TW-WS].
    acks_cleared_marks: Final = True

    __slots__ = ("stream_id", "call_id", "max_payload_bytes", "_media_head", "_mark_head", "_clear")

    def __init__(self, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        if max_payload_bytes < 1:
            raise ValueError("max_payload_bytes must be positive")
        self.max_payload_bytes = max_payload_bytes  # larger inbound media is refused undecoded
        self.stream_id: str | None = None
        self.call_id: str | None = None
        # Outbound frames are assembled from these prefixes, fixed at `start`: it is several times faster
        # than json.dumps on the hot path and the output is the same compact JSON.
        self._media_head = ""
        self._mark_head = ""
        self._clear = ""

    # --- inbound ------------------------------------------------------------------------------------------

    def receive(self, text: str) -> list[TelephonyEvent]:
        """Parse one frame from Twilio. Never raises on bad input."""
        frame = split_frame(text)
        if isinstance(frame, InvalidMessage):
            return [frame]
        event, msg = frame
        try:
            match event:
                case "media":  # first: 50 a second, everything else is rare
                    return [self._on_media(msg)]
                case "mark":
                    self._check_stream(msg, event)
                    mark = require_object(msg, "mark", "mark")
                    name = mark.get("name")
                    if not isinstance(name, str):
                        raise FrameError("mark.name missing or not a string")
                    return [MarkPlayed(name)]
                case "dtmf":
                    self._check_stream(msg, event)
                    return [DtmfReceived(dtmf_digit(require_object(msg, "dtmf", "dtmf")))]
                case "start":
                    return [self._on_start(msg)]
                case "connected":
                    # Always the first frame and it carries no streamSid [TW-WS]; after `start` it can only
                    # be a confused peer.
                    if self.stream_id is not None:
                        raise FrameError("connected after start")
                    return [StreamConnected()]
                case "stop":
                    self._check_stream(msg, event)
                    return [CallEnded()]
                case _:
                    return [UnknownEvent(event, text)]
        except FrameError as exc:
            return [InvalidMessage(str(exc), text)]

    def _check_stream(self, msg: dict[str, Any], event: str) -> None:
        if self.stream_id is None:
            raise FrameError(f"{event} before start")
        sid = msg.get("streamSid")
        # Twilio itself puts the top-level streamSid on every frame after `connected` [TW-WS], but some
        # third-party Media Streams clients (browser emulators) leave it out. A socket carries exactly one
        # stream, so a frame that names no stream can only be this one's: only a frame that NAMES another
        # stream (any other value, including a non-string or "") is foreign and refused.
        if sid is not None and sid != self.stream_id:
            raise FrameError(
                f"frame for another stream: streamSid {describe(sid)}, started {self.stream_id!r}"
            )

    def _on_media(self, msg: dict[str, Any]) -> AudioReceived:
        self._check_stream(msg, "media")
        media = require_object(msg, "media", "media")
        track = media.get("track")
        # `<Connect><Stream>` only streams the caller's leg [TW-STREAM]; treat anything else as a fault rather
        # than feed our own voice to the VAD. An absent track is taken as inbound, and so is "inbound_track",
        # the spelling of the same leg in `<Stream track>` and in dtmf.track [TW-STREAM][TW-WS], which
        # third-party clients copy onto media.
        if track is not None and track not in ("inbound", "inbound_track"):
            raise FrameError(f"media.track {describe(track)} is not inbound")
        return AudioReceived(
            decode_payload(media.get("payload"), "media.payload", self.max_payload_bytes),
            optional_int(media.get("chunk"), "media.chunk"),
            optional_int(media.get("timestamp"), "media.timestamp"),
        )

    def _on_start(self, msg: dict[str, Any]) -> CallStarted:
        if self.stream_id is not None:
            # One stream per WebSocket [TW-WS]; a reconnect arrives on a new socket with a new adapter.
            raise FrameError("start after the stream already started")
        start = require_object(msg, "start", "start")
        stream_id = require_str(start, "streamSid", "start.streamSid")
        call_id = require_str(start, "callSid", "start.callSid")
        account_id = optional_str(start, "accountSid", "start.accountSid") or ""
        top = msg.get("streamSid")
        if top is not None and top != stream_id:
            raise FrameError(f"start: streamSid {describe(top)} differs from start.streamSid {stream_id!r}")
        fmt = start.get("mediaFormat")
        if fmt is None:
            fmt = {}
        elif not isinstance(fmt, dict):
            raise FrameError("start.mediaFormat is not an object")
        # Twilio always streams audio/x-mulaw at 8000 Hz [TW-WS], so an absent format means that one.
        encoding, sample_rate = media_format(fmt, "start.mediaFormat", "audio/x-mulaw")
        custom = string_map(start.get("customParameters"), "start.customParameters")

        self.stream_id = stream_id
        self.call_id = call_id
        sid = json.dumps(stream_id)
        self._media_head = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._mark_head = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":'
        self._clear = '{"event":"clear","streamSid":' + sid + "}"
        return CallStarted(call_id, stream_id, account_id, encoding, sample_rate, custom)

    # --- outbound -----------------------------------------------------------------------------------------
    # Twilio accepts only media, mark and clear, with exactly the documented fields: invalid JSON, extra
    # fields or a wrong streamSid draw warning 31951 and can raise error 31924 [TW-ERR-31951][TW-ERR-31924].

    def media(self, payload: bytes) -> str:
        """`media` frame: raw mu-law/8000, no file header (header bytes play as noise) [TW-WS]. Any size."""
        if not self._media_head:
            raise RuntimeError("twilio: cannot send media before start (no streamSid yet)")
        # base64 never needs JSON escaping, so it goes between the quotes as is.
        return self._media_head + b2a_base64(payload, newline=False).decode("ascii") + '"}}'

    def mark(self, name: str) -> str:
        """`mark` frame: Twilio echoes it once the audio queued before it has played, or when cleared."""
        if not self._mark_head:
            raise RuntimeError("twilio: cannot send a mark before start (no streamSid yet)")
        return self._mark_head + json.dumps(name) + "}}"

    def clear(self) -> str:
        """`clear` frame: drops Twilio's buffered audio; every pending mark is then echoed [TW-WS]."""
        if not self._clear:
            raise RuntimeError("twilio: cannot send clear before start (no streamSid yet)")
        return self._clear
