"""The replay's edge: acknowledgements from the exact playout model, for what the build under test sends."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from app.replay.edge import EdgeModel, estimate_latency, is_ack
from providers.telephony import PROTOCOLS

SID = {"twilio": "MZ" + "a" * 32, "plivo": "6f1c5b4e-0000-4000-8000-000000000001"}


def server_frames(provider: str) -> Any:
    """The frames the server's own adapter writes (so the model is fed real wire text)."""
    proto = PROTOCOLS[provider]()
    start: dict[str, Any]
    if provider == "twilio":
        start = {"event": "start", "sequenceNumber": "1", "streamSid": SID[provider],
                 "start": {"streamSid": SID[provider], "accountSid": "AC" + "b" * 32, "callSid": "CA" + "c" * 32,
                           "tracks": ["inbound"], "customParameters": {},
                           "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
    else:
        start = {"event": "start", "sequenceNumber": 1,
                 "start": {"callId": "6f1c5b4e-0000-4000-8000-000000000002", "streamId": SID[provider],
                           "accountId": "MA123", "tracks": ["inbound"],
                           "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}, "extra_headers": ""}
    proto.receive(json.dumps(start))
    return proto


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
def test_a_mark_is_acknowledged_when_its_audio_has_played(provider: str) -> None:
    proto = server_frames(provider)
    edge = EdgeModel(provider, SID[provider])
    assert edge.server_frame(10.0, proto.media(bytes(800))) == []  # 100 ms of audio
    assert edge.server_frame(10.0, proto.mark("m1")) == []
    assert edge.next_due() == pytest.approx(10.1)
    (at, text), = edge.take_due(10.1)
    assert at == pytest.approx(10.1) and is_ack(provider, text) and "m1" in text


def test_twilio_clear_echoes_pending_marks_plivo_answers_cleared_audio() -> None:
    for provider, expect in (("twilio", "mark"), ("plivo", "clearedAudio")):
        proto = server_frames(provider)
        edge = EdgeModel(provider, SID[provider])
        edge.server_frame(0.0, proto.media(bytes(1600)))
        edge.server_frame(0.0, proto.mark("m1"))
        answers = edge.server_frame(0.05, proto.clear())
        assert [json.loads(text)["event"] for _, text in answers] == [expect]
        assert [at for at, _ in answers] == [0.05]
        assert edge.take_due(5.0) == []  # a cut checkpoint is never acknowledged later


def test_latency_is_the_median_ack_delay_over_the_model() -> None:
    proto = server_frames("twilio")
    lines = [
        {"type": "ws_out", "t": 1.0, "text": proto.media(bytes(800))},
        {"type": "ws_out", "t": 1.0, "text": proto.mark("a")},
        {"type": "ws_out", "t": 1.1, "text": proto.media(bytes(800))},
        {"type": "ws_out", "t": 1.1, "text": proto.mark("b")},
        {"type": "ws_in", "t": 1.1031, "text": json.dumps({"event": "mark", "streamSid": SID["twilio"],
                                                           "mark": {"name": "a"}})},
        {"type": "ws_in", "t": 1.2029, "text": json.dumps({"event": "mark", "streamSid": SID["twilio"],
                                                           "mark": {"name": "b"}})},
    ]
    assert estimate_latency("twilio", SID["twilio"], lines) == pytest.approx(0.003, abs=1e-4)
    assert estimate_latency("twilio", SID["twilio"], lines[:4]) == 0.0  # no ack: no latency


def test_only_acknowledgements_count_as_acks() -> None:
    media = {"event": "media", "media": {"payload": base64.b64encode(b"mark" * 40).decode()}}
    assert not is_ack("twilio", json.dumps(media))
    assert is_ack("plivo", json.dumps({"event": "playedStream", "name": "x"}))
    assert not is_ack("plivo", json.dumps({"event": "mark"}))
