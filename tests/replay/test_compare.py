"""Outcome and diff, on literal event lines: which decisions moved, appeared or vanished, in plain words."""

from __future__ import annotations

from typing import Any

from app.replay.compare import EXACT, REALTIME, diff, settings_diff, word_distance
from app.replay.outcome import outcome_of


def call(barge_at: float | None, heard: str, *, end: str = "stop") -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = [{"type": "turn_start", "t": 0.001, "turn_id": 1, "role": "agent"}]
    if barge_at is not None:
        lines += [
            {"type": "turn_start", "t": barge_at, "turn_id": 2, "role": "user"},
            {"type": "turn_end", "t": barge_at, "turn_id": 1, "role": "agent", "text": heard, "interrupted": True,
             "heard_text": heard, "heard_chars": len(heard), "heard_audio_ms": 900.0, "audio_ms": 4000.0},
            {"type": "barge_in", "t": barge_at, "id": "x", "turn_id": 1, "confidence": 0.99, "sustained_ms": 64.0,
             "peak_dbfs": -12.0},
            {"type": "clear", "t": barge_at + 0.0005, "barge_in_id": "x", "heard_turn_id": 1, "heard_audio_ms": 900.0},
        ]
    else:
        lines.append({"type": "turn_end", "t": 4.0, "turn_id": 1, "role": "agent", "text": heard,
                      "interrupted": False, "heard_text": None, "heard_chars": None, "heard_audio_ms": None,
                      "audio_ms": 4000.0})
    lines.append({"type": "call_end", "t": 5.0, "reason": end})
    return lines


def test_outcome_reads_decisions() -> None:
    o = outcome_of(call(3.48, "Sure, I can"))
    assert [(b.t, b.turn_id) for b in o.bargeins] == [(3.48, 1)]
    assert o.clears == [3.4805]
    assert o.heard[0].heard_text == "Sure, I can" and o.heard[0].interrupted
    assert [(t.turn_id, t.role) for t in o.turns] == [(1, "agent"), (2, "user")]
    assert o.end_reason == "stop"


def test_identical_calls_have_no_difference_exactly() -> None:
    assert not diff(outcome_of(call(3.48, "Sure")), outcome_of(call(3.48, "Sure")), EXACT, {}, {}).failed


def test_a_moved_barge_in_is_described_with_its_times() -> None:
    d = diff(outcome_of(call(3.48, "Sure, I can")), outcome_of(call(3.52, "Sure, I")), REALTIME, {}, {})
    text = d.render()
    assert "barge-in at 3.480 s (agent turn 1): now at 3.520 s (+40 ms)" in text
    # one word apart is within the real-time tolerance for heard text
    assert "heard" not in text


def test_exact_tolerance_reports_a_one_character_cut_difference() -> None:
    d = diff(outcome_of(call(3.48, "Sure, I can")), outcome_of(call(3.48, "Sure, I ca")), EXACT, {}, {})
    assert d.decisions == ["agent turn 1 heard 'Sure, I can' (char 11) -> 'Sure, I ca' (char 10)"]


def test_a_vanished_and_an_appeared_barge_in() -> None:
    gone = diff(outcome_of(call(3.48, "Sure")), outcome_of(call(None, "Sure, I can help.")), REALTIME, {}, {})
    assert "barge-in at 3.480 s (agent turn 1): gone (the agent was not interrupted)" in gone.decisions
    assert "agent turn 1 was interrupted: now plays to the end" in gone.decisions
    new = diff(outcome_of(call(None, "Sure, I can help.")), outcome_of(call(2.0, "Sure")), REALTIME, {}, {})
    assert "new barge-in at 2.000 s (agent turn 1): the agent is now interrupted there" in new.decisions


def test_within_one_frame_is_the_same_in_real_time_but_not_exactly() -> None:
    a, b = outcome_of(call(3.480, "Sure")), outcome_of(call(3.495, "Sure"))
    assert not diff(a, b, REALTIME, {}, {}).failed
    assert diff(a, b, EXACT, {}, {}).failed


def test_settings_diff_names_only_settings_that_shape_decisions() -> None:
    recorded = {"bargein_min_speech_ms": 64, "port": 8080, "vad_silero_threshold": 0.9}
    current = {"bargein_min_speech_ms": 200, "vad_silero_threshold": 0.9}
    assert settings_diff(recorded, current) == ["BARGEIN_MIN_SPEECH_MS: recorded 64, now 200"]


def test_word_distance() -> None:
    assert word_distance("Sure, I can", "Sure, I ca") == 1
    assert word_distance("Sure, I can", "Sure, I can") == 0
    assert word_distance("Hello there friend", "Hello") == 2
