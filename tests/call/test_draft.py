"""The held reply's event gate (app/call/draft.py): nothing reaches the call until release, then all of it."""

from __future__ import annotations

from app.call.draft import DRAFT_TURN_ID, EventGate
from app.call.events import AudioQueued, CallEvent, CallEvents, LlmOpened, LlmToken


def test_a_held_replys_events_reach_the_call_only_when_released_with_its_real_turn_id() -> None:
    call = CallEvents()
    seen: list[CallEvent] = []
    call.subscribe(seen.append)
    gate = EventGate(call)
    gate.events.emit(LlmOpened(1.0, DRAFT_TURN_ID))
    gate.events.emit(LlmToken(1.1, DRAFT_TURN_ID, "We are "))
    gate.events.emit(AudioQueued(1.2, DRAFT_TURN_ID, 500.0, "We are open."))
    assert seen == [] and not gate.released
    assert gate.release(7, now=2.0) == 3
    # In order, as turn 7's; the audio counts as queued at the release (when it goes to the outbox).
    assert seen == [LlmOpened(1.0, 7), LlmToken(1.1, 7, "We are "), AudioQueued(2.0, 7, 500.0, "We are open.")]
    gate.events.emit(AudioQueued(2.5, 7, 300.0, "Closed Sundays."))  # after the release: straight through
    assert seen[-1] == AudioQueued(2.5, 7, 300.0, "Closed Sundays.")


def test_a_gate_never_released_tells_the_call_nothing() -> None:
    call = CallEvents()
    seen: list[CallEvent] = []
    call.subscribe(seen.append, frames=False)
    gate = EventGate(call)
    gate.events.emit(LlmOpened(1.0, DRAFT_TURN_ID))
    gate.events.emit(AudioQueued(1.2, DRAFT_TURN_ID, 500.0, "Draft."))
    del gate
    assert seen == []


def test_per_frame_events_are_kept_only_when_the_call_wants_them() -> None:
    quiet = CallEvents()
    quiet.subscribe(lambda e: None, frames=False)
    assert not EventGate(quiet).events.active  # the turn then skips building its LLM tokens
    recorded = CallEvents()
    recorded.subscribe(lambda e: None)
    assert EventGate(recorded).events.active
