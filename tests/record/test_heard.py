"""What the caller heard, rebuilt from wire frames: playback in order, cut at each clear, for both providers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from app.record.heard import SAMPLE_RATE, agent_heard, caller_said

OUT = {
    "twilio": (lambda p: {"event": "media", "streamSid": "MZ1", "media": {"payload": p}},
               {"event": "clear", "streamSid": "MZ1"}),
    "plivo": (lambda p: {"event": "playAudio", "streamId": "s1", "media": {"contentType": "audio/x-mulaw",
                                                                         "sampleRate": 8000, "payload": p}},
              {"event": "clearAudio", "streamId": "s1"}),
}


def out_media(provider: str, t: float, ms: int, byte: int = 0x10) -> dict[str, Any]:
    payload = base64.b64encode(bytes([byte]) * (ms * 8)).decode()
    return {"type": "ws_out", "t": t, "text": json.dumps(OUT[provider][0](payload))}


def out_clear(provider: str, t: float) -> dict[str, Any]:
    return {"type": "ws_out", "t": t, "text": json.dumps(OUT[provider][1])}


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
def test_audio_plays_back_to_back_and_a_clear_cuts_the_chunk_playing_and_drops_the_queue(provider: str) -> None:
    lines = [
        # 1.0 s: three 160 ms chunks sent at once (the lead), then a mark that does not matter.
        out_media(provider, 1.0, 160), out_media(provider, 1.0, 160), out_media(provider, 1.0, 160),
        {"type": "ws_out", "t": 1.0, "text": '{"event":"mark","streamSid":"MZ1","mark":{"name":"m1"}}'},
        out_clear(provider, 1.2),  # 40 ms into the second chunk
        out_media(provider, 2.0, 160),  # after a clear, audio starts when it arrives
    ]
    heard = agent_heard(lines)
    assert [(round(c.start_s, 3), round(c.end_s, 3), c.cut) for c in heard] == [
        (1.0, 1.16, False), (1.16, 1.2, True), (2.0, 2.16, False)]
    assert len(heard[1].ulaw) == int(0.04 * SAMPLE_RATE)


def test_a_chunk_that_arrives_after_the_queue_ran_dry_starts_when_it_arrives() -> None:
    heard = agent_heard([out_media("twilio", 0.5, 100), out_media("twilio", 0.55, 100), out_media("twilio", 3.0, 20)])
    assert [(c.sent_s, round(c.start_s, 3)) for c in heard] == [(0.5, 0.5), (0.55, 0.6), (3.0, 3.0)]


def test_the_end_of_a_stream_drops_what_was_still_queued() -> None:
    lines = [out_media("twilio", 0.0, 1000), {"type": "call_end", "t": 0.25, "reason": "stop"},
             {"type": "stream", "t": 5.0, "stream_id": "MZ2"}, out_media("twilio", 5.1, 20)]
    heard = agent_heard(lines)
    assert [(c.start_s, round(c.end_s, 6), c.cut) for c in heard] == [(0.0, 0.25, True), (5.1, 5.12, False)]


def test_caller_frames_end_at_their_arrival_and_never_overlap() -> None:
    def frame(t: float) -> dict[str, Any]:
        payload = base64.b64encode(b"\x7f" * 160).decode()
        return {"type": "ws_in", "t": t, "text": json.dumps({"event": "media", "media": {"payload": payload}})}

    lines = [{"type": "ws_in", "t": 0.01, "text": '{"event":"connected"}'},
             frame(0.1), frame(0.12),
             frame(0.2), frame(0.2005), frame(0.201),  # a gap (frames missing), then a burst
             frame(0.2625)]  # 2.5 ms late: jitter, laid back to back
    starts = [round(f.start_s, 4) for f in caller_said(lines)]
    assert starts == [0.08, 0.1, 0.18, 0.2, 0.22, 0.24]
