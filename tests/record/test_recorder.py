"""The recorder fed events directly (no server): the file it writes, reconnects, caps, write failures, and what
recording costs: microseconds per frame on the loop and megabytes per 5-minute call."""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import pytest

from app.audio import pcm16_to_ulaw
from app.call.events import (
    AudioQueued,
    CallClosed,
    CallEvents,
    ClearSent,
    LlmToken,
    MarkAcked,
    MarkSent,
    TurnEnded,
    VadChanged,
    WireReceived,
    WireSent,
)
from app.clock import FakeClock
from app.offline.corpus import load_clip, pink_noise, read_manifest
from app.record.format import decompress, read_recording, recording_path
from app.record.recorder import Recorder
from app.settings import Settings
from app.transcript import CallRecord
from providers.telephony.plivo import PlivoProtocol
from providers.telephony.twilio import TwilioProtocol
from tests.conftest import make_settings

TOKEN = "v1.stream-token-for-the-recorder-tests"
SECRETS = {"twilio_auth_token": "twilio-secret-auth-token", "llm_api_key": "sk-llm-api-key-secret",
           "admin_token": "admin-secret-token"}


@dataclass
class Deps:
    clock: FakeClock
    settings: Settings
    wall: Any = field(default=lambda: 1_764_472_800.0)


@dataclass
class Session:
    """What the recorder reads of a CallSession (app/call/session.py), and its real event stream."""

    record: CallRecord
    deps: Deps
    protocol: Any
    stream_id: str
    opened_at: float
    events: CallEvents = field(default_factory=CallEvents)


def session(record: CallRecord, clock: FakeClock, settings: Settings, stream_id: str = "MZ1") -> Session:
    protocol = TwilioProtocol() if record.provider == "twilio" else PlivoProtocol()
    return Session(record, Deps(clock, settings), protocol, stream_id, clock.now())


def start_frame(call_id: str, stream_id: str) -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": stream_id, "start": {
        "streamSid": stream_id, "callSid": call_id, "accountSid": "AC1", "tracks": ["inbound"],
        "customParameters": {"token": TOKEN}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                              "channels": 1}}}, separators=(",", ":"))


def media_in(payload: bytes, seq: int, stream_id: str = "MZ1") -> str:
    b64 = base64.b64encode(payload).decode()
    return (f'{{"event":"media","sequenceNumber":"{seq}","streamSid":"{stream_id}","media":{{"track":"inbound",'
            f'"chunk":"{seq}","timestamp":"{seq * 20}","payload":"{b64}"}}}}')


def media_out(payload: bytes, stream_id: str = "MZ1") -> str:
    return TwilioProtocolOut(stream_id).media(payload)


class TwilioProtocolOut(TwilioProtocol):
    def __init__(self, stream_id: str) -> None:
        super().__init__()
        self.receive(start_frame("CA1", stream_id))


def recorder_for(tmp_path: Path, **kwargs: Any) -> tuple[Recorder, Settings]:
    settings = make_settings(record_dir=str(tmp_path), **{**SECRETS, **kwargs.pop("settings", {})})
    recorder = Recorder(tmp_path, settings, build="test", flush_s=0.05, **kwargs)
    recorder.start()
    return recorder, settings


def play_short_call(recorder: Recorder, settings: Settings, record: CallRecord, clock: FakeClock,
                    stream_id: str = "MZ1") -> Session:
    s = session(record, clock, settings, stream_id)
    recorder.observe(cast(Any, s))
    t = s.opened_at
    emit = s.events.emit
    emit(WireReceived(t + 0.001, '{"event":"connected","protocol":"Call","version":"1.0.0"}'))
    emit(WireReceived(t + 0.002, start_frame(record.call_id, stream_id)))
    emit(WireSent(t + 0.010, media_out(b"\x10" * 1280, stream_id)))
    emit(MarkSent(t + 0.010, "g1-m1", 1, 160.0))
    emit(WireReceived(t + 0.020, media_in(b"\xff" * 160, 2, stream_id)))
    emit(LlmToken(t + 0.021, 1, "Sunflower"))
    emit(AudioQueued(t + 0.022, 1, 160.0, "Sunflower"))
    emit(VadChanged(t + 0.040, "speaking", "starting", 0.97, -20.0))
    emit(ClearSent(t + 0.041, "b1", 1, 31.0))
    emit(WireSent(t + 0.041, f'{{"event":"clear","streamSid":"{stream_id}"}}'))
    emit(TurnEnded(t + 0.05, 1, "agent", "Sunflower", True, "Su", 2, 31.0, 160.0))
    record.new_turn("agent", 0.0).text = "Sunflower"
    emit(CallClosed(t + 0.06, "stop"))
    return s


def test_a_call_is_one_file_header_events_and_record_with_no_secret(tmp_path: Path) -> None:
    recorder, settings = recorder_for(tmp_path)
    clock = FakeClock(500.0)
    record = CallRecord("CA1", "twilio", 0.0)
    play_short_call(recorder, settings, record, clock)
    recorder.stop()

    path = recording_path(tmp_path, "CA1")
    rec = read_recording(path)
    h = rec.header
    assert (h["call_id"], h["stream_id"], h["provider"], h["build"], h["redacted"]) == ("CA1", "MZ1", "twilio",
                                                                                          "test", [])
    assert h["started_at"] == 1_764_472_800.0
    assert h["settings"]["vad_silero_threshold"] == settings.vad_silero_threshold
    assert "twilio_auth_token" not in h["settings"] and "twilio_auth_token" in h["secrets_omitted"]
    types = [line["type"] for line in rec.lines]
    assert types == ["ws_in", "ws_in", "ws_out", "mark_sent", "ws_in", "llm_token", "audio_queued", "vad", "clear",
                     "ws_out", "turn_end", "call_end"]
    assert [line["t"] for line in rec.lines][:3] == [0.001, 0.002, 0.01]
    assert rec.lines[2]["text"] == media_out(b"\x10" * 1280)  # the exact frame text
    assert json.loads(rec.lines[1]["text"])["start"]["customParameters"] == {"token": "[redacted]"}
    assert rec.record is not None and rec.record["call_id"] == "CA1" and not rec.truncated
    raw = decompress(path.read_bytes()).decode()
    for secret in [TOKEN, *SECRETS.values()]:
        assert secret not in raw


def test_a_reconnect_appends_a_stream_line_on_the_same_clock(tmp_path: Path) -> None:
    recorder, settings = recorder_for(tmp_path)
    clock = FakeClock(500.0)
    record = CallRecord("CA1", "twilio", 0.0)
    play_short_call(recorder, settings, record, clock)
    time.sleep(0.2)  # the writer closes the file after the first stream
    clock._now = 503.0  # FakeClock: three seconds later
    play_short_call(recorder, settings, record, clock, stream_id="MZ2")
    recorder.stop()

    assert [p.name for p in tmp_path.iterdir()] == ["CA1.jsonl.zst"]
    rec = read_recording(recording_path(tmp_path, "CA1"))
    [stream] = list(rec.of_type("stream"))
    assert stream == {"type": "stream", "t": 3.0, "stream_id": "MZ2"}
    assert [line["t"] for line in rec.lines if line["type"] == "call_end"] == [0.06, 3.06]
    assert rec.header["stream_id"] == "MZ1"


def test_a_new_call_with_a_known_id_never_overwrites_the_old_file(tmp_path: Path) -> None:
    recorder, settings = recorder_for(tmp_path, settings={"call_records_max": 1})
    clock = FakeClock(500.0)
    play_short_call(recorder, settings, CallRecord("CA1", "twilio", 0.0), clock)
    time.sleep(0.2)
    # Another record object for the same id: the registry forgot the call (or the server restarted).
    play_short_call(recorder, settings, CallRecord("CA1", "twilio", 0.0), clock)
    recorder.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CA1.1.jsonl.zst", "CA1.jsonl.zst"]
    for path in tmp_path.iterdir():
        assert not list(read_recording(path).of_type("stream"))


def test_the_recorder_forgets_calls_as_the_registry_does(tmp_path: Path) -> None:
    recorder, settings = recorder_for(tmp_path, settings={"call_records_max": 2})
    clock = FakeClock(500.0)
    records = [CallRecord(f"CA{i}", "twilio", 0.0) for i in range(4)]
    for record in records:
        play_short_call(recorder, settings, record, clock)
    time.sleep(0.2)
    # CA0 fell out (only two ended calls are kept): its "reconnect" is a new file; CA3's is a reconnect.
    play_short_call(recorder, settings, records[0], clock, stream_id="MZ9")
    play_short_call(recorder, settings, records[3], clock, stream_id="MZ9")
    recorder.stop()
    assert (tmp_path / "CA0.1.jsonl.zst").exists()
    assert len(list(read_recording(tmp_path / "CA3.jsonl.zst").of_type("stream"))) == 1


def test_redaction_of_audio_and_text(tmp_path: Path) -> None:
    recorder, settings = recorder_for(tmp_path, redact=frozenset({"audio", "text"}))
    clock = FakeClock(500.0)
    play_short_call(recorder, settings, CallRecord("CA1", "twilio", 0.0), clock)
    recorder.stop()
    rec = read_recording(recording_path(tmp_path, "CA1"))
    assert rec.header["redacted"] == ["audio", "text"]
    frames = [json.loads(line["text"]) for line in rec.of_type("ws_in", "ws_out")]
    assert [f["media"]["payload"] for f in frames if f["event"] == "media"] == ["", ""]
    assert [line["text"] for line in rec.of_type("llm_token", "audio_queued", "turn_end")] == ["", "", ""]
    [turn_end] = rec.of_type("turn_end")
    assert turn_end["heard_text"] == "" and turn_end["heard_chars"] == 2
    assert rec.record is not None and [t["text"] for t in rec.record["turns"]] == [""]
    assert b"Sunflower" not in decompress(recording_path(tmp_path, "CA1").read_bytes())


def test_a_full_disk_stops_the_recording_once_and_the_call_goes_on(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    def full_disk(path: Path) -> BinaryIO:
        return open("/dev/full", "wb", buffering=0)  # every write fails with ENOSPC

    recorder, settings = recorder_for(tmp_path, open_file=full_disk)
    clock = FakeClock(500.0)
    with caplog.at_level(logging.WARNING, logger="app.record.recorder"):
        s = play_short_call(recorder, settings, CallRecord("CA1", "twilio", 0.0), clock, stream_id="MZ1")
        time.sleep(0.2)
        for i in range(100):  # the call goes on; nothing more is queued for it
            s.events.emit(WireReceived(501.0 + i * 0.02, media_in(b"\xff" * 160, i)))
        recorder.stop()
    warnings = [r for r in caplog.records if r.name == "app.record.recorder"]
    assert len(warnings) == 1
    assert "No space left on device" in warnings[0].getMessage()
    assert warnings[0].__dict__["call_id"] == "CA1"


def test_record_max_mb_caps_the_file_and_the_call_record_still_ends_it(tmp_path: Path) -> None:
    recorder, settings = recorder_for(tmp_path, max_bytes=20_000)
    clock = FakeClock(500.0)
    record = CallRecord("CA1", "twilio", 0.0)
    s = session(record, clock, settings)
    recorder.observe(cast(Any, s))
    noise = pcm16_to_ulaw(pink_noise(60.0, -30.0, seed=3))
    for i in range(3000):  # 60 s of noisy caller frames, faster than real time
        s.events.emit(WireReceived(500.0 + i * 0.02, media_in(noise[i * 160:(i + 1) * 160], i)))
        if i % 500 == 0:
            time.sleep(0.06)
    s.events.emit(CallClosed(560.0, "stop"))
    recorder.stop()
    path = recording_path(tmp_path, "CA1")
    rec = read_recording(path)
    [capped] = rec.of_type("capped")
    assert [line["type"] for line in rec.lines[-2:]] == ["capped", "call_end"]
    assert 0 < capped["t"] < 60 and capped["max_mb"] == round(20_000 / 1048576, 3)
    assert rec.record is not None and rec.record["call_id"] == "CA1"
    assert path.stat().st_size <= 20_000 + 2_000  # the cap, plus the lines that say so and end the call


# -- what recording costs ---------------------------------------------------------------------------------
def five_minute_call(emit: Any, t0: float) -> int:
    """Caller frames every 20 ms (speech over line noise); the agent talks half the time, in 160 ms chunks
    with a mark each, as the outbox sends them. Returns the frames emitted."""
    speech = np.concatenate([load_clip(c) for c in read_manifest() if c.category == "read"])
    line_noise = pink_noise(300.0, -55.0, seed=1)
    caller = line_noise.copy()
    caller[: min(len(caller), len(speech))] += speech[: len(caller)] // 2
    caller_ulaw = pcm16_to_ulaw(caller)
    agent_ulaw = pcm16_to_ulaw(speech)
    out = TwilioProtocolOut("MZ1")
    frames = 0
    agent_pos = 0
    mark = 0
    for i in range(300 * 50):
        t = t0 + (i + 1) * 0.02
        emit(WireReceived(t, media_in(caller_ulaw[i * 160:(i + 1) * 160], i + 2)))
        frames += 1
        talking = (i // 500) % 2 == 0  # 10 s on, 10 s off
        if talking and i % 8 == 0:
            chunk = agent_ulaw[agent_pos:agent_pos + 1280]
            agent_pos = (agent_pos + 1280) % (len(agent_ulaw) - 1280)
            emit(WireSent(t, out.media(chunk)))
            mark += 1
            emit(WireSent(t, out.mark(f"g1-m{mark}")))
            emit(MarkSent(t, f"g1-m{mark}", 1, 160.0))
            emit(WireReceived(t + 0.3, f'{{"event":"mark","sequenceNumber":"{i}","streamSid":"MZ1","mark":'
                                       f'{{"name":"g1-m{mark}"}}}}'))
            emit(MarkAcked(t + 0.3, f"g1-m{mark}", True))
            frames += 3
    return frames


def test_a_five_minute_call_is_under_6_mb_and_costs_microseconds_per_frame(tmp_path: Path) -> None:
    settings = make_settings(record_dir=str(tmp_path))
    recorder = Recorder(tmp_path, settings)  # the writer starts after the loop's share is timed
    s = session(CallRecord("CA1", "twilio", 0.0), FakeClock(0.0), settings)
    recorder.observe(cast(Any, s))
    events: list[Any] = []
    five_minute_call(events.append, 0.0)
    [subscriber] = s.events._subscribers
    media = [e for e in events if isinstance(e, WireReceived) and '"media"' in e.text]
    started = time.perf_counter()
    for event in events:
        subscriber(event)
    per_event_us = (time.perf_counter() - started) / len(events) * 1e6
    s.events.emit(CallClosed(301.0, "stop"))
    recorder.start()
    recorder.stop()
    size = recording_path(tmp_path, "CA1").stat().st_size

    timing = Recorder(tmp_path / "timing", settings)
    s2 = session(CallRecord("CA2", "twilio", 0.0), FakeClock(0.0), settings)
    timing.observe(cast(Any, s2))
    [subscriber] = s2.events._subscribers
    started = time.perf_counter()
    for event in media:
        subscriber(event)
    media_us = (time.perf_counter() - started) / len(media) * 1e6
    print(f"\n5-minute call: {size / 1e6:.2f} MB in {len(events)} events; on the loop {per_event_us:.2f} us per "
          f"event, {media_us:.2f} us per caller media frame")
    assert size <= 6_000_000
    assert media_us < 20.0  # measured ~2 us; generous for a loaded CI machine
