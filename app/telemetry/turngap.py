"""The turn gap: how long the caller waits, once their turn has ended, for the agent's answer to start.

Theory of operation. The gap is read off the call's events, nothing else: the caller's `TurnEnded`, which says
when their speech ended (`speech_end_t`: the last speech before the turn-end silence, or the last key of a turn
of keys), then the `TurnStarted` of the agent turn that answers it, then that turn's first `AudioQueued` (its
first synthesised sentence handed to the outbox, which writes it at once: the first audio on the wire follows
within a pacing tick). The gap is the time from the end of speech to that audio: the turn-end silence, the
recognizer's words, the LLM's first sentence and its synthesis (the network to the edge is the bench's to add).

Pairs that do not answer each other give no gap: the caller speaking again before the agent's audio, an agent
turn that ends with no audio, an agent turn that does not follow a caller's turn (the greeting).

`TurnGapMeter` is the Prometheus side: a CallDeps observer that subscribes every call without the per-frame
events (so it does not turn them on) and feeds `bargein_turn_gap_seconds`. It sees the turn events when they are
emitted, and the session and the turn emit them for every call (they are per turn, not per frame).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from app.call.events import AudioQueued, CallEvent, TurnEnded, TurnStarted

if TYPE_CHECKING:
    from app.call.session import CallSession


class TurnGaps:
    """One call's turn gaps: `feed` every event; it returns (agent turn id, gap in seconds) when one closes."""

    __slots__ = ("_caller_ended", "_answer")

    def __init__(self) -> None:
        self._caller_ended: float | None = None  # the caller's last turn ended here, and nothing answered it yet
        self._answer: int | None = None  # the agent turn answering it, until its first audio

    def feed(self, event: CallEvent) -> tuple[int, float] | None:
        if isinstance(event, AudioQueued):
            if event.turn_id == self._answer and self._caller_ended is not None:
                gap = event.t - self._caller_ended
                self._caller_ended = self._answer = None
                return event.turn_id, gap
        elif isinstance(event, TurnEnded):
            if event.role == "user":  # from the caller's last word, when the session knows it
                self._caller_ended = event.t if event.speech_end_t is None else event.speech_end_t
                self._answer = None
            elif event.turn_id == self._answer:  # the answer ended without a sound: no gap to tell
                self._caller_ended = self._answer = None
        elif isinstance(event, TurnStarted):
            if event.role == "agent" and self._caller_ended is not None and self._answer is None:
                self._answer = event.turn_id
            elif event.role == "user":  # the caller again, before any answer: the next turn end restarts it
                self._caller_ended = self._answer = None
        return None


class TurnGapMeter:
    """CallDeps observer: every call's turn gaps into a histogram (`observe` takes seconds)."""

    def __init__(self, observe: Callable[[float], None]) -> None:
        self._observe = observe

    def observe(self, session: CallSession) -> None:
        gaps = TurnGaps()
        record = self._observe

        def on_event(event: CallEvent) -> None:
            closed = gaps.feed(event)
            if closed is not None:
                record(closed[1])

        session.events.subscribe(on_event, frames=False)
