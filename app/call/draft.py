"""A reply prepared before the caller's turn is over (TURN_POLICY=progressive), held until it is.

Theory of operation
-------------------
Under `progressive` turn taking (app/call/turn_taking.py) the session starts the agent's reply at a short
pause in the caller's speech: an `AgentTurn` that is held from the start (it streams the LLM and synthesises,
but queues no audio) and that speaks to a private event stream. Nothing of it exists for the call yet: no
record turn, no event on the call's stream, no audio on the wire. When the turn is confirmed over, the session
gives the reply its record turn and releases it: `EventGate.release` hands the events it kept to the call's
stream under the real turn id (the audio counted as queued at the release, which is when it goes to the
outbox), and passes later ones straight through; the turn's audio is then queued from its start. When the
caller goes on instead, the turn is cancelled and its gate is dropped: its events never reach anyone, so a
recording, the call record and the metrics never see a reply the caller did not get.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from app.call.events import AudioQueued, CallEvent, CallEvents
from app.call.hearing import Heard
from app.call.turn import AgentTurn
from app.transcript import Turn

# The id a held reply's events carry until it has a record turn (record ids start at 1).
DRAFT_TURN_ID = -1


class EventGate:
    """Keeps a held reply's events until `release`, then forwards them (and every later one) to `target`."""

    def __init__(self, target: CallEvents) -> None:
        self.events = CallEvents()  # the held reply's own stream: give it to the AgentTurn
        # Per-frame events too (LLM tokens) when the call's stream wants them, so a recording is complete.
        self.events.subscribe(self._on_event, frames=target.active)
        self._target = target
        self._kept: list[CallEvent] | None = []

    def _on_event(self, event: CallEvent) -> None:
        if self._kept is None:
            self._target.emit(event)
        else:
            self._kept.append(event)

    @property
    def released(self) -> bool:
        return self._kept is None

    def release(self, turn_id: int, now: float) -> int:
        """Forward the kept events as `turn_id`'s (audio queued at `now`); returns how many there were."""
        kept, self._kept = self._kept or [], None
        for event in kept:
            if getattr(event, "turn_id", None) == DRAFT_TURN_ID:
                event = dataclasses.replace(event, turn_id=turn_id)  # type: ignore[call-arg]
            if isinstance(event, AudioQueued):
                event = dataclasses.replace(event, t=now)
            self._target.emit(event)
        return len(kept)


@dataclass(slots=True)
class Draft:
    """The held reply to the caller's words so far, and what it answers."""

    turn: AgentTurn | None  # None: words only (a tool call was in flight: its result belongs in the request)
    gate: EventGate | None
    heard: Heard  # the words of the turn up to `speech_end`
    speech_end: float  # the caller's last speech before the pause it was drafted in
    fallbacks: list[str] = field(default_factory=list)  # provider failures while held (counted on release)
    record: Turn | None = None  # the agent's record turn, once released
