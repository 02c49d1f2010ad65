"""The contract every telephony adapter keeps, run over both providers.

The recordings in tests/recordings/{twilio,plivo}/ hold, one per line, the text frames the provider sends
during a call (inbound only: what we send back is produced by the adapter's builders). Each scenario exists
for both providers, built from the documented shapes, so the same call must come out as the same events,
except where the providers really differ: Twilio opens with `connected`, and on `clear` Twilio echoes the
pending marks while Plivo acknowledges with `clearedAudio` and never acks the cut checkpoints.

The PCM adapter (/pcm/stream, binary audio) has no carrier recordings; it joins the tests that are about the
interface itself, through the `codec` fixture: start and custom parameters, marker echoes, clear, state.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest

from providers.telephony import (
    BINARY_PROTOCOLS,
    PROTOCOLS,
    AudioCleared,
    AudioReceived,
    CallEnded,
    CallStarted,
    DtmfReceived,
    InvalidMessage,
    MarkPlayed,
    StreamConnected,
    TelephonyEvent,
    TelephonyProtocol,
    UnknownEvent,
)
from providers.telephony.base import BinaryTelephonyProtocol

RECORDINGS = Path(__file__).resolve().parent.parent / "recordings"
SCENARIOS = ["basic_call", "barge_in", "irregular_frames"]
CUSTOM = {"tenant": "acme", "token": "Xyz123"}
EVENT_TYPES = get_args(TelephonyEvent)


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


@dataclass
class Edge:
    """The provider's side of the socket, reduced to the frames it sends us (in the documented shapes)."""

    provider: str
    stream_id: str
    call_id: str

    @property
    def sid_key(self) -> str:
        return "streamSid" if self.provider == "twilio" else "streamId"

    def opening(self, custom: dict[str, str]) -> list[str]:
        if self.provider == "pcm":
            return [dumps({"event": "start", "callId": self.call_id, "customParameters": custom})]
        if self.provider == "twilio":
            start = {
                "streamSid": self.stream_id,
                "accountSid": "AC01",
                "callSid": self.call_id,
                "tracks": ["inbound"],
                "customParameters": custom,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            }
            return [
                '{"event":"connected","protocol":"Call","version":"1.0.0"}',
                dumps({"event": "start", "sequenceNumber": "1", "streamSid": self.stream_id, "start": start}),
            ]
        start = {
            "callId": self.call_id,
            "streamId": self.stream_id,
            "accountId": "MA01",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        }
        headers = ";".join(f"{k}={v}" for k, v in custom.items())
        return [dumps({"event": "start", "sequenceNumber": 1, "start": start, "extra_headers": headers})]

    def caller_audio(self, payload: bytes, chunk: int, timestamp: int) -> str:
        assert self.provider != "pcm", "pcm audio is binary: see Telephony.receive_audio"
        media = {"track": "inbound", "chunk": str(chunk), "timestamp": str(timestamp)}
        media["payload"] = base64.b64encode(payload).decode()
        return dumps(
            {"event": "media", "sequenceNumber": str(chunk + 1), self.sid_key: self.stream_id, "media": media}
        )

    def loop_back(self, outbound_media: str) -> str:
        """Our playback frame turned into caller audio with the same payload."""
        frame = json.loads(outbound_media)
        if self.provider == "twilio":
            assert frame["event"] == "media"
            return outbound_media  # the inbound media shape without track/chunk/timestamp: parse it as is
        assert frame["event"] == "playAudio"
        media = {"track": "inbound", "payload": frame["media"]["payload"]}
        return dumps({"event": "media", "streamId": frame["streamId"], "media": media})

    def played(self, outbound_mark: str) -> str:
        """The provider's acknowledgement of our marker, sent once the audio before it has played."""
        frame = json.loads(outbound_mark)
        if self.provider == "pcm":  # the client echoes our mark as is
            assert frame["event"] == "mark"
            return outbound_mark
        if self.provider == "twilio":  # the echo is our mark plus a sequenceNumber [TW-WS]
            assert frame["event"] == "mark"
            return dumps({**frame, "sequenceNumber": "7"})
        assert frame["event"] == "checkpoint"  # answered by playedStream with the same top-level name [PL-CP]
        return dumps(
            {
                "event": "playedStream",
                "sequenceNumber": 7,
                "streamId": frame["streamId"],
                "name": frame["name"],
            }
        )

    def cleared(self, outbound_clear: str, pending_marks: list[str]) -> list[str]:
        """What the provider sends after our clear while `pending_marks` (our mark frames) are unacked."""
        frame = json.loads(outbound_clear)
        if self.provider == "pcm":  # the client drops queued audio and its marks; nothing comes back
            assert frame == {"event": "clear"}
            return []
        if self.provider == "twilio":  # every pending mark is echoed, nothing else [TW-WS]
            assert frame == {"event": "clear", "streamSid": self.stream_id}
            return [self.played(mark) for mark in pending_marks]
        assert frame == {
            "event": "clearAudio",
            "streamId": self.stream_id,
        }  # acked; checkpoints dropped [PL-CLR]
        return [dumps({"event": "clearedAudio", "sequenceNumber": 9, "streamId": self.stream_id})]


@dataclass
class Telephony:
    proto: TelephonyProtocol
    edge: Edge

    def start(self, custom: dict[str, str] | None = None) -> CallStarted:
        events = [event for line in self.edge.opening(custom or {}) for event in self.proto.receive(line)]
        assert isinstance(events[-1], CallStarted), events
        return events[-1]

    def receive_audio(self, payload: bytes) -> list[TelephonyEvent]:
        """Caller audio as the adapter's wire carries it: a media text frame, or for pcm a binary frame."""
        if self.edge.provider == "pcm":
            assert isinstance(self.proto, BinaryTelephonyProtocol)
            return self.proto.receive_bytes(payload)
        return self.proto.receive(self.edge.caller_audio(payload, 1, 0))


def make_codec(name: str) -> Telephony:
    if name == "pcm":
        return Telephony(BINARY_PROTOCOLS[name](), Edge(name, "pcm-PC" + "c3" * 16, "PC" + "c3" * 16))
    ids = ("MZ" + "a1" * 16, "CA" + "b2" * 16) if name == "twilio" else (
        "7f1e0000-0000-4000-8000-00000000aaaa", "2b9c0000-0000-4000-8000-00000000bbbb")
    return Telephony(PROTOCOLS[name](), Edge(name, *ids))


@pytest.fixture(params=["twilio", "plivo"])
def telephony(request: pytest.FixtureRequest) -> Telephony:
    return make_codec(str(request.param))


@pytest.fixture(params=["twilio", "plivo", "pcm"])
def codec(request: pytest.FixtureRequest) -> Telephony:
    """Every adapter, the binary one included: for the tests about the interface rather than a carrier's wire."""
    return make_codec(str(request.param))


def recording(provider: str, scenario: str) -> list[str]:
    lines = (RECORDINGS / provider / f"{scenario}.jsonl").read_text().splitlines()
    assert lines, f"empty recording {provider}/{scenario}"
    return lines


def replay(proto: TelephonyProtocol, lines: list[str]) -> list[TelephonyEvent]:
    events: list[TelephonyEvent] = []
    for line in lines:
        produced = proto.receive(line)
        assert len(produced) == 1, (line, produced)
        events.extend(produced)
    return events


def summary(events: list[TelephonyEvent]) -> list[str]:
    """Events as tokens, with runs of audio frames folded into one 'audio*N'."""
    tokens: list[str] = []
    for kind, run in itertools.groupby(events, key=type):
        group = list(run)
        if kind is AudioReceived:
            tokens.append(f"audio*{len(group)}")
            continue
        for event in group:
            match event:
                case StreamConnected():
                    tokens.append("connected")
                case CallStarted():
                    tokens.append("start")
                case MarkPlayed(name=name):
                    tokens.append(f"mark:{name}")
                case DtmfReceived(digit=digit):
                    tokens.append(f"dtmf:{digit}")
                case AudioCleared():
                    tokens.append("cleared")
                case CallEnded():
                    tokens.append("end")
                case _:
                    tokens.append(repr(event))
    return tokens


def expected_summary(proto: TelephonyProtocol, scenario: str) -> list[str]:
    # Plivo has no `connected` frame: `start` comes first [PL-PROTO].
    opening = ["connected", "start"] if proto.name == "twilio" else ["start"]
    # The caller barges in after g1:s2 played, while g1:s3 and g1:s4 are still queued; we send clear.
    after_clear = ["mark:g1:s3", "mark:g1:s4"] if proto.acks_cleared_marks else ["cleared"]
    body = {
        "basic_call": ["audio*20", "mark:g1:s1", "audio*3", "dtmf:1", "audio*2", "dtmf:#", "audio*2"],
        "barge_in": ["audio*8", "mark:g1:s1", "audio*5", "mark:g1:s2", "audio*8", *after_clear, "audio*15"],
        "irregular_frames": ["audio*8"],
    }[scenario]
    return [*opening, *body, "end"]


# --- recordings -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_recording_replays_to_the_expected_events(telephony: Telephony, scenario: str) -> None:
    proto = telephony.proto
    events = replay(proto, recording(proto.name, scenario))
    assert summary(events) == expected_summary(proto, scenario)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_recording_call_setup_is_the_same_on_both_providers(telephony: Telephony, scenario: str) -> None:
    proto = telephony.proto
    lines = recording(proto.name, scenario)
    started = [event for event in replay(proto, lines) if isinstance(event, CallStarted)]
    assert len(started) == 1
    start = started[0]
    # Twilio <Parameter>s and Plivo extraHeaders (three spellings across the recordings) arrive alike.
    assert start.custom == CUSTOM
    assert (start.encoding, start.sample_rate) == ("audio/x-mulaw", 8000)
    wire = next(json.loads(line)["start"] for line in lines if json.loads(line)["event"] == "start")
    id_keys = ("callSid", "streamSid") if proto.name == "twilio" else ("callId", "streamId")
    assert (start.call_id, start.stream_id) == (wire[id_keys[0]], wire[id_keys[1]])
    assert (proto.call_id, proto.stream_id) == (start.call_id, start.stream_id)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_recording_audio_matches_the_wire(telephony: Telephony, scenario: str) -> None:
    proto = telephony.proto
    lines = recording(proto.name, scenario)
    wire = [json.loads(line)["media"] for line in lines if json.loads(line)["event"] == "media"]
    audio = [event for event in replay(proto, lines) if isinstance(event, AudioReceived)]
    assert [event.payload for event in audio] == [base64.b64decode(m["payload"], validate=True) for m in wire]
    assert [event.chunk for event in audio] == [int(m["chunk"]) for m in wire]
    assert [event.timestamp_ms for event in audio] == [int(m["timestamp"]) for m in wire]


def test_irregular_recording_covers_odd_and_empty_frames(telephony: Telephony) -> None:
    proto = telephony.proto
    audio = [
        e for e in replay(proto, recording(proto.name, "irregular_frames")) if isinstance(e, AudioReceived)
    ]
    lengths = [len(event.payload) for event in audio]
    assert 0 in lengths and any(n % 2 for n in lengths) and len(set(lengths)) > 3


# --- round trips through our builders ---------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\xff\x7f\x00", bytes(range(256)), b"\xd5" * 160])
def test_played_audio_payload_survives_the_wire(telephony: Telephony, payload: bytes) -> None:
    proto, edge = telephony.proto, telephony.edge
    telephony.start()
    outbound = proto.media(payload)
    assert proto.receive(edge.loop_back(outbound)) == [AudioReceived(payload, None, None)]


@pytest.mark.parametrize("name", ["g1:s1", "g12:s340", "", 'ünï "c" \\ode'])
def test_marker_name_comes_back_in_its_acknowledgement(codec: Telephony, name: str) -> None:
    proto, edge = codec.proto, codec.edge
    codec.start()
    assert proto.receive(edge.played(proto.mark(name))) == [MarkPlayed(name)]


def test_clear_resolves_pending_marks_as_the_flag_says(codec: Telephony) -> None:
    proto, edge = codec.proto, codec.edge
    codec.start()
    marks = [proto.mark(f"g1:s{i}") for i in range(1, 4)]
    assert proto.receive(edge.played(marks[0])) == [MarkPlayed("g1:s1")]
    events = [event for line in edge.cleared(proto.clear(), marks[1:]) for event in proto.receive(line)]
    if proto.acks_cleared_marks:
        assert events == [MarkPlayed("g1:s2"), MarkPlayed("g1:s3")]
    elif proto.name == "pcm":
        assert events == []  # our own wire: the clear is not acknowledged at all
    else:
        assert events == [AudioCleared()]


def test_custom_parameters_arrive_in_call_started(codec: Telephony) -> None:
    start = codec.start({"tenant": "acme", "token": "T0k3n"})
    assert start.custom == {"tenant": "acme", "token": "T0k3n"}
    assert (start.stream_id, start.call_id) == (codec.edge.stream_id, codec.edge.call_id)


def test_outbound_frames_address_the_started_stream(telephony: Telephony) -> None:
    proto, edge = telephony.proto, telephony.edge
    telephony.start()
    for text in (proto.media(b"\xff" * 160), proto.mark("g1:s1"), proto.clear()):
        frame = json.loads(text)
        assert isinstance(frame, dict) and "\n" not in text
        assert frame[edge.sid_key] == edge.stream_id


# --- state and refusals -----------------------------------------------------------------------------------


def test_builders_refuse_before_start(codec: Telephony) -> None:
    proto = codec.proto
    builders: list[Callable[[], str]] = [lambda: proto.media(b""), lambda: proto.mark("g1:s1"), proto.clear]
    for build in builders:
        with pytest.raises(RuntimeError):
            build()


def test_audio_before_start_is_invalid(codec: Telephony) -> None:
    [event] = codec.receive_audio(b"\xff" * 160)
    assert isinstance(event, InvalidMessage) and event.reason == "media before start"


def test_audio_for_another_stream_is_invalid(telephony: Telephony) -> None:
    telephony.start()
    other = Edge(telephony.edge.provider, telephony.edge.stream_id + "0", telephony.edge.call_id)
    [event] = telephony.proto.receive(other.caller_audio(b"\xff" * 160, 1, 0))
    assert isinstance(event, InvalidMessage) and event.reason.startswith("frame for another stream")


def test_adapters_share_no_state(codec: Telephony) -> None:
    codec.start()
    fresh = make_codec(codec.proto.name).proto
    assert (fresh.stream_id, fresh.call_id) == (None, None)
    with pytest.raises(RuntimeError):
        fresh.clear()


def test_registry_names_match_the_adapters() -> None:
    assert set(PROTOCOLS) == {"twilio", "plivo"}
    assert set(BINARY_PROTOCOLS) == {"pcm"}
    for key, cls in {**PROTOCOLS, **BINARY_PROTOCOLS}.items():
        proto = cls()
        assert proto.name == key
        assert isinstance(proto, TelephonyProtocol)
    for binary in BINARY_PROTOCOLS.values():
        assert isinstance(binary(), BinaryTelephonyProtocol)


# --- robustness -------------------------------------------------------------------------------------------

_ODD_VALUES: list[object] = [
    None,
    0,
    -1,
    1.5,
    "",
    "x",
    "é",
    True,
    [],
    {},
    ["inbound"],
    {"a": None},
    "//7+/w==",
]


def _leaves(node: object, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, (*path, index))


def _mutate(line: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.25:  # torn frame
        return line[: rng.randrange(len(line))]
    if roll < 0.5:  # corrupted character
        i = rng.randrange(len(line))
        return line[:i] + rng.choice('{}[]":,\\x0 é=') + line[i + 1 :]
    # Structurally valid JSON with one value replaced or removed.
    frame = json.loads(line)
    path = rng.choice(list(_leaves(frame))[1:])
    parent = frame
    for key in path[:-1]:
        parent = parent[key]
    if rng.random() < 0.2 and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = rng.choice(_ODD_VALUES)
    return dumps(frame)


def test_receive_never_raises_on_mangled_frames(telephony: Telephony) -> None:
    name = telephony.proto.name
    rng = random.Random(20260522)
    flagged = 0
    for _ in range(1500):
        lines = recording(name, rng.choice(SCENARIOS))
        index = rng.randrange(len(lines))
        text = _mutate(lines[index], rng)
        proto = PROTOCOLS[name]()
        # A mangled opening frame goes to a fresh adapter; most others to one started by the recording's own
        # opening, so they get past the before-start check and exercise the field parsing.
        if json.loads(lines[index])["event"] not in ("connected", "start") and rng.random() < 0.8:
            for line in lines:
                proto.receive(line)
                if proto.stream_id is not None:
                    break
        events = proto.receive(text)
        assert len(events) == 1 and isinstance(events[0], EVENT_TYPES), (text, events)
        flagged += isinstance(events[0], InvalidMessage | UnknownEvent)
    # Most mutations break a frame (about 80% with this seed); a parser accepting anything fails here.
    assert flagged > 1000, flagged


# --- lenient clients (appended) ---------------------------------------------------------------------------


def _without_stream_id(edge: Edge, line: str) -> str:
    frame = json.loads(line)
    frame.pop(edge.sid_key, None)
    return dumps(frame)


def test_frames_without_a_stream_id_belong_to_the_sockets_stream(telephony: Telephony) -> None:
    """One stream per socket: a frame that names no stream is this one's, on both providers (third-party
    clients omit the id); numbers may be JSON numbers and frames 16 ms (128 bytes) long."""
    telephony.start()
    proto, edge = telephony.proto, telephony.edge
    for n in range(1, 4):
        frame = json.loads(edge.caller_audio(bytes([n]) * 128, n, 16 * n))
        del frame[edge.sid_key]
        frame["sequenceNumber"] = n + 1
        frame["media"].update(chunk=n, timestamp=16 * n)
        assert proto.receive(dumps(frame)) == [AudioReceived(bytes([n]) * 128, n, 16 * n)]
    ack = edge.played(proto.mark("g1:s1"))
    assert proto.receive(_without_stream_id(edge, ack)) == [MarkPlayed("g1:s1")]
    stop = {"event": "stop"}
    assert proto.receive(dumps(stop)) == [CallEnded()]


def test_a_frame_without_a_stream_id_before_start_is_still_refused(telephony: Telephony) -> None:
    line = _without_stream_id(telephony.edge, telephony.edge.caller_audio(b"\xff" * 128, 1, 0))
    [event] = telephony.proto.receive(line)
    assert isinstance(event, InvalidMessage) and event.reason == "media before start"
