"""The PCM adapter (/pcm/stream): binary PCM16 at the client's rate <-> the session's 8 kHz mu-law."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from app.audio import pcm16_to_ulaw, ulaw_to_pcm16
from providers.resample import resample
from providers.telephony import (
    AudioReceived,
    CallEnded,
    CallStarted,
    DtmfReceived,
    InvalidMessage,
    MarkPlayed,
    PcmProtocol,
    UnknownEvent,
)
from providers.telephony.pcm import RATES, _StreamResampler


def started(rate: int = 16000, **kwargs: int) -> PcmProtocol:
    proto = PcmProtocol(rate=rate, **kwargs)
    [event] = proto.receive(PcmProtocol.start_frame("PC1", "tok", {"tenant": "acme"}))
    assert event == CallStarted("PC1", "pcm-PC1", "", "audio/x-mulaw", 8000, {"tenant": "acme", "token": "tok"})
    return proto


def tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@pytest.mark.parametrize(("src", "dst"), [(16000, 8000), (24000, 8000), (8000, 16000), (8000, 24000)])
def test_streamed_resampling_equals_whole_buffer_resampling(src: int, dst: int) -> None:
    rng = np.random.default_rng(7)
    audio = (rng.standard_normal(src) * 3000).astype(np.int16)
    stream = _StreamResampler(src, dst)
    step = src // 50
    out = np.concatenate([stream.feed(audio[i : i + step]) for i in range(0, len(audio), step)])
    whole = resample(audio, src, dst)
    assert len(whole) - len(out) < dst // 100  # only the filter's half width is held back (< 10 ms)
    assert np.array_equal(out, whole[: len(out)])


@pytest.mark.parametrize("rate", RATES)
def test_inbound_pcm_becomes_8k_mulaw(rate: int) -> None:
    proto = started(rate)
    audio = tone(rate, 1.0)
    step = rate // 50
    events = [e for i in range(0, len(audio), step) for e in proto.receive_bytes(audio[i : i + step].tobytes())]
    frames = [e for e in events if isinstance(e, AudioReceived)]
    assert len(frames) == len(events) == 50
    assert [e.chunk for e in frames][:3] == [1, 2, 3]
    assert [e.timestamp_ms for e in frames][:3] == [0, 20, 40]
    got = ulaw_to_pcm16(b"".join(e.payload for e in frames))
    want = resample(audio, rate, 8000)[: len(got)]
    assert abs(len(got) - 8000) < 80
    # mu-law keeps a tone within a few percent; compare away from the first samples (the filter's start)
    err = np.abs(got[100:].astype(float) - want[100:].astype(float))
    assert err.mean() < 200


@pytest.mark.parametrize("rate", RATES)
def test_outbound_mulaw_becomes_binary_pcm_at_the_clients_rate(rate: int) -> None:
    proto = started(rate)
    ulaw = pcm16_to_ulaw(tone(8000, 0.16))
    frames = [proto.outbound(proto.media(ulaw)) for _ in range(5)]
    assert all(isinstance(f, bytes) for f in frames)
    total = sum(len(f) for f in frames)
    expected = 5 * len(ulaw) * 2 * rate // 8000
    assert expected - total < 2 * rate // 100  # all of it but the held-back filter tail
    assert json.loads(proto.mark("g1s1")) == {"event": "mark", "name": "g1s1"}
    assert proto.outbound(proto.mark("g1s1")) == proto.mark("g1s1")
    assert PcmProtocol.mark_name(proto.mark('a "q"')) == 'a "q"' and PcmProtocol.mark_name(proto.clear()) is None
    assert proto.outbound(proto.clear()) == '{"event":"clear"}' and PcmProtocol.is_clear(proto.clear())


def test_control_frames() -> None:
    proto = started()
    assert proto.receive('{"event":"mark","name":"g1s2"}') == [MarkPlayed("g1s2")]
    assert proto.receive('{"event":"dtmf","digit":"5"}') == [DtmfReceived("5")]
    assert proto.receive('{"event":"stop"}') == [CallEnded()]
    assert proto.receive('{"event":"hello"}') == [UnknownEvent("hello", '{"event":"hello"}')]
    [again] = proto.receive(PcmProtocol.start_frame("PC2"))
    assert isinstance(again, InvalidMessage) and again.reason == "start after the stream already started"


def test_bad_binary_frames_are_invalid_not_fatal() -> None:
    proto = started(8000, max_payload_bytes=160)  # 20 ms: 320 bytes of PCM16 at 8 kHz
    [odd] = proto.receive_bytes(b"\x00" * 321)
    assert isinstance(odd, InvalidMessage) and "whole PCM16 samples" in odd.reason
    [big] = proto.receive_bytes(b"\x00" * 322)
    assert isinstance(big, InvalidMessage) and "exceeds the 320-byte cap" in big.reason
    [ok] = proto.receive_bytes(b"\x00" * 320)
    assert isinstance(ok, AudioReceived) and len(ok.payload) == 160


def test_rate_is_checked() -> None:
    with pytest.raises(ValueError):
        PcmProtocol(rate=44100)


def test_receive_never_raises_on_mangled_control_frames() -> None:
    rng = random.Random(11)
    lines = [PcmProtocol.start_frame("PC1", "tok", {"a": "b"}), '{"event":"mark","name":"g1s1"}',
             '{"event":"dtmf","digit":"#"}', '{"event":"stop"}']
    odd: list[object] = [None, 0, 1.5, "", [], {}, True, "x" * 200]
    for _ in range(2000):
        frame = json.loads(rng.choice(lines))
        key = rng.choice(list(frame))
        frame[key] = rng.choice(odd)
        text = json.dumps(frame)
        if rng.random() < 0.3:
            text = text[: rng.randrange(len(text))]
        for proto in (PcmProtocol(), started()):
            events = proto.receive(text)
            assert len(events) == 1
        assert len(PcmProtocol().receive_bytes(rng.randbytes(rng.randrange(0, 700)))) == 1
        assert len(started().receive_bytes(rng.randbytes(rng.randrange(0, 700)))) == 1
