"""Typed events parsed from the providers' media-stream frames (one vocabulary for Twilio and Plivo)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StreamConnected:
    """Twilio's first frame (`connected`); Plivo has none."""


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The stream started: ids, audio format, custom parameters (Twilio <Parameter>, Plivo extraHeaders)."""

    call_id: str
    stream_id: str
    account_id: str
    encoding: str
    sample_rate: int
    custom: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AudioReceived:
    """One inbound caller frame: raw mu-law bytes (one byte per sample, any length)."""

    payload: bytes
    chunk: int | None
    timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """Twilio `mark` echo or Plivo `playedStream`: the audio before the marker played (or, on Twilio,
    was cleared)."""

    name: str


@dataclass(frozen=True, slots=True)
class AudioCleared:
    """Plivo `clearedAudio`: the provider emptied its playback queue."""


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    digit: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    """`stop`: the stream or the call ended."""


@dataclass(frozen=True, slots=True)
class InvalidMessage:
    """A frame we could not use (bad JSON, bad base64, missing fields, wrong stream, media before start)."""

    reason: str
    raw: str


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """Well-formed JSON with an event name we do not handle."""

    event: str
    raw: str


TelephonyEvent = (
    StreamConnected
    | CallStarted
    | AudioReceived
    | MarkPlayed
    | AudioCleared
    | DtmfReceived
    | CallEnded
    | InvalidMessage
    | UnknownEvent
)
