"""A caller who pauses mid-sentence and goes on over the agent's answer is heard as one turn (STT_JOIN_TURN_S).

On the session's fake clock with a recognizer that keeps what it is asked: the caller stops the greeting with
"I'd like to..." (1.2 s), pauses 0.9 s (the turn ends on silence, its words are heard, the agent starts its
answer), then says the rest over that answer (a stop). The second turn must be heard from the first one's
start, the first one marked as joined into it and left out of the LLM's history; with the setting off, each
piece is heard alone.
"""

from __future__ import annotations

import asyncio

from app.call.events import Transcribed

from .test_interruption_near_miss import ScriptedStt, harness
from .test_session import settle


def _call(join_s: float) -> tuple[list[Transcribed], object]:
    stt = ScriptedStt("I'd like to change my booking.")
    h = harness(stt, bargein_second_look=False, near_miss_words=False, stt_join_resumed_s=0.0,
                stt_join_turn_s=join_s, bargein_escalate_s=0.0)
    heard: list[Transcribed] = []
    h.session.events.subscribe(lambda e: heard.append(e) if isinstance(e, Transcribed) else None, frames=False)

    async def scenario() -> None:
        await h.start()
        h.clock.advance(0.3)
        await h.frames(60, loud=True, probability=0.99)  # 1.2 s: the caller stops the greeting
        await h.frames(45, loud=False, probability=0.0)  # 0.9 s pause: the turn ends, is heard, answered
        await settle()
        await h.frames(10, loud=False, probability=0.0)  # the answer plays
        await settle()
        await h.frames(60, loud=True, probability=0.99)  # 1.2 s: the rest of the sentence, over the answer
        await h.frames(60, loud=False, probability=0.0)  # the turn ends and is heard
        await settle()

    asyncio.run(scenario())
    return [e for e in heard if e.turn_id is not None], h.registry.get("CA1")


def test_the_rest_of_a_sentence_said_over_the_answer_is_heard_with_its_start() -> None:
    joined, record = _call(2.0)
    alone, record_alone = _call(0.0)
    assert record is not None and record_alone is not None
    users = [t for t in record.turns if t.role == "user"]
    assert len(users) == 2 and len(joined) == 2, (record.turns, joined)
    first, second = users
    assert first.joined_into == second.id
    assert [b.outcome for b in record.bargeins] == ["stopped", "stopped"]  # the greeting, then the answer
    # the second turn was heard from the first one's start: its 1.2 s and the 1.1 s pause, less the 0.5 s pre-roll
    # the second turn alone reached back into the pause anyway
    assert joined[1].audio_ms - alone[1].audio_ms >= 1700.0, (joined[1].audio_ms, alone[1].audio_ms)
    assert first not in record.history() and second in record.history()
    # without the join, both turns stand on their own
    assert all(t.joined_into is None for t in record_alone.turns)


def test_speech_long_after_the_turn_ended_is_a_turn_of_its_own() -> None:
    # the rest began about 1.1 s after the first turn's speech ended: past a 0.5 s join, heard alone
    late, record = _call(0.5)
    alone, _ = _call(0.0)
    assert record is not None and all(t.joined_into is None for t in record.turns)
    assert late[1].audio_ms == alone[1].audio_ms
