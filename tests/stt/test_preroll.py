"""The pre-roll ring buffer: what it keeps, and what it replays into a new session."""

from __future__ import annotations

import pytest

from providers.stt.preroll import PreRoll

FRAME = b"\x7f" * 160  # 20 ms of mu-law


class Recorder:
    def __init__(self) -> None:
        self.fed: list[float] = []

    def feed(self, audio: bytes, at_ms: float) -> None:
        self.fed.append(at_ms)


def test_keeps_the_last_capacity_of_audio() -> None:
    pre = PreRoll(capacity_ms=1000.0)
    for i in range(200):  # 4 s
        pre.push(FRAME, 20.0 * i)
    assert pre.oldest_ms == 3000.0  # frames 3000-3980 ms: exactly 1 s
    assert len(pre.since(0.0)) == 50


def test_replay_starts_at_the_frame_holding_from_ms() -> None:
    pre = PreRoll(capacity_ms=1500.0)
    for i in range(100):
        pre.push(FRAME, 20.0 * i)
    session = Recorder()
    assert pre.replay(session, from_ms=1710.0) == 15
    assert session.fed[0] == 1700.0 and session.fed[-1] == 1980.0
    assert pre.replay(Recorder(), from_ms=5000.0) == 0
    pre.clear()
    assert pre.oldest_ms is None and pre.since(0.0) == []


def test_pcm16_frames_are_timed_by_their_length() -> None:
    pre = PreRoll(capacity_ms=100.0, encoding="pcm16")
    for i in range(10):
        pre.push(b"\x00\x00" * 160, 20.0 * i)
    assert pre.oldest_ms == 100.0
    with pytest.raises(ValueError):
        PreRoll(capacity_ms=0)
