"""Barge-in policy: what the agent does about the caller's speech events.

Theory of operation
-------------------
`CallVad` says when the caller speaks; this module decides what that means for the conversation, given
whether the agent is talking at that moment. It holds no state and reads no clock: the event carries its
time, and the caller of `on_event` says whether agent audio is playing (the playback ledger knows).

    event           agent speaking   decision
    SpeechStarted   yes              Interrupt: stop the agent now (clear the queued audio)
    SpeechStarted   no               nothing: the caller is taking a turn the agent already gave up
    SpeechStopped   yes / no         UserTurnEnded: the caller finished; the agent may answer

The table is the whole policy. The roadmap's backchannel policies ("mm-hmm" keeps the agent talking,
`confirm` / `resume`) become new actions and new rows here, not conditions spread through the session.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from app.bargein.vad import SpeechStarted, SpeechStopped, VadEvent


@dataclass(frozen=True)
class Interrupt:
    """Stop the agent: the caller talked over it."""

    at: float
    confidence: float
    sustained_ms: float
    peak_dbfs: float


@dataclass(frozen=True)
class UserTurnEnded:
    """The caller's turn is over."""

    at: float


Decision = Interrupt | UserTurnEnded


class Action(Enum):
    IGNORE = "ignore"
    INTERRUPT = "interrupt"
    END_TURN = "end_turn"


PolicyKey = tuple[type[SpeechStarted] | type[SpeechStopped], bool]  # (event type, agent speaking)

POLICY: dict[PolicyKey, Action] = {
    (SpeechStarted, True): Action.INTERRUPT,
    (SpeechStarted, False): Action.IGNORE,
    (SpeechStopped, True): Action.END_TURN,
    (SpeechStopped, False): Action.END_TURN,
}


class BargeInDetector:
    """Maps the caller's speech events to Interrupt / UserTurnEnded through POLICY."""

    def __init__(self, policy: dict[PolicyKey, Action] | None = None) -> None:
        self.policy = dict(POLICY if policy is None else policy)

    def on_event(self, event: VadEvent, agent_speaking: bool) -> Decision | None:
        action = self.policy[(type(event), agent_speaking)]
        if action is Action.IGNORE:
            return None
        if action is Action.INTERRUPT:
            if not isinstance(event, SpeechStarted):
                raise ValueError(
                    f"policy interrupts on {type(event).__name__}, which carries no speech onset"
                )
            return Interrupt(
                at=event.at,
                confidence=event.confidence,
                sustained_ms=event.sustained_ms,
                peak_dbfs=event.peak_dbfs,
            )
        return UserTurnEnded(at=event.at)
