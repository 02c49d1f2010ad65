"""A synthetic caller leg: the provider frames a caller's edge would send, built without a server.

`synthetic_leg` lays out `connected` (Twilio), `start`, one `media` frame every 20 ms and a final `stop`, the
way app/edge/emulator.py sends them over a real socket (same builders, app/edge/wire.py): frame k covers
[t - 20 ms, t] and is sent at t. Payloads are silence here; a scenario fills them in when each is sent
(`render_media`), because what the caller sends may depend on what the agent did (the agent's own audio
leaking back as echo).
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from dataclasses import dataclass, field

from app.edge import wire
from app.edge.caller import FRAME_SAMPLES, ULAW_SILENCE
from app.edge.wire import Provider
from app.replay.runner import CallLeg, StreamLeg

FRAME_S = 0.02


@dataclass(slots=True)
class SyntheticLeg:
    """Satisfies app/edge/wire.py's Leg: the ids and numbers of one emulated call."""

    provider: Provider
    call_id: str
    stream_id: str
    account_id: str
    public_url: str = "http://127.0.0.1"
    from_number: str = "+14155550100"
    to_number: str = "+14155550199"
    custom_parameters: dict[str, str] = field(default_factory=dict)
    extra_headers: str = ""

    @classmethod
    def new(cls, provider: Provider, seed: str = "") -> SyntheticLeg:
        if seed:  # stable ids: a fixture made twice gives the same bytes
            import hashlib

            h = hashlib.sha256(seed.encode()).hexdigest()
            if provider == "twilio":
                return cls(provider, "CA" + h[:32], "MZ" + h[32:64], "AC" + h[:32][::-1])
            return cls(provider, str(uuid.UUID(h[:32])), str(uuid.UUID(h[32:64])), "MA" + h[:18].upper())
        if provider == "twilio":
            return cls(provider, "CA" + secrets.token_hex(16), "MZ" + secrets.token_hex(16),
                       "AC" + secrets.token_hex(16))
        return cls(provider, str(uuid.uuid4()), str(uuid.uuid4()), "MA" + secrets.token_hex(9).upper())


def _dumps(obj: dict[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"))


SILENT_FRAME = bytes([ULAW_SILENCE]) * FRAME_SAMPLES


def synthetic_leg(ids: SyntheticLeg, seconds: float, *, start_at: float = 0.01, started_at: float = 1.7e9,
                  hangup: bool = True) -> CallLeg:
    """`seconds` of silent caller frames after `start`, then `stop` (or the socket closing, `hangup=False`)."""
    frames: list[tuple[float, str]] = []
    seq = 0

    def numbered(obj: dict[str, object]) -> str:
        nonlocal seq
        seq += 1
        obj["sequenceNumber"] = str(seq) if ids.provider == "twilio" else seq
        return _dumps(obj)

    if ids.provider == "twilio":
        frames.append((start_at * 0.5, _dumps(wire.twilio_connected())))
    frames.append((start_at, numbered(wire.start_message(ids))))
    epoch_ms = started_at * 1000.0
    n = round(seconds / FRAME_S)
    for k in range(1, n + 1):
        ts_ms = k * FRAME_S * 1000.0
        frames.append((round(start_at + k * FRAME_S, 6),
                       numbered(wire.media_message(ids, k, ts_ms, epoch_ms, SILENT_FRAME))))
    end = round(start_at + (n + 1) * FRAME_S, 6)
    if hangup:
        frames.append((end, numbered(wire.stop_message(ids))))
    stream = StreamLeg(ids.stream_id, 0.0, frames, None if hangup else end)
    return CallLeg(ids.provider, ids.call_id, started_at, [stream])


def media_payload(text: str) -> bytes | None:
    """The audio of a media frame (None for any other frame)."""
    obj = json.loads(text)
    if obj.get("event") != "media":
        return None
    return base64.b64decode(obj["media"]["payload"])


def with_payload(text: str, payload: bytes) -> str:
    """The same media frame carrying `payload` instead."""
    obj = json.loads(text)
    obj["media"]["payload"] = base64.b64encode(payload).decode("ascii")
    return _dumps(obj)
