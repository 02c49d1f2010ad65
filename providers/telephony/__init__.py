"""Sans-I/O adapters for the providers' media-stream WebSockets, chosen by name from PROTOCOLS."""

from __future__ import annotations

from providers.telephony.base import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    BinaryProtocolFactory,
    BinaryTelephonyProtocol,
    ProtocolFactory,
    TelephonyProtocol,
)
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
from providers.telephony.pcm import PcmProtocol
from providers.telephony.plivo import PlivoProtocol
from providers.telephony.twilio import TwilioProtocol

# Annotated with the factory Protocol so mypy checks that both adapters conform to TelephonyProtocol and take
# the payload cap: `PROTOCOLS[name](max_payload_bytes=settings.media_max_payload_bytes)`.
PROTOCOLS: dict[str, ProtocolFactory] = {"twilio": TwilioProtocol, "plivo": PlivoProtocol}
# Adapters whose audio travels in binary frames, served by their own route (app/routes/pcm.py): kept apart from
# PROTOCOLS, whose adapters the carrier route drives with text frames only.
BINARY_PROTOCOLS: dict[str, BinaryProtocolFactory] = {"pcm": PcmProtocol}

__all__ = [
    "BINARY_PROTOCOLS",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "PROTOCOLS",
    "AudioCleared",
    "AudioReceived",
    "BinaryProtocolFactory",
    "BinaryTelephonyProtocol",
    "CallEnded",
    "CallStarted",
    "DtmfReceived",
    "InvalidMessage",
    "MarkPlayed",
    "PcmProtocol",
    "PlivoProtocol",
    "ProtocolFactory",
    "StreamConnected",
    "TelephonyEvent",
    "TelephonyProtocol",
    "TwilioProtocol",
    "UnknownEvent",
]
