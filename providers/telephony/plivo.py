"""Plivo Audio Streams (`<Stream bidirectional="true">`): start/media/dtmf/playedStream/clearedAudio/stop in;
playAudio/checkpoint/clearAudio out.
Wire reference: https://plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-reference
"""

from __future__ import annotations

import json
import re
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
    AudioCleared,
    AudioReceived,
    CallEnded,
    CallStarted,
    DtmfReceived,
    InvalidMessage,
    MarkPlayed,
    TelephonyEvent,
    UnknownEvent,
)

_PAIR_SEPARATORS = re.compile(r"[;,]")


def parse_extra_headers(value: object) -> dict[str, str]:
    """Plivo's `extra_headers` as a dict.

    The sources disagree on the form: `<Stream extraHeaders>` is documented as "test1=12,test2=123"
    [PL-XML], the guide shows "k=v;k=v" [PL-GUIDE] and the Python stream SDK types it as a JSON string
    [plivo-stream-py]. Accept all three (and an already-decoded object). A bare name maps to "".
    """
    if value is None:
        return {}
    if isinstance(value, dict):
        return string_map(value, "extra_headers")
    if not isinstance(value, str):
        raise FrameError(f"extra_headers is a {type(value).__name__}, not a string or object")
    text = value.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            raise FrameError("extra_headers looks like JSON but does not parse") from None
        return string_map(obj, "extra_headers")
    pairs: dict[str, str] = {}
    for item in _PAIR_SEPARATORS.split(text):
        key, _, val = item.partition("=")
        key = key.strip()
        if key:
            pairs[key] = val.strip()
        elif val.strip():
            # No value in the reason: reasons get logged and these values carry per-call tokens.
            raise FrameError("extra_headers has a value with no name")
    return pairs


class PlivoProtocol:
    """Codec for one Plivo Audio Streams WebSocket."""

    name: Final = "plivo"
    # Plivo sends playedStream only once the audio before a checkpoint has played successfully [PL-CP];
    # checkpoints cut by clearAudio are (by that rule, and per the Vobiz clone's docs) never acknowledged.
    acks_cleared_marks: Final = False

    __slots__ = ("stream_id", "call_id", "max_payload_bytes", "_media_head", "_mark_head", "_clear")

    def __init__(self, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        if max_payload_bytes < 1:
            raise ValueError("max_payload_bytes must be positive")
        self.max_payload_bytes = max_payload_bytes  # larger inbound media is refused undecoded
        self.stream_id: str | None = None
        self.call_id: str | None = None
        # Prefixes of outbound frames, fixed at `start` (see TwilioProtocol: faster than json.dumps).
        self._media_head = ""
        self._mark_head = ""
        self._clear = ""

    # --- inbound ------------------------------------------------------------------------------------------

    def receive(self, text: str) -> list[TelephonyEvent]:
        """Parse one frame from Plivo. Never raises on bad input."""
        frame = split_frame(text)
        if isinstance(frame, InvalidMessage):
            return [frame]
        event, msg = frame
        try:
            match event:
                case "media":  # first: 50 a second, everything else is rare
                    return [self._on_media(msg)]
                case "playedStream":
                    # `name` is top-level, not nested as in Twilio's mark [PL-CP].
                    self._check_stream(msg, event)
                    name = msg.get("name")
                    if not isinstance(name, str):
                        raise FrameError("playedStream.name missing or not a string")
                    return [MarkPlayed(name)]
                case "clearedAudio":
                    self._check_stream(msg, event)
                    return [AudioCleared()]
                case "dtmf":
                    self._check_stream(msg, event)
                    return [DtmfReceived(dtmf_digit(require_object(msg, "dtmf", "dtmf")))]
                case "start":
                    return [self._on_start(msg)]
                case "stop":
                    # Not in the protocol reference, but Plivo's own examples handle {"event":"stop"} and it
                    # is seen in practice [plivo-ex]; the socket close stays the authoritative end.
                    self._check_stream(msg, event)
                    return [CallEnded()]
                case _:
                    return [UnknownEvent(event, text)]
        except FrameError as exc:
            return [InvalidMessage(str(exc), text)]

    def _check_stream(self, msg: dict[str, Any], event: str) -> None:
        if self.stream_id is None:
            raise FrameError(f"{event} before start")
        sid = msg.get("streamId")
        # A Plivo frame may lack streamId (the undocumented stop often does, and so do third-party clients of
        # the protocol): one stream per socket, so only a frame that names a different stream is refused, the
        # same rule as TwilioProtocol.
        if sid is not None and sid != self.stream_id:
            raise FrameError(
                f"frame for another stream: streamId {describe(sid)}, started {self.stream_id!r}"
            )

    def _on_media(self, msg: dict[str, Any]) -> AudioReceived:
        self._check_stream(msg, "media")
        media = require_object(msg, "media", "media")
        track = media.get("track")
        # Bidirectional streams must use audioTrack="inbound" [PL-XML]: anything else is not the caller.
        if track is not None and track != "inbound":
            raise FrameError(f"media.track {describe(track)} is not inbound")
        return AudioReceived(
            decode_payload(media.get("payload"), "media.payload", self.max_payload_bytes),
            optional_int(media.get("chunk"), "media.chunk"),
            # A string in the docs; "Unix ms" per [PL-REF] but "ms from stream start" per [plivo-stream-py].
            optional_int(media.get("timestamp"), "media.timestamp"),
        )

    def _on_start(self, msg: dict[str, Any]) -> CallStarted:
        if self.stream_id is not None:
            raise FrameError("start after the stream already started")  # one stream per call [PL-GUIDE]
        start = require_object(msg, "start", "start")
        stream_id = require_str(start, "streamId", "start.streamId")
        call_id = require_str(start, "callId", "start.callId")
        account_id = optional_str(start, "accountId", "start.accountId") or ""
        top = msg.get("streamId")
        if top is not None and top != stream_id:
            raise FrameError(f"start: streamId {describe(top)} differs from start.streamId {stream_id!r}")
        # The format follows <Stream contentType>, whose default differs between Plivo's own pages
        # [PL-XML][PL-GUIDE]: never guess it, or L16 would be decoded as mu-law.
        encoding, sample_rate = media_format(
            require_object(start, "mediaFormat", "start.mediaFormat"), "start.mediaFormat", None
        )
        custom = parse_extra_headers(msg.get("extra_headers"))

        self.stream_id = stream_id
        self.call_id = call_id
        sid = json.dumps(stream_id)
        # playAudio must match the <Stream contentType> [PL-REF]; we always ask for mu-law/8000, and the
        # session is expected to refuse a CallStarted with any other encoding.
        self._media_head = (
            '{"event":"playAudio","streamId":'
            + sid
            + ',"media":{"contentType":"audio/x-mulaw","sampleRate":8000,"payload":"'
        )
        self._mark_head = '{"event":"checkpoint","streamId":' + sid + ',"name":'
        self._clear = '{"event":"clearAudio","streamId":' + sid + "}"
        return CallStarted(call_id, stream_id, account_id, encoding, sample_rate, custom)

    # --- outbound -----------------------------------------------------------------------------------------
    # Plivo caps a WebSocket message at 64 KB and recommends base64 chunks of 16 KB or less [PL-GUIDE]:
    # splitting audio is the caller's job (20 ms frames are 216 base64 characters).

    def media(self, payload: bytes) -> str:
        """`playAudio` frame with raw mu-law/8000. The reference schema omits streamId; we send it, as
        pipecat does, so the frame is addressed like the other two."""
        if not self._media_head:
            raise RuntimeError("plivo: cannot send playAudio before start (no streamId yet)")
        return self._media_head + b2a_base64(payload, newline=False).decode("ascii") + '"}}'

    def mark(self, name: str) -> str:
        """`checkpoint` frame: Plivo answers `playedStream` with the same name once the audio before it has
        played [PL-CP], and never if that audio is cleared."""
        if not self._mark_head:
            raise RuntimeError("plivo: cannot send a checkpoint before start (no streamId yet)")
        return self._mark_head + json.dumps(name) + "}"

    def clear(self) -> str:
        """`clearAudio` frame: Plivo empties its playback queue and answers `clearedAudio` [PL-CLR]."""
        if not self._clear:
            raise RuntimeError("plivo: cannot send clearAudio before start (no streamId yet)")
        return self._clear
