"""The per-call event stream over a real call: every decision is a typed event, in order, on the call's clock."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from app.call.events import (
    AudioQueued,
    BargeInDecided,
    BargeInHandled,
    CallClosed,
    CallEvent,
    ClearSent,
    LlmClosed,
    LlmOpened,
    LlmToken,
    MarkAcked,
    MarkSent,
    TtsFinished,
    TtsStarted,
    TurnEnded,
    TurnStarted,
    VadChanged,
    WireReceived,
    WireSent,
    from_dict,
    to_dict,
)
from app.edge.emulator import EmulatedCall
from app.edge.llm_server import ScriptedLlmServer
from app.offline.corpus import load_clip, read_manifest

REPLY = (
    "Sure, I can help with that. Your order left our warehouse yesterday afternoon and it is on the truck now. "
    "The driver usually arrives between nine and eleven in the morning. Is there anything else?"
)


class Collector:
    """An observer: subscribes to each call's events as the server emits them (in the server's thread)."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []
        self.lock = threading.Lock()

    def __call__(self, session: Any) -> None:
        session.events.subscribe(self.add)

    def add(self, event: CallEvent) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, cls: type[CallEvent]) -> list[Any]:
        with self.lock:
            return [e for e in self.events if isinstance(e, cls)]


def clip(category: str, index: int = 0) -> Any:
    return [r for r in read_manifest() if r.category == category][index]


def test_a_barge_in_call_is_a_complete_ordered_event_stream(server_factory: Any) -> None:
    # One call per provider (the wire frames are each provider's own), both at once, each with its own server,
    # LLM and collector.
    async def scenario(provider: str, collector: Collector) -> str:
        async with ScriptedLlmServer([REPLY], token_delay_s=0.1) as llm:
            # started from a thread: this loop runs the other call
            srv = await asyncio.to_thread(server_factory, observers=[collector], llm_base_url=llm.base_url,
                                          agent_greeting="Hello.")
            async with EmulatedCall.start(provider, srv.url) as call:
                await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 10)
                await asyncio.sleep(0.3)
                greeting = call.received_samples
                await call.send_audio(load_clip(clip("isolated_word", 0)))
                await call.wait_until(lambda: call.played_samples - greeting > 1.5 * 8000, 20)
                await call.send_audio(load_clip(clip("read", 1))[: int(1.2 * 8000)])
                await call.wait_until(lambda: bool(call.clears), 5)
                await asyncio.sleep(0.2)
                call_id = call.call_id
            await asyncio.sleep(0.3)  # the server closes the stream after the caller hangs up
            return call_id

    collectors = {"twilio": Collector(), "plivo": Collector()}

    async def both() -> list[str]:
        return list(await asyncio.gather(*(scenario(p, c) for p, c in collectors.items())))

    for (provider, collector), call_id in zip(collectors.items(), asyncio.run(both()), strict=True):
        try:
            check(provider, collector, call_id)
        except AssertionError as exc:
            raise AssertionError(f"[{provider}] {exc}") from exc


def check(provider: str, collector: Collector, call_id: str) -> None:
    """What one call's event stream must hold."""
    events = collector.events
    assert events, "no events reached the observer"

    # The stream begins with the frames from before `start`, handed over at start, and ends with the close.
    kinds = [json.loads(e.text).get("event") for e in collector.of(WireReceived)]
    assert kinds.index("start") == (1 if provider == "twilio" else 0)  # Twilio sends `connected` first
    assert kinds[0] == ("connected" if provider == "twilio" else "start")
    assert call_id in collector.of(WireReceived)[kinds.index("start")].text
    assert isinstance(events[-1], CallClosed)

    # Times are on one clock and never go backwards within a kind.
    for cls in (WireReceived, WireSent, MarkSent, MarkAcked, VadChanged):
        times = [e.t for e in collector.of(cls)]
        assert times == sorted(times), cls.kind

    # The agent's turns: greeting (fixed text: no LLM), then the LLM reply, which is cut.
    starts = [e for e in collector.of(TurnStarted) if e.role == "agent"]
    assert len(starts) >= 2
    assert collector.of(TtsStarted) and collector.of(TtsFinished) and collector.of(AudioQueued)
    assert collector.of(MarkSent) and any(e.known for e in collector.of(MarkAcked))
    reply_turn = starts[1].turn_id
    assert [e.turn_id for e in collector.of(LlmOpened)] == [reply_turn]
    tokens = [e.text for e in collector.of(LlmToken) if e.turn_id == reply_turn]
    assert tokens and REPLY.startswith("".join(tokens))
    [closed] = collector.of(LlmClosed)
    assert closed.reason in ("cancelled", "stopped")  # the barge-in closed it, not the end of the reply

    # One barge-in: decided, clear written, every step done; the clear frame is on the wire stream too.
    [decided] = collector.of(BargeInDecided)
    [clear] = collector.of(ClearSent)
    [done] = collector.of(BargeInHandled)
    assert decided.id == clear.barge_in_id == done.id and decided.turn_id == reply_turn
    # The clear is timed from the deciding frame; the rest from the decision that settled the barge-in.
    assert decided.t <= clear.t and done.clear_sent_ms <= done.settled_ms + done.total_ms
    assert done.outcome == "stopped" and done.t >= decided.t + done.settled_ms / 1000.0
    clear_frames = [e for e in collector.of(WireSent) if json.loads(e.text).get("event") in ("clear", "clearAudio")]
    assert len(clear_frames) == 1 and decided.t <= clear_frames[0].t <= clear.t
    # The detector went from starting to speaking on the deciding frame itself.
    [moved] = [e for e in collector.of(VadChanged) if e.state == "speaking" and e.t == decided.t]
    assert moved.previous == "starting" and moved.probability > 0.5

    # The cut turn ends interrupted, with the heard text a prefix of the reply.
    [cut] = [e for e in collector.of(TurnEnded) if e.turn_id == reply_turn]
    assert cut.interrupted and cut.heard_text is not None and REPLY.startswith(cut.heard_text)
    assert cut.heard_chars == len(cut.heard_text)

    # Every event survives the recording's dict form.
    for event in events:
        assert from_dict(json.loads(json.dumps(to_dict(event)))) == event


def test_no_subscriber_no_event_objects(server_factory: Any) -> None:
    """Without an observer the call still works and nothing subscribes: emitters skip building events."""
    seen: list[bool] = []
    srv = server_factory(observers=[lambda session: seen.append(session.events.active)])

    async def scenario() -> None:
        async with EmulatedCall.start("twilio", srv.url) as call:
            await call.wait_until(lambda: call.received_samples > 0, 10)

    asyncio.run(scenario())
    assert seen == [False]


@pytest.mark.parametrize("broken_at", ["ws_in", "mark_sent"])
def test_a_failing_subscriber_does_not_stop_the_call(broken_at: str, server_factory: Any) -> None:
    def observer(session: Any) -> None:
        def explode(event: CallEvent) -> None:
            if event.kind == broken_at:
                raise RuntimeError("subscriber bug")

        session.events.subscribe(explode)

    srv = server_factory(observers=[observer], agent_greeting="Hello there, how can I help you today?")

    async def scenario() -> int:
        async with EmulatedCall.start("twilio", srv.url) as call:
            await call.wait_until(lambda: call.played_samples > 8000, 10)
            return call.played_samples

    assert asyncio.run(scenario()) > 8000
