"""What the caller heard, and what the caller said, rebuilt from a recording's wire frames. Pure functions.

The agent's side follows the providers' playback model: the edge plays the audio it is sent in order, at
8,000 samples a second; a chunk starts when the one before it ends or when it arrives, whichever is later
(Twilio plays `media` messages back to back [TW-WS]; Plivo queues `playAudio` [PL-REF]); a clear (Twilio
`clear`, Plivo `clearAudio`) stops the chunk playing at that instant and drops everything queued behind it.
The end of a stream (the `call_end` event, or a `stream` line starting the next one) drops the queue too.
Times are the recording's `t` (seconds since the stream opened), taken as when the edge got the frame: the
loopback or network delay between the two is not in the file.

The caller's side: each inbound media frame's audio ends at its arrival (a provider sends a frame once its
20 ms are captured), except that it never overlaps the frame before it (a burst after a network stall is laid
out back to back, as it was spoken) and that a gap shorter than half a frame is arrival jitter, not missing
audio: the frame follows the one before it directly, so the caller's audio comes out sample for sample.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SAMPLE_RATE = 8000
_MEDIA_OUT = {"media", "playAudio"}  # Twilio, Plivo
_CLEAR_OUT = {"clear", "clearAudio"}


@dataclass(frozen=True, slots=True)
class HeardChunk:
    """One outbound media message as the caller heard it: [start_s, end_s) of its first `len(ulaw)` samples.

    `sent_s` is when the server wrote it; `cut` says a clear (or the stream's end) stopped it early, and then
    `ulaw` holds only the part that played. A chunk dropped whole before it started is not listed.
    """

    sent_s: float
    start_s: float
    end_s: float
    ulaw: bytes
    cut: bool


@dataclass(frozen=True, slots=True)
class CallerFrame:
    """One inbound media frame placed on the call's timeline: its audio spans [start_s, start_s + len/8000)."""

    arrived_s: float
    start_s: float
    ulaw: bytes


def _frame(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return msg if isinstance(msg, dict) else None


def _payload(msg: dict[str, Any]) -> bytes:
    media = msg.get("media")
    payload = media.get("payload") if isinstance(media, dict) else None
    if not isinstance(payload, str) or not payload:
        return b""
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return b""


def agent_heard(lines: Iterable[dict[str, Any]]) -> list[HeardChunk]:
    """The agent's audio as the caller heard it, chunk by chunk, in order (see the module docstring)."""
    heard: list[HeardChunk] = []
    queue: list[tuple[float, float, bytes]] = []  # (sent, start, ulaw) scheduled but maybe not yet played
    busy_until = 0.0

    def cut_at(t: float) -> None:
        nonlocal busy_until
        for sent, start, ulaw in queue:
            end = start + len(ulaw) / SAMPLE_RATE
            if end <= t:
                heard.append(HeardChunk(sent, start, end, ulaw, False))
            elif start < t:
                played = ulaw[: int((t - start) * SAMPLE_RATE)]
                heard.append(HeardChunk(sent, start, start + len(played) / SAMPLE_RATE, played, True))
        queue.clear()
        busy_until = t

    for line in lines:
        kind = line.get("type")
        t = float(line.get("t", 0.0))
        if kind == "ws_out":
            msg = _frame(line.get("text"))
            if msg is None:
                continue
            event = msg.get("event")
            if event in _MEDIA_OUT:
                ulaw = _payload(msg)
                if ulaw:
                    start = max(t, busy_until)
                    queue.append((t, start, ulaw))
                    busy_until = start + len(ulaw) / SAMPLE_RATE
            elif event in _CLEAR_OUT:
                cut_at(t)
        elif kind in ("call_end", "stream"):
            cut_at(t)
    cut_at(float("inf"))
    return heard


def caller_said(lines: Iterable[dict[str, Any]]) -> list[CallerFrame]:
    """The caller's audio frames on the call's timeline (see the module docstring)."""
    frames: list[CallerFrame] = []
    busy_until = float("-inf")
    for line in lines:
        kind = line.get("type")
        if kind == "stream":
            busy_until = float("-inf")
            continue
        if kind != "ws_in":
            continue
        msg = _frame(line.get("text"))
        if msg is None or msg.get("event") != "media":
            continue
        ulaw = _payload(msg)
        if not ulaw:
            continue
        t = float(line.get("t", 0.0))
        duration = len(ulaw) / SAMPLE_RATE
        start = t - duration
        if start - busy_until < duration / 2:
            start = busy_until  # back to back: jitter (or a burst), not a gap
        start = max(start, 0.0)
        frames.append(CallerFrame(t, start, ulaw))
        busy_until = start + duration
    return frames
