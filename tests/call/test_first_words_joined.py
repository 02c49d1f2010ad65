"""The caller's first words, split off by a pause, are in the turn a stop opens (STT_JOIN_RESUMED_S).

On the session's fake clock with a recognizer that keeps what it is asked: "I --" (a short sound: the agent pauses
and resumes over it), half a second of quiet, then the rest of the sentence (the caller taking the turn: a stop).
The turn's words must be heard from the first sound's onset, not from the stopping one, or its first words are
lost (the report set's first_words bench: most misses were such split sentences).
"""

from __future__ import annotations

import asyncio

from app.call.events import Transcribed

from .test_interruption_near_miss import ScriptedStt, harness
from .test_session import settle


def _turn_heard_ms(join_s: float) -> tuple[float, list[str]]:
    """How much audio the stopped turn's words were heard from, and the barge-ins' outcomes."""
    stt = ScriptedStt("I'd like to change my booking.")
    h = harness(stt, bargein_second_look=False, near_miss_words=False, stt_join_resumed_s=join_s,
                bargein_escalate_s=0.0)
    heard: list[Transcribed] = []
    h.session.events.subscribe(lambda e: heard.append(e) if isinstance(e, Transcribed) else None, frames=False)

    async def scenario() -> None:
        await h.start()
        h.clock.advance(0.3)
        await h.frames(8, loud=True, probability=0.99)  # 160 ms: "I --", a candidate, the clear
        await h.frames(50, loud=False, probability=0.0)  # 1 s of quiet: short, resumed; more than the pre-roll
        await settle()
        await h.frames(60, loud=True, probability=0.99)  # 1.2 s: the caller takes the turn, a stop
        await h.frames(60, loud=False, probability=0.0)  # 1.2 s of quiet: the turn ends, it is heard
        await settle()

    asyncio.run(scenario())
    record = h.registry.get("CA1")
    assert record is not None
    outcomes = [b.outcome for b in record.bargeins]
    turns = [e for e in heard if e.turn_id is not None]
    assert len(turns) == 1, heard
    return turns[0].audio_ms, outcomes


def test_the_turn_a_stop_opens_is_heard_from_the_short_utterance_resumed_just_before() -> None:
    joined, outcomes = _turn_heard_ms(2.0)
    alone, outcomes_alone = _turn_heard_ms(0.0)
    assert outcomes == outcomes_alone == ["resumed", "stopped"]
    # From the first sound's onset (less the pre-roll), not from 0.5 s before the stopping one: the 160 ms sound
    # and the 1 s of quiet, less the pre-roll that reached into the quiet anyway
    assert joined - alone >= 600.0, (joined, alone)


def test_an_utterance_resumed_long_before_is_not_joined() -> None:
    # resumed about 0.25 s into the quiet, the next onset 0.75 s later: past a 0.3 s join, heard as without it
    late, _ = _turn_heard_ms(0.3)
    alone, _ = _turn_heard_ms(0.0)
    assert late == alone
