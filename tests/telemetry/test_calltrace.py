"""CallTrace and TurnGaps on scripted event timelines: which spans open and close, when, under what, with what."""

from __future__ import annotations

from typing import Any

from app.call.events import (
    AgentWentOn,
    AudioDropped,
    AudioQueued,
    BargeInDecided,
    BargeInHandled,
    CallClosed,
    CallEvent,
    ClearSent,
    LlmClosed,
    LlmOpened,
    LlmToken,
    MarkSent,
    TtsFinished,
    TtsStarted,
    TurnEnded,
    TurnStarted,
    WireReceived,
)
from app.telemetry.calltrace import CallTrace, SpanChange, SpanClosed, SpanOpened
from app.telemetry.turngap import TurnGaps


def agent_end(t: float, turn_id: int, *, interrupted: bool = False, heard: int | None = None) -> TurnEnded:
    return TurnEnded(t, turn_id, "agent", "Hello there. How can I help?", interrupted,
                     None if heard is None else "Hello there. How can I help?"[:heard], heard, 850.0, 2400.0)


def user_end(t: float, turn_id: int) -> TurnEnded:
    return TurnEnded(t, turn_id, "user", "", False, None, None, None, None)


def run(events: list[CallEvent]) -> tuple[SpanOpened, list[SpanChange]]:
    trace = CallTrace("CA1", "MZ1", "twilio", 10.0)
    start = trace.start()
    changes: list[SpanChange] = []
    for event in events:
        changes.extend(trace.feed(event))
    return start, changes


def opened(changes: list[SpanChange]) -> dict[str, SpanOpened]:
    return {c.key: c for c in changes if isinstance(c, SpanOpened)}


def closed(changes: list[SpanChange]) -> dict[str, SpanClosed]:
    return {c.key: c for c in changes if isinstance(c, SpanClosed)}


CALL: list[CallEvent] = [
    TurnStarted(10.1, 0, "agent"),
    TtsStarted(10.1, 0, "Hello there."), TtsFinished(10.15, 0, 900.0), AudioQueued(10.15, 0, 900.0, "Hello there."),
    MarkSent(10.16, "m1", 0, 20.0), WireReceived(10.2, "{}"),
    agent_end(11.2, 0),
    TurnStarted(12.0, 1, "user"), user_end(13.7, 1),
    TurnStarted(13.7, 2, "agent"), LlmOpened(13.71, 2), LlmToken(13.9, 2, "Sure"), LlmToken(14.0, 2, ","),
    TtsStarted(14.1, 2, "Sure, ..."), TtsFinished(14.2, 2, 3000.0), AudioQueued(14.2, 2, 3000.0, "Sure, ..."),
    AudioQueued(14.5, 2, 2000.0, "More."),
    # a backchannel: paused, then resumed
    BargeInDecided(15.0, "b1", 2, 0.91, 96.0, -21.5), ClearSent(15.001, "b1", 2, 820.0), AudioDropped(15.002, 40),
    BargeInHandled(15.4, "b1", 1.0, 2.0, None, 400.0, heard_audio_ms=820.0, outcome="resumed",
                   reason="backchannel", settled_ms=399.0, resumed_from_ms=640.0),
    # the caller takes the turn: decided after the cut (the immediate policy's order)
    LlmClosed(16.05, 2, "cancelled"), agent_end(16.06, 2, interrupted=True, heard=12),
    TurnStarted(16.06, 3, "user"),
    BargeInDecided(16.0, "b2", 2, 0.97, 120.0, -18.0), ClearSent(16.002, "b2", 2, 1500.0), AudioDropped(16.03, 12),
    BargeInHandled(16.07, "b2", 2.0, 0.5, 40.0, 70.0, cut_word_index=2, cut_char_offset=12, heard_audio_ms=1500.0,
                   outcome="stopped", reason="caller", settled_ms=0.0),
    TtsStarted(16.5, 4, "never finished"),  # of a later turn whose start this stream did not see
    CallClosed(17.0, "stop"),
]


def test_a_call_is_one_tree_timed_by_its_events() -> None:
    start, changes = run(CALL)
    assert start.key == "call" and start.parent is None and start.t == 10.0
    assert start.attributes == {"call_id": "CA1", "stream_id": "MZ1", "provider": "twilio"}
    spans = opened(changes)
    assert {k: (v.name, v.parent, v.t) for k, v in spans.items() if k.startswith("turn:")} == {
        "turn:0": ("agent turn", "call", 10.1), "turn:1": ("user turn", "call", 12.0),
        "turn:2": ("agent turn", "call", 13.7), "turn:3": ("user turn", "call", 16.06),
    }
    ends = closed(changes)
    assert ends["turn:1"].t == 13.7 and ends["turn:0"].t == 11.2
    assert ends["call"].t == 17.0
    assert ends["call"].attributes == {"end_reason": "stop", "turns": 4, "bargeins": 2, "false_barge_ins": 1}
    # Every span opened is closed, the call last.
    assert set(spans) | {"call"} == set(ends) and changes[-1].key == "call"


def test_barge_in_spans_carry_the_tuning_attributes_under_the_turn_they_interrupted() -> None:
    _, changes = run(CALL)
    spans, ends = opened(changes), closed(changes)
    b1, b2 = spans["bargein:b1"], spans["bargein:b2"]
    assert (b1.parent, b1.t, ends["bargein:b1"].t) == ("turn:2", 15.0, 15.4)
    # Decided after its turn's span closed: still that turn's child.
    assert (b2.parent, b2.t, ends["bargein:b2"].t) == ("turn:2", 16.0, 16.07)
    assert b1.attributes == {"barge_in_event_id": "b1", "turn_id": 2, "vad_confidence": 0.91,
                             "vad_duration_ms": 96.0, "energy_dbfs": -21.5}
    assert ends["bargein:b1"].attributes == {
        "heard_turn_id": 2, "audio_chunks_dropped": 40, "clear_sent_ms": 1.0, "tts_flush_ms": 2.0,
        "total_handle_ms": 400.0, "settled_ms": 399.0, "outcome": "resumed", "reason": "backchannel",
        "false_barge_in": True, "heard_audio_ms": 820.0, "resumed_from_ms": 640.0,
        "in_flight_tools_canceled": 0, "in_flight_tools_completed": 0,
    }
    stopped = ends["bargein:b2"].attributes
    assert stopped["false_barge_in"] is False and stopped["outcome"] == "stopped"
    assert stopped["llm_cancel_ms"] == 40.0 and stopped["tts_flush_ms"] == 0.5 and stopped["total_handle_ms"] == 70.0
    assert stopped["agent_utterance_truncated_at"] == 12 and stopped["cut_word_index"] == 2
    assert stopped["audio_chunks_dropped"] == 12


def test_a_caller_turn_without_words_that_the_agent_went_on_over_is_a_false_barge_in() -> None:
    events = CALL[:-1] + [AgentWentOn(16.9, "b2", 3, 2, "no_words", 40), user_end(16.9, 3), CallClosed(17.0, "stop")]
    _, changes = run(events)
    ends = closed(changes)
    assert ends["turn:3"].attributes["went_on"] == "no_words" and ends["turn:3"].attributes["false_barge_in"] is True
    assert "went_on" not in ends["turn:1"].attributes
    assert ends["call"].attributes["false_barge_ins"] == 2  # the resumed one and this one


def test_turns_carry_their_cut_gap_and_first_audio_and_children_hang_under_them() -> None:
    _, changes = run(CALL)
    spans, ends = opened(changes), closed(changes)
    reply = ends["turn:2"].attributes
    assert reply["interrupted"] is True and reply["agent_utterance_truncated_at"] == 12
    assert reply["turn_gap_ms"] == 500.0  # 13.7 (caller's turn ended) -> 14.2 (first audio queued)
    assert reply["first_audio_ms"] == 500.0
    assert "turn_gap_ms" not in ends["turn:0"].attributes  # the greeting answers nobody
    assert ends["turn:0"].attributes["first_audio_ms"] == 50.0
    assert "agent_utterance_truncated_at" not in ends["turn:0"].attributes
    values = [v for c in changes for v in c.attributes.values() if isinstance(v, str)]
    assert not [v for v in values if "Hello" in v or "Sure" in v], values  # never a transcript
    [llm] = [v for k, v in spans.items() if k.startswith("llm:")]
    assert llm.parent == "turn:2" and llm.t == 13.71
    llm_end = ends[llm.key]
    assert llm_end.attributes == {"first_token_ms": 190.0, "reason": "cancelled"} and not llm_end.failed
    tts = [v for k, v in spans.items() if k.startswith("tts:")]
    assert [t.parent for t in tts] == ["turn:0", "turn:2", "call"]
    assert ends[tts[1].key].attributes == {"audio_ms": 3000.0}
    # The sentence still synthesising at the hang-up ends with the call.
    assert ends[tts[2].key].attributes == {"ended_by_call_end": True} and ends[tts[2].key].t == 17.0


def test_a_failed_llm_marks_its_span_and_nothing_follows_the_call_end() -> None:
    trace = CallTrace("CA1", "MZ1", "plivo", 0.0)
    trace.start()
    trace.feed(TurnStarted(1.0, 0, "agent"))
    trace.feed(LlmOpened(1.0, 0))
    [end] = trace.feed(LlmClosed(3.0, 0, "timeout"))
    assert isinstance(end, SpanClosed) and end.failed and end.attributes == {"reason": "timeout"}
    last = trace.feed(CallClosed(4.0, "stop"))
    assert [c.key for c in last] == ["turn:0", "call"]
    assert trace.feed(TurnStarted(5.0, 1, "agent")) == ()


def gaps(events: list[Any]) -> list[tuple[int, float]]:
    tracker = TurnGaps()
    return [g for e in events if (g := tracker.feed(e)) is not None]


def test_turn_gap_pairs_the_callers_turn_end_with_the_answers_first_audio_only() -> None:
    answered = [user_end(5.0, 1), TurnStarted(5.0, 2, "agent"), AudioQueued(5.8, 2, 100.0, "x"),
                AudioQueued(6.0, 2, 100.0, "y")]
    assert gaps(answered) == [(2, 5.8 - 5.0)]
    # The greeting answers nobody; the caller speaking again restarts the wait; a silent answer gives nothing.
    assert gaps([TurnStarted(0.0, 0, "agent"), AudioQueued(0.5, 0, 100.0, "x")]) == []
    assert gaps([user_end(5.0, 1), TurnStarted(5.0, 2, "agent"), TurnStarted(5.2, 3, "user"),
                 AudioQueued(5.8, 2, 100.0, "x")]) == []
    assert gaps([user_end(5.0, 1), TurnStarted(5.0, 2, "agent"), agent_end(5.5, 2),
                 AudioQueued(5.8, 2, 100.0, "x")]) == []
