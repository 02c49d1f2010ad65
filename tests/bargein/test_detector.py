"""BargeInDetector: the policy table, row by row."""

from __future__ import annotations

import pytest

from app.bargein.detector import POLICY, Action, BargeInDetector, Interrupt, UserTurnEnded
from app.bargein.vad import SpeechStarted, SpeechStopped, VadEvent

STARTED = SpeechStarted(at=12.34, confidence=0.97, sustained_ms=64.0, peak_dbfs=-21.5)
STOPPED = SpeechStopped(at=15.0, speech_ms=1800.0)


@pytest.mark.parametrize(
    ("event", "agent_speaking", "expected"),
    [
        (STARTED, True, Interrupt(at=12.34, confidence=0.97, sustained_ms=64.0, peak_dbfs=-21.5)),
        (STARTED, False, None),
        (STOPPED, True, UserTurnEnded(at=15.0)),
        (STOPPED, False, UserTurnEnded(at=15.0)),
    ],
    ids=["talk-over-agent", "talk-in-silence", "turn-end-while-agent-talks", "turn-end"],
)
def test_policy(event: VadEvent, agent_speaking: bool, expected: Interrupt | UserTurnEnded | None) -> None:
    assert BargeInDetector().on_event(event, agent_speaking) == expected


def test_the_table_covers_every_event_and_agent_state() -> None:
    assert set(POLICY) == {(t, s) for t in (SpeechStarted, SpeechStopped) for s in (True, False)}


def test_a_policy_can_ignore_speech_over_the_agent() -> None:
    # the shape an uninterruptible segment or a backchannel policy will take
    detector = BargeInDetector({**POLICY, (SpeechStarted, True): Action.IGNORE})
    assert detector.on_event(STARTED, agent_speaking=True) is None


def test_interrupting_on_a_stop_event_is_a_policy_error() -> None:
    detector = BargeInDetector({**POLICY, (SpeechStopped, True): Action.INTERRUPT})
    with pytest.raises(ValueError):
        detector.on_event(STOPPED, agent_speaking=True)


def test_decisions_are_frozen() -> None:
    decision = BargeInDetector().on_event(STARTED, agent_speaking=True)
    with pytest.raises(AttributeError):
        decision.at = 0.0  # type: ignore[union-attr,misc]
