"""Sans-I/O adapters for the providers' media-stream WebSockets, chosen by name from PROTOCOLS."""

from __future__ import annotations

from providers.telephony.base import TelephonyProtocol
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

# Annotated with the Protocol so mypy checks that both adapters conform to it.
PROTOCOLS: dict[str, type[TelephonyProtocol]] = {"twilio": TwilioProtocol, "plivo": PlivoProtocol}

__all__ = [
    "PROTOCOLS",
    "AudioCleared",
    "AudioReceived",
    "CallEnded",
    "CallStarted",
    "DtmfReceived",
    "InvalidMessage",
    "MarkPlayed",
    "PlivoProtocol",
    "StreamConnected",
    "TelephonyEvent",
    "TelephonyProtocol",
    "TwilioProtocol",
    "UnknownEvent",
]
