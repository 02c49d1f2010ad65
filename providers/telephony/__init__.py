"""Sans-I/O adapters for the providers' media-stream WebSockets, chosen by name from PROTOCOLS."""

from __future__ import annotations

from providers.telephony.base import DEFAULT_MAX_PAYLOAD_BYTES, ProtocolFactory, TelephonyProtocol
from providers.telephony.events import (
    AudioCleared,
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
from providers.telephony.plivo import PlivoProtocol
from providers.telephony.twilio import TwilioProtocol

# Annotated with the factory Protocol so mypy checks that both adapters conform to TelephonyProtocol and take
# the payload cap: `PROTOCOLS[name](max_payload_bytes=settings.media_max_payload_bytes)`.
PROTOCOLS: dict[str, ProtocolFactory] = {"twilio": TwilioProtocol, "plivo": PlivoProtocol}

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "PROTOCOLS",
    "AudioCleared",
    "AudioReceived",
    "CallEnded",
    "CallStarted",
    "DtmfReceived",
    "InvalidMessage",
    "MarkPlayed",
    "PlivoProtocol",
    "ProtocolFactory",
    "StreamConnected",
    "TelephonyEvent",
    "TelephonyProtocol",
    "TwilioProtocol",
    "UnknownEvent",
]
