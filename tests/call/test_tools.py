"""The tool ledger (pure), the runner's barge-in rules on a real event loop, and the conversation state."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from app.call.conversation import conversation_state
from app.call.tools import (
    CANCELLED_BY_BARGE_IN,
    Tool,
    ToolLedger,
    ToolRegistry,
    ToolRunner,
    exchange,
)
from app.transcript import BargeInEvent, Turn
from providers.llm.base import TextDelta, ToolCall


def call(call_id: str, name: str = "lookup", **arguments: Any) -> ToolCall:
    return ToolCall(call_id, name, arguments)


# -- the ledger --------------------------------------------------------------------------------------------
def test_a_call_id_is_begun_once_and_settled_once() -> None:
    ledger = ToolLedger()
    entry, new = ledger.begin(call("c1"), "mutation", turn_id=3, now=1.0)
    assert new and entry.state == "running"
    again, new_again = ledger.begin(call("c1"), "mutation", turn_id=5, now=2.0)
    assert again is entry and not new_again and entry.repeats == 1 and entry.turn_id == 3
    assert ledger.settle("c1", "done", '{"ok":true}', 1.5)
    assert not ledger.settle("c1", "cancelled", "late", 1.6)  # committed once: the result stands
    assert ledger.entries["c1"].state == "done"
    assert entry.result == '{"ok":true}' and entry.finished_at == 1.5
    assert not ledger.settle("unknown", "done", "", 2.0)


def test_context_lists_only_settled_calls_of_the_turn_with_their_results() -> None:
    ledger = ToolLedger()
    ledger.begin(call("a", q="x"), "read", 3, 0.0)
    ledger.begin(call("b"), "read", 3, 0.0)
    ledger.begin(call("c"), "read", 7, 0.0)
    ledger.settle("a", "done", "result a", 1.0)
    messages = ledger.context(3)
    assert [m["role"] for m in messages] == ["assistant", "tool"]
    assert [c["id"] for c in messages[0]["tool_calls"]] == ["a"]  # b still runs: left out until settled
    assert json.loads(messages[0]["tool_calls"][0]["function"]["arguments"]) == {"q": "x"}
    assert messages[1] == {"role": "tool", "tool_call_id": "a", "content": "result a"}
    assert ledger.turn_ids() == [3]
    assert exchange([]) == []


# -- the runner ---------------------------------------------------------------------------------------------
class Probe:
    """A tool handler that waits to be released (or sleeps), and says what happened to it."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.runs = 0
        self.committed = 0
        self.cancelled = 0
        self.release = asyncio.Event()

    async def __call__(self, arguments: dict[str, Any]) -> dict[str, Any]:
        self.runs += 1
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            else:
                await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.committed += 1
        return {"ok": True, **arguments}


def runner_with(**probes: tuple[str, Probe]) -> ToolRunner:
    registry = ToolRegistry(
        Tool(name, f"the {name} tool", {"type": "object", "properties": {}}, kind, probe)  # type: ignore[arg-type]
        for name, (kind, probe) in probes.items()
    )
    loop = asyncio.get_running_loop()
    return ToolRunner(registry, loop.time, timeout_s=5.0)


def test_barge_in_cancels_mutations_in_flight_and_lets_reads_finish() -> None:
    async def scenario() -> None:
        read, book = Probe(), Probe()
        runner = runner_with(lookup=("read", read), book=("mutation", book))
        r = runner.start(call("r1", "lookup"), 1)
        m = runner.start(call("m1", "book"), 1)
        await asyncio.sleep(0)
        assert read.runs == book.runs == 1
        outcome = runner.on_barge_in()
        assert (outcome.canceled, outcome.completed) == (1, 1)
        read.release.set()
        assert await runner.settle_in_flight(1.0)
        assert r.state == "done" and json.loads(r.result) == {"ok": True}
        assert m.state == "cancelled" and CANCELLED_BY_BARGE_IN in m.result
        assert book.cancelled == 1 and book.committed == 0

    asyncio.run(scenario())


def test_a_mutation_completed_before_the_barge_in_stands_and_is_never_run_again() -> None:
    async def scenario() -> None:
        book = Probe(delay_s=0.001)
        runner = runner_with(book=("mutation", book))
        entry = runner.start(call("m1", "book", day="tue"), 1)
        assert await runner.wait([entry], 1.0)
        assert runner.on_barge_in().canceled == 0
        again = runner.start(call("m1", "book", day="tue"), 4)  # the model asks again with the same id
        assert again is entry and again.state == "done" and again.repeats == 1
        await asyncio.sleep(0.01)
        assert book.runs == book.committed == 1

    asyncio.run(scenario())


def test_a_retry_while_the_first_run_is_in_flight_waits_for_it() -> None:
    async def scenario() -> None:
        read = Probe()
        runner = runner_with(lookup=("read", read))
        first = runner.start(call("r1"), 1)
        second = runner.start(call("r1"), 1)
        assert second is first
        assert not await runner.wait([second], 0.01)
        read.release.set()
        assert await runner.wait([second], 1.0)
        assert read.runs == 1

    asyncio.run(scenario())


@pytest.mark.parametrize(("words", "cancelled"), [
    ("never mind, don't book it", 1), ("no, I said Tuesday", 1), ("yeah okay", 0), ("what time is it", 0),
])
def test_words_that_withdraw_or_correct_cancel_a_mutation_in_flight(words: str, cancelled: int) -> None:
    from app.bargein.words import interruption

    async def scenario() -> None:
        book = Probe()
        runner = runner_with(book=("mutation", book))
        entry = runner.start(call("m1", "book"), 1)
        await asyncio.sleep(0)
        assert runner.on_words(interruption(words)) == cancelled
        book.release.set()
        await runner.settle_in_flight(1.0)
        assert entry.state == ("cancelled" if cancelled else "done")
        assert book.committed == 1 - cancelled

    asyncio.run(scenario())


def test_unknown_tools_failures_and_timeouts_settle_with_an_error_for_the_model() -> None:
    async def boom(arguments: dict[str, Any]) -> str:
        raise RuntimeError("database down")

    async def scenario() -> None:
        slow = Probe(delay_s=10.0)
        registry = ToolRegistry([
            Tool("boom", "fails", {"type": "object"}, "read", boom),
            Tool("slow", "hangs", {"type": "object"}, "read", slow),
        ])
        runner = ToolRunner(registry, asyncio.get_running_loop().time, timeout_s=0.05)
        missing = runner.start(call("x", "nope"), 1)
        failed = runner.start(call("y", "boom"), 1)
        late = runner.start(call("z", "slow"), 1)
        assert await runner.settle_in_flight(1.0)
        assert missing.state == failed.state == late.state == "failed"
        assert "nope" in missing.result and "RuntimeError" in failed.result and "timed out" in late.result
        assert registry.schemas()[0] == {"type": "function", "function": {
            "name": "boom", "description": "fails", "parameters": {"type": "object"}}}
        with pytest.raises(ValueError):
            registry.register(Tool("boom", "again", {}, "read", boom))

    asyncio.run(scenario())


def test_closing_the_call_cancels_every_run() -> None:
    async def scenario() -> None:
        read = Probe()
        runner = runner_with(lookup=("read", read))
        entry = runner.start(call("r1"), 1)
        await asyncio.sleep(0)
        await runner.aclose()
        assert entry.state == "cancelled" and read.cancelled == 1

    asyncio.run(scenario())


# -- the conversation state ------------------------------------------------------------------------------
def test_conversation_state_names_the_cut_turn_and_counts_interruptions() -> None:
    greeting = Turn(1, "agent", text="Hello.", ended_at=1.0)
    user = Turn(2, "user", text="hours?", ended_at=2.0)
    cut = Turn(3, "agent", text="We are open", heard_text="We are open", interrupted=True, ended_at=3.0)
    current = Turn(5, "agent")
    bargeins = [
        BargeInEvent("b1", 3, 0.0, 0.9, 200.0, -20.0, 1.0, 1.0, 1.0, 1.0, 2, 11, 900.0),
        BargeInEvent("b2", 3, 0.0, 0.9, 200.0, -20.0, 1.0, 1.0, None, 1.0, None, None, None, outcome="resumed"),
    ]
    state = conversation_state([greeting, user, cut, current], bargeins, agent_speaking=False,
                               tools_in_flight=["lookup_booking"], current=current)
    assert state.last_agent_utterance == "We are open" and state.last_agent_utterance_cut
    assert state.interrupt_count == 1 and state.last_interrupted_turn == 3
    text = state.render()
    assert '(cut off by the caller; they heard only): "We are open"' in text
    assert "tools in flight: lookup_booking" in text and "interrupted you: 1" in text
    assert "agent speaking: no" in text

    fresh = conversation_state([greeting], [], agent_speaking=True)
    assert fresh.last_agent_utterance == "Hello." and not fresh.last_agent_utterance_cut
    assert fresh.last_interrupted_turn is None and "last interrupted" not in fresh.render()
    assert "(complete)" in fresh.render() and "tools in flight: none" in fresh.render()


def test_a_cut_turn_offers_the_whole_sentence_the_caller_was_hearing_and_say_that_again_says_it() -> None:
    from app.call.conversation import sentence_at
    from providers.llm.scripted import scripted_reply

    intended = "We open at nine. On Saturdays we open at ten and close at two. Anything else?"
    assert sentence_at(intended, len("We open at nine. On Satur")) == "On Saturdays we open at ten and close at two."
    assert sentence_at(intended, len("We open at nine.")) == "We open at nine."  # heard whole, cut in the pause
    assert sentence_at(intended, 0) == "We open at nine."
    cut = Turn(3, "agent", text="We open at nine. On Satur", heard_text="We open at nine. On Satur",
               intended_text=intended, interrupted=True, ended_at=3.0)
    state = conversation_state([Turn(2, "user", text="hours?", ended_at=2.0), cut], [], agent_speaking=False)
    assert state.cut_sentence == "On Saturdays we open at ten and close at two."
    system = {"role": "system", "content": f"You are a helpful agent.\n\n{state.render()}"}
    history = [{"role": "user", "content": "hours?"},
               {"role": "assistant", "content": "We open at nine. On Satur [cut off here: the caller interrupted]"},
               {"role": "user", "content": "Sorry, say that again?"}]
    assert scripted_reply([system, *history]) == (
        "Sorry, I'll say that again. On Saturdays we open at ten and close at two.")
    # a complete last turn: no cut sentence, and "say that again" repeats the last words as before
    whole = conversation_state([Turn(3, "agent", text="We open at nine.", ended_at=3.0)], [], agent_speaking=False)
    assert whole.cut_sentence == "" and "cut off (say it again" not in whole.render()
    plain = [{"role": "system", "content": whole.render()}, {"role": "assistant", "content": "We open at nine."},
             {"role": "user", "content": "say that again"}]
    assert scripted_reply(plain) == "Of course. We open at nine."


# -- the agent's turn with tools (in process: fake LLM and TTS, the real outbox) -------------------------------
class ToolLlm:
    """Asks for `call` while no tool result is in the request (or always, with `loop`), else answers."""

    def __init__(self, tool_call: ToolCall, answer: str, loop: bool = False) -> None:
        self.tool_call = tool_call
        self.answer = answer
        self.loop = loop
        self.requests: list[list[Any]] = []

    async def stream(self, messages: list[Any], tools: Any = ()) -> Any:
        self.requests.append(list(messages))
        await asyncio.sleep(0)
        if self.loop or not any(m.get("role") == "tool" for m in messages):
            yield self.tool_call
            return
        yield TextDelta(self.answer)

    async def aclose(self) -> None:
        pass


def tool_turn(llm: ToolLlm, runner: ToolRunner, context: Any) -> Any:
    from app.call.turn import AgentTurn
    from tests.call.test_turn_bounds import FakeTts, make_outbox

    outbox, _ = make_outbox()
    tts = FakeTts()
    turn = AgentTurn(9, outbox=outbox, tts=tts, tts_timeout_s=5.0, llm=llm, context=context, tools=runner,
                     holding_text="One moment.", holding_after_s=0.02, settle_tools_s=2.0,
                     max_reply_chars=4_000, max_queued_audio_ms=1e9)
    return turn, tts


def test_a_turn_waits_for_a_read_left_in_flight_saying_the_holding_line_then_asks_with_its_result() -> None:
    async def scenario() -> None:
        read = Probe(delay_s=0.1)
        runner = runner_with(lookup=("read", read))
        entry = runner.start(call("r_old", "lookup"), 3)  # a read the last barge-in let run (turn 3)
        llm = ToolLlm(call("unused", "lookup"), "Found it.")
        turn, tts = tool_turn(llm, runner, lambda: [{"role": "user", "content": "hi"}, *runner.ledger.context(3)])
        turn.start()
        await asyncio.wait_for(turn._task, 5.0)
        assert entry.state == "done" and read.runs == 1
        assert tts.spoken == ["One moment.", "Found it."]  # the wait had the holding line, once
        assert [m["role"] for m in llm.requests[0]] == ["user", "assistant", "tool"]  # the result is in

    asyncio.run(scenario())


def test_a_model_that_keeps_asking_for_tools_is_stopped_after_the_round_limit() -> None:
    from app.call.turn import MAX_TOOL_ROUNDS

    async def scenario() -> None:
        read = Probe(delay_s=0.001)
        runner = runner_with(lookup=("read", read))
        llm = ToolLlm(call("same", "lookup"), "", loop=True)
        turn, _ = tool_turn(llm, runner, lambda: [{"role": "user", "content": "hi"}])
        turn.start()
        await asyncio.wait_for(turn._task, 5.0)
        assert len(llm.requests) == MAX_TOOL_ROUNDS + 1
        assert read.runs == 1  # the same id every round: run once
        assert [e.call.id for e in turn.tool_calls] == ["same"] * MAX_TOOL_ROUNDS

    asyncio.run(scenario())
