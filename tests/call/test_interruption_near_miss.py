"""The near-miss words path of app/call/interruption.py, on the session's fake clock with a scripted recognizer.

A sound at Silero 0.8 (loud, every cheap layer passes, never the 0.9 that starts speech) said over the greeting
is a near miss once 250 ms of quiet follow it; its words are asked for, and only stop or cancellation words stop
the agent, through the same path as a resumed utterance's late words (clear first, then the turn is cut).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from app.call.events import Transcribed
from app.call.interruption import _pool_busy
from providers.stt.base import Final

from .test_session import Harness, settle


class ScriptedStt:
    """A recognizer that writes the same text for every stretch; `pending`/`workers` like Whisper's pool."""

    def __init__(self, text: str, pending: int = 0, workers: int = 1) -> None:
        self.text = text
        self.pending = pending
        self.workers = workers
        self.asked = 0

    async def transcribe(self, audio: bytes, encoding: str = "mulaw", at_ms: float = 0.0) -> Final:
        self.asked += 1
        return Final(self.text, (), 0.0, len(audio) / 8.0, True)

    async def open(self, encoding: str = "mulaw") -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


GREETING = "Hello there. " + "Thanks for calling the demo line today, we are glad you did. " * 10  # 6 s


def harness(stt: ScriptedStt, **settings: Any) -> Harness:
    h = Harness("twilio", greeting=GREETING, bargein_policy="resume", **settings)
    h.deps = replace(h.deps, stt=stt)
    h.session = h.new_session()
    h.session._watch_near_misses()  # the session's start-up does this (app/call/session.py)
    return h


async def near_miss(h: Harness) -> None:
    """360 ms at Silero 0.8 over the agent, then 400 ms of quiet (the near miss is told 250 ms in)."""
    await h.frames(18, loud=True, probability=0.8)
    await h.frames(20, loud=False, probability=0.0)
    await settle()


def run(text: str, **kw: Any) -> tuple[Harness, ScriptedStt, list[str]]:
    stt = ScriptedStt(text, **{k: kw.pop(k) for k in ("pending",) if k in kw})
    h = harness(stt, **kw)

    async def scenario() -> None:
        await h.start()
        h.clock.advance(0.3)
        await near_miss(h)

    asyncio.run(scenario())
    return h, stt, h.events()


def test_a_near_miss_whose_words_say_stop_stops_the_agent_clear_first() -> None:
    h, stt, events = run("Stop.")
    assert stt.asked == 1
    assert "clear" in events
    record = h.registry.get("CA1")
    assert record is not None
    [bargein] = record.bargeins  # no candidate before it: one barge-in, the words' stop
    assert (bargein.outcome, bargein.reason) == ("stopped", "stop")
    assert record.turns[0].interrupted
    assert h.session.vad.near_miss is not None and h.session.vad.near_miss.seen == 1


def test_other_words_of_a_near_miss_change_nothing() -> None:
    # "What?" stops the agent from a candidate's words; from a near miss (a cough heard as "What?") it does not
    for text in ("What?", "You", "Thank you.", "Oh.", ""):
        h, stt, events = run(text)
        assert stt.asked == 1 and "clear" not in events, text
        record = h.registry.get("CA1")
        assert record is not None and record.bargeins == [], text


def test_a_near_miss_heard_as_other_words_is_kept_off_the_record_and_away_from_the_tools() -> None:
    # A correction from a sound that was never a candidate is a guess: it must not cancel a mutation in flight.
    stt = ScriptedStt("I meant Friday.")  # a correction (app/bargein/words.py)
    h = harness(stt)
    heard: list[Transcribed] = []
    h.session.events.subscribe(lambda e: heard.append(e) if isinstance(e, Transcribed) else None, frames=False)

    async def scenario() -> None:
        await h.start()
        h.clock.advance(0.3)
        await near_miss(h)

    asyncio.run(scenario())
    assert stt.asked == 1 and heard == [] and "clear" not in h.events()


def test_no_decode_without_the_setting_or_when_the_pool_has_a_queue() -> None:
    h, stt, events = run("Stop.", near_miss_words=False)
    assert stt.asked == 0 and "clear" not in events and h.session.vad.near_miss is None
    h, stt, events = run("Stop.", pending=2)  # one worker, one job running and one waiting
    assert stt.asked == 0 and "clear" not in events
    h, stt, events = run("Stop.", pending=1)  # one job ahead is let through
    assert stt.asked == 1 and "clear" in events


def test_no_decode_on_a_line_where_the_echo_guard_heard_echo() -> None:
    stt = ScriptedStt("Stop.")
    h = harness(stt, echo_guard=True)

    async def scenario() -> None:
        await h.start()
        assert h.session.guard is not None
        h.session.guard.echo_seen = True
        h.clock.advance(0.3)
        await near_miss(h)

    asyncio.run(scenario())
    assert stt.asked == 0 and "clear" not in h.events()


def test_near_miss_decodes_are_spaced_per_call() -> None:
    stt = ScriptedStt("Oh.")
    h = harness(stt, near_miss_spacing_s=2.0)

    async def scenario() -> None:
        await h.start()
        h.clock.advance(0.3)
        await near_miss(h)
        await near_miss(h)  # 0.76 s later: within the spacing, not decoded
        h.clock.advance(1.5)
        await near_miss(h)  # past it

    asyncio.run(scenario())
    assert h.session.vad.near_miss is not None and h.session.vad.near_miss.seen == 3
    assert stt.asked == 2


def test_pool_busy_reads_a_whisper_like_pool_and_nothing_else() -> None:
    assert not _pool_busy(ScriptedStt("", pending=1, workers=1))
    assert _pool_busy(ScriptedStt("", pending=2, workers=1))
    assert not _pool_busy(ScriptedStt("", pending=3, workers=2))
    assert not _pool_busy(object())  # a hosted recognizer: no pool
