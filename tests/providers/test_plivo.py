"""PlivoProtocol against literal frames in the shapes of Plivo's audio-streaming reference
(https://plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-reference)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from providers.telephony import (
    AudioCleared,
    AudioReceived,
    CallEnded,
    CallStarted,
    DtmfReceived,
    InvalidMessage,
    MarkPlayed,
    PlivoProtocol,
    TelephonyProtocol,
    UnknownEvent,
)
from providers.telephony.plivo import parse_extra_headers

SID = "7f1e0000-0000-4000-8000-000000000001"
CALL = "2b9c0000-0000-4000-8000-000000000001"
# The documented examples, with the elided ids filled in.
START = (
    '{"event":"start","sequenceNumber":1,"start":{"callId":"' + CALL + '","streamId":"' + SID + '",'
    '"accountId":"MA01","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000}},'
    '"extra_headers":"tenant=acme"}'
)
MEDIA = (
    '{"event":"media","sequenceNumber":2,"streamId":"' + SID + '","media":{"track":"inbound",'
    '"timestamp":"1705312200020","chunk":1,"payload":"//7+/w=="}}'
)
DTMF = (
    '{"event":"dtmf","sequenceNumber":9,"streamId":"' + SID + '","dtmf":{"track":"inbound","digit":"5",'
    '"timestamp":"1705312201000"}}'
)
PLAYED = '{"event":"playedStream","sequenceNumber":12,"streamId":"' + SID + '","name":"g3:s17"}'
CLEARED = '{"event":"clearedAudio","sequenceNumber":13,"streamId":"' + SID + '"}'
STOP = '{"event":"stop"}'


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


def start_frame(extra_headers: object = "tenant=acme", **start_overrides: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(START)
    frame["start"].update(start_overrides)
    if extra_headers is None:
        del frame["extra_headers"]
    else:
        frame["extra_headers"] = extra_headers
    return frame


def media_frame(**media_overrides: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(MEDIA)
    frame["media"].update(media_overrides)
    return frame


def started() -> PlivoProtocol:
    proto = PlivoProtocol()
    [event] = proto.receive(START)
    assert isinstance(event, CallStarted)
    return proto


def only(events: list[Any]) -> Any:
    assert len(events) == 1, events
    return events[0]


def invalid_reason(proto: PlivoProtocol, text: str) -> str:
    event = only(proto.receive(text))
    assert isinstance(event, InvalidMessage), event
    assert event.raw == text
    return event.reason


def test_conforms_to_protocol() -> None:
    proto = PlivoProtocol()
    assert isinstance(proto, TelephonyProtocol)
    assert (proto.name, proto.acks_cleared_marks) == ("plivo", False)
    assert (proto.stream_id, proto.call_id) == (None, None)


# --- start ------------------------------------------------------------------------------------------------


def test_documented_session_parses_in_order() -> None:
    proto = PlivoProtocol()
    events = [only(proto.receive(line)) for line in (START, MEDIA, DTMF, PLAYED, CLEARED, STOP)]
    assert events == [
        CallStarted(CALL, SID, "MA01", "audio/x-mulaw", 8000, {"tenant": "acme"}),
        AudioReceived(b"\xff\xfe\xfe\xff", 1, 1705312200020),
        DtmfReceived("5"),
        MarkPlayed("g3:s17"),
        AudioCleared(),
        CallEnded(),
    ]
    assert (proto.stream_id, proto.call_id) == (SID, CALL)


@pytest.mark.parametrize(
    "extra_headers",
    [
        "tenant=acme;token=Xyz123",  # [PL-GUIDE]
        "tenant=acme,token=Xyz123",  # [PL-XML]
        '{"tenant":"acme","token":"Xyz123"}',  # [plivo-stream-py]: a JSON string
        ' { "tenant" : "acme", "token" : "Xyz123" } ',
        {"tenant": "acme", "token": "Xyz123"},  # already decoded
        " tenant = acme ; token = Xyz123 ; ",
        "tenant=acme;token=Xyz123,",
    ],
)
def test_extra_headers_in_every_documented_form(extra_headers: object) -> None:
    event = only(PlivoProtocol().receive(dumps(start_frame(extra_headers))))
    assert isinstance(event, CallStarted)
    assert event.custom == {"tenant": "acme", "token": "Xyz123"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {}),
        ("", {}),
        ("   ", {}),
        ("{}", {}),
        ("flag", {"flag": ""}),
        ("a=1;b=", {"a": "1", "b": ""}),
        ("k=v=w", {"k": "v=w"}),
        ("a=1;b=2,c=3", {"a": "1", "b": "2", "c": "3"}),
        ('{"n": 12, "ok": true, "none": null}', {"n": "12", "ok": "true", "none": "null"}),
    ],
)
def test_extra_headers_edge_cases(value: object, expected: dict[str, str]) -> None:
    assert parse_extra_headers(value) == expected


@pytest.mark.parametrize(
    ("extra_headers", "reason"),
    [
        (42, "extra_headers is a int, not a string or object"),
        (["tenant=acme"], "extra_headers is a list, not a string or object"),
        ('{"tenant": "acme"', "extra_headers looks like JSON but does not parse"),
        ("=acme", "extra_headers has a value with no name"),
    ],
)
def test_bad_extra_headers_make_start_invalid(extra_headers: object, reason: str) -> None:
    proto = PlivoProtocol()
    assert reason in invalid_reason(proto, dumps(start_frame(extra_headers)))
    assert proto.stream_id is None


def test_start_without_extra_headers_or_account_has_empty_defaults() -> None:
    frame = start_frame(None)
    del frame["start"]["accountId"]
    event = only(PlivoProtocol().receive(dumps(frame)))
    assert isinstance(event, CallStarted)
    assert (event.account_id, event.custom) == ("", {})


@pytest.mark.parametrize(
    ("media_format", "expected"),
    [
        ({"encoding": "audio/x-mulaw", "sampleRate": "8000"}, ("audio/x-mulaw", 8000)),
        ({"encoding": "audio/x-mulaw;rate=8000"}, ("audio/x-mulaw", 8000)),
        ({"encoding": "audio/x-l16;rate=16000"}, ("audio/x-l16", 16000)),
        ({"encoding": "audio/x-l16", "sampleRate": 16000}, ("audio/x-l16", 16000)),
        ({"encoding": "Audio/X-MULAW"}, ("audio/x-mulaw", 8000)),
    ],
)
def test_start_media_format_is_normalised(media_format: dict[str, Any], expected: tuple[str, int]) -> None:
    event = only(PlivoProtocol().receive(dumps(start_frame(mediaFormat=media_format))))
    assert isinstance(event, CallStarted)
    assert (event.encoding, event.sample_rate) == expected


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ({"event": "start", "sequenceNumber": 1}, "start missing or not an object"),
        (start_frame(streamId=None), "start.streamId"),
        (start_frame(streamId=7), "start.streamId"),
        (start_frame(callId=""), "start.callId"),
        (start_frame(accountId=1), "start.accountId is not a string"),
        (start_frame(mediaFormat=None), "start.mediaFormat missing"),
        (start_frame(mediaFormat={"sampleRate": 8000}), "start.mediaFormat.encoding missing"),
        (start_frame(mediaFormat={"encoding": "audio/x-l16;rate=fast"}), "rate"),
        (start_frame(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": -8000}), "not positive"),
        (start_frame(mediaFormat={"encoding": ";rate=8000"}), "encoding is empty"),
        ({**start_frame(), "streamId": "other"}, "differs from start.streamId"),
    ],
)
def test_bad_start_is_invalid_and_leaves_the_stream_unstarted(frame: dict[str, Any], reason: str) -> None:
    proto = PlivoProtocol()
    assert reason in invalid_reason(proto, dumps(frame))
    assert (proto.stream_id, proto.call_id) == (None, None)
    with pytest.raises(RuntimeError):
        proto.clear()


def test_start_may_carry_a_matching_top_level_stream_id() -> None:
    event = only(PlivoProtocol().receive(dumps({**start_frame(), "streamId": SID})))
    assert isinstance(event, CallStarted)


def test_second_start_is_refused_and_keeps_the_first_stream() -> None:
    proto = started()
    assert "already started" in invalid_reason(proto, dumps(start_frame(streamId="other", callId="c2")))
    assert (proto.stream_id, proto.call_id) == (SID, CALL)


# --- media ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"\x7f", b"\x00\x01\x02", bytes(range(160)), b"\xfe" * 161])
def test_media_accepts_any_payload_length(payload: bytes) -> None:
    text = dumps(media_frame(payload=base64.b64encode(payload).decode()))
    assert only(started().receive(text)) == AudioReceived(payload, 1, 1705312200020)


@pytest.mark.parametrize(
    ("chunk", "timestamp", "expected"),
    [
        (1, "1705312200020", (1, 1705312200020)),  # documented: chunk a number, timestamp a string
        ("7", 1705312200160, (7, 1705312200160)),  # and the other way round
        (0, "0", (0, 0)),
        (None, None, (None, None)),
    ],
)
def test_media_numbers_are_coerced(
    chunk: object, timestamp: object, expected: tuple[int | None, ...]
) -> None:
    event = only(started().receive(dumps(media_frame(chunk=chunk, timestamp=timestamp))))
    assert isinstance(event, AudioReceived)
    assert (event.chunk, event.timestamp_ms) == expected


@pytest.mark.parametrize(
    ("media", "reason"),
    [
        ({"payload": None}, "media.payload missing"),
        ({"payload": ["//7+/w=="]}, "media.payload missing or not a string"),
        ({"payload": "//7+/w="}, "not valid base64"),
        ({"payload": "//7+/w==\r\n"}, "not valid base64"),
        ({"payload": "-_-_"}, "not valid base64"),  # URL-safe alphabet is not Plivo's
        ({"chunk": "1.0"}, "media.chunk is not an integer"),
        ({"chunk": False}, "media.chunk is not an integer"),
        ({"timestamp": "2024-01-15T10:30:00Z"}, "media.timestamp is not an integer"),
        ({"timestamp": {"ms": 20}}, "media.timestamp is not an integer"),
        ({"track": "outbound"}, "not inbound"),
        ({"track": "both"}, "not inbound"),
    ],
)
def test_bad_media_is_invalid(media: dict[str, Any], reason: str) -> None:
    assert reason in invalid_reason(started(), dumps(media_frame(**media)))


def test_media_body_must_be_an_object() -> None:
    frame = {"event": "media", "streamId": SID, "media": None}
    assert "media missing or not an object" in invalid_reason(started(), dumps(frame))


# --- stream identity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [MEDIA, DTMF, PLAYED, CLEARED, STOP])
def test_stream_frames_before_start_are_invalid(line: str) -> None:
    event = json.loads(line)["event"]
    assert invalid_reason(PlivoProtocol(), line) == f"{event} before start"


@pytest.mark.parametrize("line", [MEDIA, DTMF, PLAYED, CLEARED])
def test_frames_for_another_stream_are_invalid(line: str) -> None:
    text = line.replace(SID, "7f1e0000-0000-4000-8000-0000000000ff")
    assert "frame for another stream" in invalid_reason(started(), text)


@pytest.mark.parametrize("line", [MEDIA, DTMF, PLAYED, CLEARED])
def test_frames_may_omit_stream_id(line: str) -> None:
    frame = json.loads(line)
    del frame["streamId"]
    expected = only(started().receive(line))
    assert only(started().receive(dumps(frame))) == expected
    assert not isinstance(expected, InvalidMessage)


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ('{"event":"stop"}', CallEnded()),
        ('{"event":"stop","streamId":"' + SID + '"}', CallEnded()),
    ],
)
def test_stop_with_or_without_stream_id(stop: str, expected: object) -> None:
    assert only(started().receive(stop)) == expected


def test_stop_for_another_stream_is_invalid() -> None:
    assert "frame for another stream" in invalid_reason(started(), '{"event":"stop","streamId":"x"}')


# --- playedStream, clearedAudio, dtmf ---------------------------------------------------------------------


def test_played_stream_sequence_number_may_be_a_string() -> None:
    text = '{"event":"playedStream","sequenceNumber":"12","streamId":"' + SID + '","name":"g1:s2"}'
    assert only(started().receive(text)) == MarkPlayed("g1:s2")


@pytest.mark.parametrize(
    "frame",
    [
        {"event": "playedStream", "streamId": SID},
        {"event": "playedStream", "streamId": SID, "name": 3},
        # Twilio's nesting is not Plivo's: the name is top-level [PL-CP].
        {"event": "playedStream", "streamId": SID, "checkpoint": {"name": "g1:s2"}},
    ],
)
def test_played_stream_without_a_name_is_invalid(frame: dict[str, Any]) -> None:
    assert "playedStream.name missing" in invalid_reason(started(), dumps(frame))


@pytest.mark.parametrize(("digit", "expected"), [("1", "1"), ("#", "#"), ("*", "*"), ("A", "A"), ("b", "B")])
def test_dtmf_digits(digit: str, expected: str) -> None:
    frame = {"event": "dtmf", "streamId": SID, "dtmf": {"track": "inbound", "digit": digit, "timestamp": "5"}}
    assert only(started().receive(dumps(frame))) == DtmfReceived(expected)


@pytest.mark.parametrize("dtmf", [None, {"track": "inbound"}, {"digit": "E"}, {"digit": "##"}, {"digit": 1}])
def test_bad_dtmf_is_invalid(dtmf: object) -> None:
    frame = {"event": "dtmf", "streamId": SID, "dtmf": dtmf}
    assert "dtmf" in invalid_reason(started(), dumps(frame))


# --- frames that are not Plivo frames ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "malformed JSON"),
        ("not json", "malformed JSON"),
        ('{"event":"media"} trailing', "malformed JSON"),
        ("[]", "JSON list, not an object"),
        ("3", "JSON int, not an object"),
        ('{"sequenceNumber":1}', "'event' missing"),
        ('{"event":null}', "'event' missing or not a string"),
    ],
)
def test_non_frames_are_invalid(text: str, reason: str) -> None:
    for proto in (PlivoProtocol(), started()):
        assert reason in invalid_reason(proto, text)


@pytest.mark.parametrize(
    "event",
    # Twilio's names, our own outbound names, and the undocumented ones only plivo-labs handles.
    ["connected", "mark", "playAudio", "checkpoint", "playFailed", "error", "muteStream"],
)
def test_unknown_events_are_reported_not_dropped(event: str) -> None:
    text = dumps({"event": event, "streamId": SID, "reason": "x"})
    for proto in (PlivoProtocol(), started()):
        assert proto.receive(text) == [UnknownEvent(event, text)]


# --- outbound ---------------------------------------------------------------------------------------------


def test_builders_refuse_before_start() -> None:
    proto = PlivoProtocol()
    builders: list[Callable[[], str]] = [lambda: proto.media(b"\xff"), lambda: proto.mark("m"), proto.clear]
    for build in builders:
        with pytest.raises(RuntimeError, match="before start"):
            build()


@pytest.mark.parametrize("payload", [b"", b"\xff", b"\x00\x01\x02", bytes(range(256))])
def test_play_audio_frame_has_exactly_the_documented_fields(payload: bytes) -> None:
    text = started().media(payload)
    assert json.loads(text) == {
        "event": "playAudio",
        "streamId": SID,
        "media": {
            "contentType": "audio/x-mulaw",
            "sampleRate": 8000,
            "payload": base64.b64encode(payload).decode(),
        },
    }
    assert "\n" not in text


def test_checkpoint_and_clear_audio_frames_have_exactly_the_documented_fields() -> None:
    proto = started()
    name = 'g2:s5 "é"'
    assert json.loads(proto.mark(name)) == {"event": "checkpoint", "streamId": SID, "name": name}
    assert json.loads(proto.clear()) == {"event": "clearAudio", "streamId": SID}


def test_checkpoint_name_comes_back_in_played_stream() -> None:
    proto = started()
    checkpoint = json.loads(proto.mark("g4:s9"))
    ack = {"event": "playedStream", "sequenceNumber": 30, "streamId": checkpoint["streamId"]}
    ack["name"] = checkpoint["name"]
    assert only(proto.receive(dumps(ack))) == MarkPlayed("g4:s9")


# --- lenient clients --------------------------------------------------------------------------------------


def test_lenient_third_party_client_is_heard() -> None:
    """A Plivo-protocol client that differs from the documented shape only without ambiguity: no
    extra_headers or accountId, string numbers where numbers are documented and a number for the documented
    string timestamp, no streamId on media, 16 ms (128-byte) frames. Every caller frame comes out as audio."""
    proto = PlivoProtocol()
    start = {"event": "start", "sequenceNumber": "1",
             "start": {"callId": CALL, "streamId": SID, "tracks": ["inbound"],
                       "mediaFormat": {"encoding": "audio/x-mulaw;rate=8000", "sampleRate": "8000"}}}
    assert only(proto.receive(dumps(start))) == CallStarted(CALL, SID, "", "audio/x-mulaw", 8000, {})
    for n in range(1, 4):
        payload = bytes([n]) * 128
        media = {"event": "media", "sequenceNumber": str(n + 1),
                 "media": {"track": "inbound", "chunk": str(n), "timestamp": 16 * n,
                           "payload": base64.b64encode(payload).decode()}}
        assert only(proto.receive(dumps(media))) == AudioReceived(payload, n, 16 * n)
    foreign = {"event": "media", "streamId": "another", "media": {"payload": "/w=="}}
    assert "frame for another stream" in invalid_reason(proto, dumps(foreign))
    assert "not valid base64" in invalid_reason(proto, dumps({"event": "media", "media": {"payload": "/w"}}))
    big = base64.b64encode(b"\xff" * (proto.max_payload_bytes + 1)).decode()
    assert "exceeds" in invalid_reason(proto, dumps({"event": "media", "media": {"payload": big}}))


@pytest.mark.parametrize("sid", ["", SID.upper(), 1, [SID]])
def test_frames_naming_any_other_stream_are_still_invalid(sid: object) -> None:
    for line in (MEDIA, DTMF, PLAYED, CLEARED):
        frame = json.loads(line)
        frame["streamId"] = sid
        assert "frame for another stream" in invalid_reason(started(), dumps(frame))
