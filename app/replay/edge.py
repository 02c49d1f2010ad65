"""The replay's provider edge: acknowledgements generated from what the build under test sends.

A recording's caller leg is replayed as it was, except the provider's acknowledgements (Twilio `mark` echoes,
Plivo `playedStream` / `clearedAudio`): those answered what the *recorded* build sent. A build that speaks
differently (a longer sentence, a clear 40 ms earlier) must get the acknowledgements the real edge would give
*it*, or the replay would tell it that audio played which it never sent. So `ReplayEdge` watches the frames the
server writes and plays them out on the exact playout model of app/edge/playout.py:

- a mark / checkpoint is acknowledged once the audio queued before it has played at 8,000 samples/s;
- Twilio `clear` empties the buffer and echoes every pending mark at once; Plivo `clearAudio` empties it,
  answers `clearedAudio`, and never acknowledges the cut checkpoints (docs/reference telephony-protocols §2.3).

Every acknowledgement reaches the server `latency_s` after the edge produced it. The latency is estimated
from the recording itself (`estimate_latency`): the recorded server frames are played through the same model
at their recorded times, and the median of (recorded ack arrival - modelled ack time) over every ack is the
round trip the recorded edge added (network both ways, the edge's own scheduling). A recording with no ack
(no agent audio) gets 0.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Callable, Iterable
from typing import Any, Literal

from app.edge.playout import MarkRecord, Playout
from app.edge.wire import Audio, Clear, Marker, plivo_command, twilio_command

Provider = Literal["twilio", "plivo"]

# The inbound frames that answer the server, rather than come from the caller.
ACK_EVENTS: dict[str, frozenset[str]] = {
    "twilio": frozenset({"mark"}),
    "plivo": frozenset({"playedStream", "clearedAudio"}),
}


def frame_event(text: str) -> str | None:
    """The `event` of a provider frame, or None if it is not a JSON object with one."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    event = obj.get("event") if isinstance(obj, dict) else None
    return event if isinstance(event, str) else None


def is_ack(provider: str, text: str) -> bool:
    events = ACK_EVENTS.get(provider, frozenset())
    # Most frames are caller audio: parse only a frame that names an ack event somewhere.
    if not any(name in text for name in events):
        return False
    return frame_event(text) in events


def ack_text(provider: str, stream_id: str, name: str) -> str:
    if provider == "twilio":
        obj: dict[str, Any] = {"event": "mark", "streamSid": stream_id, "mark": {"name": name}}
    else:
        obj = {"event": "playedStream", "streamId": stream_id, "name": name}
    return json.dumps(obj, separators=(",", ":"))


def cleared_text(stream_id: str) -> str:
    return json.dumps({"event": "clearedAudio", "streamId": stream_id}, separators=(",", ":"))


class EdgeModel:
    """The edge's reaction to server frames, synchronous: `server_frame(now, text)` -> acks due (time, text).

    `take_due(now)` returns the acks of marks whose audio finished playing by `now`; `next_due()` says when
    the next one will.
    """

    def __init__(self, provider: str, stream_id: str, *, keep_audio: bool = False) -> None:
        self.provider = provider
        self.stream_id = stream_id
        self.playout = Playout(keep_audio=keep_audio)
        self.clears: list[float] = []

    def _command(self, text: str) -> object:
        try:
            obj = json.loads(text)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        if self.provider == "twilio":
            return twilio_command(obj, self.stream_id)
        return plivo_command(obj, self.stream_id)

    def server_frame(self, now: float, text: str) -> list[tuple[float, str]]:
        """What the edge answers to one server frame (acks with the time the edge sends them)."""
        command = self._command(text)
        out: list[tuple[float, str]] = []
        match command:
            case Audio(data=data):
                self.playout.audio(now, data)
                out += self._acks(self.playout.take_due(now))
            case Marker(name=name):
                out += self._acks(self.playout.marker(now, MarkRecord(name, now, self.playout.received)))
            case Clear():
                self.clears.append(now)
                due, cut = self.playout.clear(now)
                out += self._acks(due)
                if self.provider == "twilio":
                    out += [(now, ack_text(self.provider, self.stream_id, m.name)) for m in cut]
                else:
                    out.append((now, cleared_text(self.stream_id)))
            case _:
                pass  # sendDTMF, or something the real edge would refuse: no answer either way
        return out

    def take_due(self, now: float) -> list[tuple[float, str]]:
        return self._acks(self.playout.take_due(now))

    def next_due(self) -> float | None:
        return self.playout.next_due()

    def _acks(self, marks: Iterable[MarkRecord]) -> list[tuple[float, str]]:
        out = []
        for mark in marks:
            at = mark.played_at if mark.played_at is not None else mark.received_at
            out.append((at, ack_text(self.provider, self.stream_id, mark.name)))
        return out


def estimate_latency(provider: str, stream_id: str, lines: list[dict[str, Any]]) -> float:
    """The recorded edge's ack delay (seconds): median of recorded ack time - modelled ack time."""
    model = EdgeModel(provider, stream_id)
    predicted: dict[str, list[float]] = {}

    def note(acks: list[tuple[float, str]]) -> None:
        for at, text in acks:
            predicted.setdefault(_ack_key(text), []).append(at)

    observed: list[tuple[str, float]] = []
    for line in lines:
        kind, t = line.get("type"), float(line.get("t", 0.0))
        if kind in ("ws_out", "ws_in"):
            note(model.take_due(t))
        if kind == "ws_out":
            note(model.server_frame(t, str(line.get("text", ""))))
        elif kind == "ws_in" and is_ack(provider, str(line.get("text", ""))):
            observed.append((_ack_key(str(line["text"])), t))
    deltas = []
    for key, t in observed:
        times = predicted.get(key)
        if times:
            deltas.append(t - times.pop(0))
    if not deltas:
        return 0.0
    return max(0.0, statistics.median(deltas))


def _ack_key(text: str) -> str:
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    if not isinstance(obj, dict):
        return text
    if obj.get("event") == "clearedAudio":
        return "clearedAudio"
    mark = obj.get("mark")
    name = mark.get("name") if isinstance(mark, dict) else obj.get("name")
    return f"mark:{name}"


class ReplayEdge:
    """EdgeModel on a running loop: acks are delivered to `deliver(text)` at their time plus `latency_s`."""

    def __init__(self, model: EdgeModel, latency_s: float, deliver: Callable[[str], None]) -> None:
        self.model = model
        self.latency_s = latency_s
        self._deliver = deliver
        self._timer: asyncio.TimerHandle | None = None
        self.acks_sent = 0
        self.closed = False

    def server_frame(self, text: str) -> None:
        loop = asyncio.get_running_loop()
        self._send(self.model.server_frame(loop.time(), text))
        self._arm()

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()

    def _send(self, acks: list[tuple[float, str]]) -> None:
        loop = asyncio.get_running_loop()
        for at, text in acks:
            loop.call_at(max(at + self.latency_s, loop.time()), self._emit, text)

    def _emit(self, text: str) -> None:
        if not self.closed:
            self.acks_sent += 1
            self._deliver(text)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self.model.next_due()
        if due is None or self.closed:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(max(due, loop.time()), self._wake)

    def _wake(self) -> None:
        self._timer = None
        self._send(self.model.take_due(asyncio.get_running_loop().time()))
        self._arm()
