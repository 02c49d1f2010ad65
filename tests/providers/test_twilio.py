"""TwilioProtocol against literal frames in the shapes of https://www.twilio.com/docs/voice/media-streams/websocket-messages."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from providers.telephony import (
    AudioReceived,
    CallEnded,
    CallStarted,
    DtmfReceived,
    InvalidMessage,
    MarkPlayed,
    StreamConnected,
    TelephonyProtocol,
    TwilioProtocol,
    UnknownEvent,
)

SID = "MZ01"
CONNECTED = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
# The documented examples, verbatim.
START = (
    '{"event":"start","sequenceNumber":"1","streamSid":"MZ01","start":{"streamSid":"MZ01","accountSid":"AC01",'
    '"callSid":"CA01","tracks":["inbound"],"customParameters":{"tenant":"acme"},'
    '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}'
)
MEDIA = (
    '{"event":"media","sequenceNumber":"2","streamSid":"MZ01","media":{"track":"inbound","chunk":"1",'
    '"timestamp":"20","payload":"//7+/w=="}}'
)
DTMF = '{"event":"dtmf","sequenceNumber":"9","streamSid":"MZ01","dtmf":{"track":"inbound_track","digit":"5"}}'
MARK = '{"event":"mark","sequenceNumber":"12","streamSid":"MZ01","mark":{"name":"g3:s17"}}'
STOP = (
    '{"event":"stop","sequenceNumber":"99","streamSid":"MZ01","stop":{"accountSid":"AC01","callSid":"CA01"}}'
)


def start_frame(**start_overrides: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(START)
    frame["start"].update(start_overrides)
    return frame


def media_frame(**media_overrides: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(MEDIA)
    frame["media"].update(media_overrides)
    return frame


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


def started() -> TwilioProtocol:
    proto = TwilioProtocol()
    assert proto.receive(CONNECTED) == [StreamConnected()]
    [event] = proto.receive(START)
    assert isinstance(event, CallStarted)
    return proto


def only(events: list[Any]) -> Any:
    assert len(events) == 1, events
    return events[0]


def invalid_reason(proto: TwilioProtocol, text: str) -> str:
    event = only(proto.receive(text))
    assert isinstance(event, InvalidMessage), event
    assert event.raw == text
    return event.reason


def test_conforms_to_protocol() -> None:
    proto = TwilioProtocol()
    assert isinstance(proto, TelephonyProtocol)
    assert (proto.name, proto.acks_cleared_marks) == ("twilio", True)
    assert (proto.stream_id, proto.call_id) == (None, None)


# --- start ------------------------------------------------------------------------------------------------


def test_documented_session_parses_in_order() -> None:
    proto = TwilioProtocol()
    events = [only(proto.receive(line)) for line in (CONNECTED, START, MEDIA, DTMF, MARK, STOP)]
    assert events == [
        StreamConnected(),
        CallStarted("CA01", "MZ01", "AC01", "audio/x-mulaw", 8000, {"tenant": "acme"}),
        AudioReceived(b"\xff\xfe\xfe\xff", 1, 20),
        DtmfReceived("5"),
        MarkPlayed("g3:s17"),
        CallEnded(),
    ]
    assert (proto.stream_id, proto.call_id) == ("MZ01", "CA01")


def test_start_without_optional_parts_uses_twilio_fixed_format() -> None:
    frame = start_frame()
    for key in ("customParameters", "mediaFormat", "accountSid"):
        del frame["start"][key]
    del frame["streamSid"]
    event = only(TwilioProtocol().receive(dumps(frame)))
    assert event == CallStarted("CA01", "MZ01", "", "audio/x-mulaw", 8000, {})


def test_start_coerces_string_sample_rate_and_keeps_custom_values_as_strings() -> None:
    frame = start_frame(
        mediaFormat={"encoding": "AUDIO/X-MULAW", "sampleRate": "8000", "channels": "1"},
        customParameters={"tenant": "acme", "n": 3, "flag": True, "empty": ""},
    )
    event = only(TwilioProtocol().receive(dumps(frame)))
    assert isinstance(event, CallStarted)
    assert (event.encoding, event.sample_rate) == ("audio/x-mulaw", 8000)
    assert event.custom == {"tenant": "acme", "n": "3", "flag": "true", "empty": ""}


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ({"event": "start", "sequenceNumber": "1", "streamSid": SID}, "start missing or not an object"),
        ({"event": "start", "streamSid": SID, "start": "MZ01"}, "start missing or not an object"),
        (start_frame(streamSid=None), "start.streamSid"),
        (start_frame(streamSid=""), "start.streamSid"),
        (start_frame(callSid=None), "start.callSid"),
        (start_frame(callSid=42), "start.callSid"),
        (start_frame(accountSid=["AC01"]), "start.accountSid is not a string"),
        (start_frame(customParameters=["tenant", "acme"]), "start.customParameters is not an object"),
        (start_frame(mediaFormat="audio/x-mulaw"), "start.mediaFormat is not an object"),
        (start_frame(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": "8k"}), "sampleRate"),
        (start_frame(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": 0}), "not positive"),
        (start_frame(mediaFormat={"encoding": 7, "sampleRate": 8000}), "encoding is not a string"),
        ({**start_frame(), "streamSid": "MZ02"}, "differs from start.streamSid"),
    ],
)
def test_bad_start_is_invalid_and_leaves_the_stream_unstarted(frame: dict[str, Any], reason: str) -> None:
    proto = TwilioProtocol()
    assert reason in invalid_reason(proto, dumps(frame))
    assert (proto.stream_id, proto.call_id) == (None, None)
    with pytest.raises(RuntimeError):
        proto.media(b"\xff")


def test_second_start_is_refused_and_keeps_the_first_stream() -> None:
    proto = started()
    other = start_frame(streamSid="MZ02", callSid="CA02")
    other["streamSid"] = "MZ02"
    assert "already started" in invalid_reason(proto, dumps(other))
    assert (proto.stream_id, proto.call_id) == ("MZ01", "CA01")
    assert json.loads(proto.clear())["streamSid"] == "MZ01"


def test_connected_after_start_is_invalid() -> None:
    assert "connected after start" in invalid_reason(started(), CONNECTED)


# --- media ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"\x7f", b"\x00\x01\x02", bytes(range(256))[:160], b"\xfe" * 161])
def test_media_accepts_any_payload_length(payload: bytes) -> None:
    text = dumps(media_frame(payload=base64.b64encode(payload).decode()))
    assert only(started().receive(text)) == AudioReceived(payload, 1, 20)


@pytest.mark.parametrize(
    ("chunk", "timestamp", "expected"),
    [("4", "1080", (4, 1080)), (4, 1080, (4, 1080)), (4.0, " 60 ", (4, 60)), (None, None, (None, None))],
)
def test_media_numbers_are_coerced(
    chunk: object, timestamp: object, expected: tuple[int | None, ...]
) -> None:
    event = only(started().receive(dumps(media_frame(chunk=chunk, timestamp=timestamp))))
    assert isinstance(event, AudioReceived)
    assert (event.chunk, event.timestamp_ms) == expected


def test_media_without_numbers_or_track_is_still_audio() -> None:
    frame = {"event": "media", "streamSid": SID, "media": {"payload": "/w=="}}
    assert only(started().receive(dumps(frame))) == AudioReceived(b"\xff", None, None)


@pytest.mark.parametrize(
    ("media", "reason"),
    [
        ({"payload": None}, "media.payload missing"),
        ({"payload": 1234}, "media.payload missing or not a string"),
        ({"payload": "//7+/w"}, "not valid base64"),  # padding stripped
        ({"payload": "//7+/w==\n"}, "not valid base64"),  # default mode would skip the newline
        ({"payload": "//7+ /w=="}, "not valid base64"),
        ({"payload": "/w==/w=="}, "not valid base64"),  # data after padding
        ({"payload": "ÿÿÿÿ"}, "not valid base64"),  # non-ASCII
        ({"chunk": "one"}, "media.chunk is not an integer"),
        ({"chunk": 1.5}, "media.chunk is not an integer"),
        ({"timestamp": True}, "media.timestamp is not an integer"),
        ({"timestamp": "20ms"}, "media.timestamp is not an integer"),
        ({"timestamp": [20]}, "media.timestamp is not an integer"),
        ({"track": "outbound"}, "not inbound"),
    ],
)
def test_bad_media_is_invalid(media: dict[str, Any], reason: str) -> None:
    assert reason in invalid_reason(started(), dumps(media_frame(**media)))


def test_media_body_must_be_an_object() -> None:
    frame = {"event": "media", "streamSid": SID, "media": "//7+/w=="}
    assert "media missing or not an object" in invalid_reason(started(), dumps(frame))


# --- stream identity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [MEDIA, MARK, DTMF, STOP])
def test_stream_frames_before_start_are_invalid(line: str) -> None:
    proto = TwilioProtocol()
    proto.receive(CONNECTED)
    event = json.loads(line)["event"]
    assert invalid_reason(proto, line) == f"{event} before start"


@pytest.mark.parametrize("line", [MEDIA, MARK, DTMF, STOP])
def test_frames_for_another_stream_are_invalid(line: str) -> None:
    text = line.replace('"streamSid":"MZ01"', '"streamSid":"MZ99"')
    assert "frame for another stream" in invalid_reason(started(), text)


@pytest.mark.parametrize("absent", ["deleted", "null"])
@pytest.mark.parametrize("line", [MEDIA, MARK, DTMF, STOP], ids=["media", "mark", "dtmf", "stop"])
def test_frames_without_stream_sid_belong_to_this_stream(line: str, absent: str) -> None:
    # Third-party Media Streams clients omit the top-level streamSid; a socket carries one stream, so a
    # frame that names none is this socket's own.
    frame = json.loads(line)
    if absent == "deleted":
        del frame["streamSid"]
    else:
        frame["streamSid"] = None
    with_sid = only(started().receive(line))
    assert not isinstance(with_sid, InvalidMessage)
    assert only(started().receive(dumps(frame))) == with_sid


@pytest.mark.parametrize("sid", ["", "mz01", 1, ["MZ01"], {"streamSid": "MZ01"}])
def test_frames_naming_any_other_stream_are_still_invalid(sid: object) -> None:
    for line in (MEDIA, MARK, DTMF, STOP):
        frame = json.loads(line)
        frame["streamSid"] = sid
        assert "frame for another stream" in invalid_reason(started(), dumps(frame))


def test_lenient_third_party_client_is_heard() -> None:
    """A browser Media Streams client: no customParameters/accountSid on start, numbers as JSON numbers, no
    streamSid on media, 16 ms (128-byte) frames. Every caller frame must come out as audio."""
    proto = TwilioProtocol()
    start = {"event": "start", "sequenceNumber": 1, "streamSid": SID,
             "start": {"streamSid": SID, "callSid": "CA01", "tracks": ["inbound"],
                       "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": 1}}}
    assert only(proto.receive(dumps(start))) == CallStarted("CA01", SID, "", "audio/x-mulaw", 8000, {})
    for n in range(1, 4):
        payload = bytes([n]) * 128
        media = {"event": "media", "sequenceNumber": n + 1,
                 "media": {"track": "inbound", "chunk": n, "timestamp": 16 * n,
                           "payload": base64.b64encode(payload).decode()}}
        assert only(proto.receive(dumps(media))) == AudioReceived(payload, n, 16 * n)
    # ...while a frame that names another stream, a bad payload or an over-cap one stays refused.
    foreign = {"event": "media", "streamSid": "MZ99", "media": {"payload": "/w=="}}
    assert "frame for another stream" in invalid_reason(proto, dumps(foreign))
    assert "not valid base64" in invalid_reason(proto, dumps({"event": "media", "media": {"payload": "/w"}}))
    big = base64.b64encode(b"\xff" * (proto.max_payload_bytes + 1)).decode()
    assert "exceeds" in invalid_reason(proto, dumps({"event": "media", "media": {"payload": big}}))


def test_media_on_the_inbound_track_spelled_as_in_stream_track_is_audio() -> None:
    assert only(started().receive(dumps(media_frame(track="inbound_track")))) == AudioReceived(
        b"\xff\xfe\xfe\xff", 1, 20
    )


# --- mark, dtmf, stop -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["g1:s1", "", 'naïve "quoted" \\ name'])
def test_mark_echo_carries_its_name(name: str) -> None:
    frame = {"event": "mark", "sequenceNumber": "3", "streamSid": SID, "mark": {"name": name}}
    assert only(started().receive(dumps(frame))) == MarkPlayed(name)


@pytest.mark.parametrize("mark", [None, {}, {"name": 17}, ["g1:s1"]])
def test_bad_mark_is_invalid(mark: object) -> None:
    frame = {"event": "mark", "sequenceNumber": "3", "streamSid": SID, "mark": mark}
    assert "mark" in invalid_reason(started(), dumps(frame))


@pytest.mark.parametrize(("digit", "expected"), [("0", "0"), ("9", "9"), ("*", "*"), ("#", "#"), ("d", "D")])
def test_dtmf_digits(digit: str, expected: str) -> None:
    frame = {"event": "dtmf", "streamSid": SID, "dtmf": {"track": "inbound_track", "digit": digit}}
    assert only(started().receive(dumps(frame))) == DtmfReceived(expected)


@pytest.mark.parametrize(
    "dtmf", [{"track": "inbound_track"}, {"digit": "12"}, {"digit": "x"}, {"digit": 5}, "5"]
)
def test_bad_dtmf_is_invalid(dtmf: object) -> None:
    frame = {"event": "dtmf", "streamSid": SID, "dtmf": dtmf}
    assert "dtmf" in invalid_reason(started(), dumps(frame))


def test_stop_needs_no_body() -> None:
    assert only(started().receive('{"event":"stop","streamSid":"MZ01"}')) == CallEnded()


# --- frames that are not Twilio frames --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "malformed JSON"),
        ('{"event":"media",', "malformed JSON"),
        ("{'event': 'media'}", "malformed JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ('"media"', "JSON str, not an object"),
        ("null", "JSON NoneType, not an object"),
        ("[" * 100_000 + "]" * 100_000, "malformed JSON"),
        ('{"streamSid":"MZ01"}', "'event' missing"),
        ('{"event":5}', "'event' missing or not a string"),
    ],
)
def test_non_frames_are_invalid(text: str, reason: str) -> None:
    for proto in (TwilioProtocol(), started()):
        assert reason in invalid_reason(proto, text)


@pytest.mark.parametrize("event", ["playedStream", "clear", "Media", "transcription"])
def test_unknown_events_are_reported_not_dropped(event: str) -> None:
    text = dumps({"event": event, "streamSid": SID})
    for proto in (TwilioProtocol(), started()):
        assert proto.receive(text) == [UnknownEvent(event, text)]


# --- outbound ---------------------------------------------------------------------------------------------


def test_builders_refuse_before_start() -> None:
    proto = TwilioProtocol()
    proto.receive(CONNECTED)
    builders: list[Callable[[], str]] = [lambda: proto.media(b"\xff"), lambda: proto.mark("m"), proto.clear]
    for build in builders:
        with pytest.raises(RuntimeError, match="before start"):
            build()


@pytest.mark.parametrize("payload", [b"", b"\xff", b"\x00\x01\x02", bytes(range(256))])
def test_media_frame_has_exactly_the_documented_fields(payload: bytes) -> None:
    text = started().media(payload)
    assert json.loads(text) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": base64.b64encode(payload).decode()},
    }
    assert "\n" not in text


def test_mark_and_clear_frames_have_exactly_the_documented_fields() -> None:
    proto = started()
    name = 'g2:s5 "é"\n'
    assert json.loads(proto.mark(name)) == {"event": "mark", "streamSid": SID, "mark": {"name": name}}
    assert json.loads(proto.clear()) == {"event": "clear", "streamSid": SID}


def test_stream_sid_is_escaped_in_outbound_frames() -> None:
    proto = TwilioProtocol()
    proto.receive(dumps({**start_frame(streamSid='MZ"\\1'), "streamSid": 'MZ"\\1'}))
    assert json.loads(proto.media(b"\x01"))["streamSid"] == 'MZ"\\1'
    assert json.loads(proto.mark("m"))["streamSid"] == 'MZ"\\1'
    assert json.loads(proto.clear())["streamSid"] == 'MZ"\\1'


def test_echoed_mark_frame_parses_back_to_its_name() -> None:
    # Twilio's echo is our own mark frame plus a sequenceNumber [TW-WS].
    proto = started()
    echo = json.loads(proto.mark("g7:s3"))
    echo["sequenceNumber"] = "40"
    assert only(proto.receive(dumps(echo))) == MarkPlayed("g7:s3")
