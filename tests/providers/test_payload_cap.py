"""The per-frame cap on decoded media, on both adapters: refused by the text's length, never decoded first."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

import providers.telephony.base as base
from app.settings import Settings
from providers.telephony import PROTOCOLS, AudioReceived, InvalidMessage, TelephonyProtocol
from providers.telephony.base import DEFAULT_MAX_PAYLOAD_BYTES, max_base64_chars

RECORDINGS = Path(__file__).resolve().parents[1] / "recordings"


def started(name: str, **kwargs: int) -> tuple[TelephonyProtocol, str]:
    """An adapter past the recorded opening of a call, and that call's stream id."""
    proto = PROTOCOLS[name](**kwargs)
    for line in (RECORDINGS / name / "basic_call.jsonl").read_text().splitlines():
        proto.receive(line)
        if json.loads(line)["event"] == "start":
            break
    assert proto.stream_id is not None
    return proto, proto.stream_id


def media(name: str, stream_id: str, payload_b64: str) -> str:
    sid_key = "streamSid" if name == "twilio" else "streamId"
    frame = {"event": "media", sid_key: stream_id, "media": {"track": "inbound", "chunk": "1", "payload": payload_b64}}
    return json.dumps(frame)


def b64(size: int) -> str:
    return base64.b64encode(b"\xff" * size).decode()


@pytest.fixture(params=sorted(PROTOCOLS))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_default_cap_is_the_settings_default() -> None:
    assert DEFAULT_MAX_PAYLOAD_BYTES == Settings.model_fields["media_max_payload_bytes"].default == 4000


@pytest.mark.parametrize("size", [0, 1, 160, 3999, 4000])
def test_payloads_up_to_the_cap_are_audio(name: str, size: int) -> None:
    proto, sid = started(name)
    [event] = proto.receive(media(name, sid, b64(size)))
    assert isinstance(event, AudioReceived)
    assert event.payload == b"\xff" * size


# 4001 and 4002 bytes have the same base64 length as 4000 (5336 characters): the length check lets them
# through and the decoded size refuses them.
@pytest.mark.parametrize("size", [4001, 4002, 4003, 100_000, 1_000_000])
def test_payloads_over_the_cap_are_refused_with_their_size(name: str, size: int) -> None:
    proto, sid = started(name)
    [event] = proto.receive(media(name, sid, b64(size)))
    assert isinstance(event, InvalidMessage)
    assert event.reason == f"media.payload of {size} bytes exceeds the 4000-byte cap"


def test_an_oversized_payload_is_refused_without_decoding(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    proto, sid = started(name)

    def must_not_decode(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("an oversized payload was decoded")

    monkeypatch.setattr(base, "a2b_base64", must_not_decode)
    [event] = proto.receive(media(name, sid, b64(1_000_000)))
    assert isinstance(event, InvalidMessage)
    assert "exceeds the 4000-byte cap" in event.reason
    # Not even looked at: text that is not base64 at all is refused for its length, not its alphabet.
    [event] = proto.receive(media(name, sid, "@" * 100_000))
    assert isinstance(event, InvalidMessage) and "exceeds the 4000-byte cap" in event.reason


def test_the_cap_is_a_constructor_argument(name: str) -> None:
    proto, sid = started(name, max_payload_bytes=160)
    [ok] = proto.receive(media(name, sid, b64(160)))
    [refused] = proto.receive(media(name, sid, b64(161)))
    assert isinstance(ok, AudioReceived)
    assert isinstance(refused, InvalidMessage)
    assert refused.reason == "media.payload of 161 bytes exceeds the 160-byte cap"
    big, sid = started(name, max_payload_bytes=48_000)
    [event] = big.receive(media(name, sid, b64(48_000)))
    assert isinstance(event, AudioReceived) and len(event.payload) == 48_000


def test_a_refused_frame_leaves_the_stream_usable(name: str) -> None:
    proto, sid = started(name)
    proto.receive(media(name, sid, b64(10_000)))
    [event] = proto.receive(media(name, sid, b64(160)))
    assert isinstance(event, AudioReceived)


def test_a_cap_below_one_byte_is_refused(name: str) -> None:
    with pytest.raises(ValueError):
        PROTOCOLS[name](max_payload_bytes=0)


@pytest.mark.parametrize("cap", [1, 2, 3, 160, 4000, 4001, 48_000])
def test_the_length_bound_is_the_longest_base64_of_cap_bytes(cap: int) -> None:
    assert max_base64_chars(cap) == len(b64(cap))
