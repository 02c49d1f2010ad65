"""Tools that survive a barge-in, over real sockets: the real app under uvicorn with tools registered in code,
the provider-edge emulator (Twilio and Plivo, side by side), and the loopback LLM streaming tool calls in
OpenAI's format.

Each case runs one call per provider at once, each with its own server, LLM and tool handler (the handlers run
on the server's loop; the test reads what they did).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from app.call.session import CUT_MARK
from app.call.tools import Tool, ToolRegistry
from app.edge.deepgram_server import DeepgramServer, script_words
from app.edge.emulator import EmulatedCall, Provider
from app.edge.llm_server import LlmRequest, Reply, ScriptedLlmServer, ScriptedToolCall, ToolCallReply
from app.edge.served import ServedApp
from app.main import create_app
from app.offline.corpus import load_clip, read_manifest
from tests.conftest import make_settings
from tests.e2e.records import record_when

PROVIDERS: tuple[Provider, ...] = ("twilio", "plivo")
HOLDING = "One moment, I'm pulling that up."
LONG_REPLY = (
    "Your table for four is booked for Friday at seven. We will keep it for fifteen minutes after that. "
    "If you are running late, please call us and we will do our best to hold it. Parking is behind the "
    "building, and the entrance is on the side street. Is there anything else I can do for you?"
)


class Probe:
    """A tool handler: sleeps `delay_s` (then commits), and notes every run, commit and cancellation."""

    def __init__(self, delay_s: float, result: dict[str, Any]) -> None:
        self.delay_s = delay_s
        self.result = result
        self.runs: list[dict[str, Any]] = []
        self.committed = 0
        self.cancelled = 0

    async def __call__(self, arguments: dict[str, Any]) -> dict[str, Any]:
        self.runs.append(arguments)
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.committed += 1
        return self.result


def registry(read: Probe | None = None, mutation: Probe | None = None) -> ToolRegistry:
    tools = ToolRegistry()
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    if read is not None:
        tools.register(Tool("lookup_booking", "Look up the caller's booking.", schema, "read", read))
    if mutation is not None:
        tools.register(Tool("book_table", "Book a table.", schema, "mutation", mutation))
    return tools


@contextlib.contextmanager
def serve(tools: ToolRegistry, llm: ScriptedLlmServer, **overrides: Any) -> Iterator[ServedApp]:
    settings = make_settings(llm_base_url=llm.base_url, agent_greeting="Hello.", bargein_policy="immediate",
                             tool_holding_after_ms=300, **overrides)
    with ServedApp(create_app(settings, tools=tools)) as served:
        yield served


def speech(category: str, index: int, seconds: float | None = None) -> Any:
    row = [r for r in read_manifest() if r.category == category][index]
    pcm = load_clip(row)
    return pcm if seconds is None else pcm[: int(seconds * 8000)]


async def ask(call: EmulatedCall) -> int:
    """The greeting plays out; the caller says one word and falls silent: the agent's reply turn starts.
    Returns the samples played before the reply."""
    await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 10)
    await asyncio.sleep(0.3)
    played = call.played_samples
    await call.send_audio(speech("isolated_word", 0))
    return played


async def barge_in(call: EmulatedCall) -> float:
    """The caller talks over the agent; returns when the clear arrived."""
    clears = len(call.clears)
    await call.send_audio(speech("read", 1, 1.2))
    await call.wait_until(lambda: len(call.clears) > clears, 5)
    return call.clears[clears]


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out waiting")


def tool_messages(request: LlmRequest, call_id: str) -> list[dict[str, Any]]:
    return [m for m in request.messages if m.get("role") == "tool" and m.get("tool_call_id") == call_id]


def asked(request: LlmRequest, call_id: str) -> list[dict[str, Any]]:
    """The assistant messages whose tool_calls include `call_id`."""
    return [m for m in request.messages if m.get("role") == "assistant"
            and any(c.get("id") == call_id for c in m.get("tool_calls") or [])]


def both(case: Callable[[Provider], Awaitable[None]]) -> None:
    async def run() -> None:
        await asyncio.gather(*(case(provider) for provider in PROVIDERS))

    asyncio.run(run())


def test_a_read_in_flight_at_a_barge_in_finishes_and_its_result_feeds_the_next_turn() -> None:
    async def case(provider: Provider) -> None:
        # Longer than the caller's interruption and the silence that ends it: the next turn has to wait for it.
        read = Probe(3.5, {"booking": "Tuesday at 7 pm, table for two"})
        replies: list[Reply] = [
            ToolCallReply([ScriptedToolCall("call_read1", "lookup_booking", {"name": "Ann"})], "Let me check."),
            "I found it: Tuesday at seven.",
        ]
        async with ScriptedLlmServer(replies, token_delay_s=0.02) as llm:
            with serve(registry(read=read), llm) as srv:
                async with EmulatedCall.start(provider, srv.url) as call:
                    await ask(call)
                    await call.wait_until(lambda: bool(read.runs), 10)
                    await barge_in(call)
                    assert read.committed == 0  # it was in flight at the barge-in
                    await until(lambda: len(llm.chat_requests) >= 2)
                    record = await record_when(srv.url, call.call_id, lambda r: bool(r["bargeins"]))
        first, second = llm.chat_requests[:2]
        assert [t["function"]["name"] for t in first.tools] == ["lookup_booking"]
        # The read ran once, to the end, and the next turn's request waited for its result.
        assert read.runs == [{"name": "Ann"}] and read.committed == 1 and read.cancelled == 0
        [result] = tool_messages(second, "call_read1")
        assert "Tuesday at 7 pm" in result["content"]
        [assistant] = asked(second, "call_read1")
        assert second.messages.index(assistant) < second.messages.index(result)
        [event] = record["bargeins"]
        assert (event["in_flight_tools_canceled"], event["in_flight_tools_completed"]) == (0, 1)
        # The conversation state in the system message: one interruption, of the turn that asked for the read.
        system = second.messages[0]["content"]
        assert "times the caller interrupted you: 1" in system
        cut = [t for t in record["turns"] if t["role"] == "agent" and t["interrupted"]]
        assert f"last interrupted turn: #{cut[0]['id']}" in system

    both(case)


def test_a_mutation_in_flight_at_a_barge_in_is_cancelled_and_never_committed() -> None:
    async def case(provider: Provider) -> None:
        book = Probe(4.0, {"booked": True})
        replies: list[Reply] = [
            ToolCallReply([ScriptedToolCall("call_book1", "book_table", {"name": "Ann"})], "Booking it now."),
            "All right, I have not booked anything. What would you like instead?",
        ]
        async with ScriptedLlmServer(replies, token_delay_s=0.02) as llm:
            with serve(registry(mutation=book), llm) as srv:
                async with EmulatedCall.start(provider, srv.url) as call:
                    await ask(call)
                    await call.wait_until(lambda: bool(book.runs), 10)
                    await barge_in(call)
                    await until(lambda: book.cancelled == 1, 2)  # the handler saw the cancellation at once
                    await until(lambda: len(llm.chat_requests) >= 2)
                    record = await record_when(srv.url, call.call_id, lambda r: bool(r["bargeins"]))
                    await asyncio.sleep(0.2)
        assert len(book.runs) == 1 and book.committed == 0 and book.cancelled == 1
        [event] = record["bargeins"]
        assert (event["in_flight_tools_canceled"], event["in_flight_tools_completed"]) == (1, 0)
        # The model is told it was not done.
        [result] = tool_messages(llm.chat_requests[1], "call_book1")
        assert '"status":"cancelled"' in result["content"] and "nothing was done" in result["content"]

    both(case)


def test_a_mutation_completed_before_a_barge_in_is_committed_once_and_not_run_again() -> None:
    async def case(provider: Provider) -> None:
        book = Probe(0.01, {"booked": True, "day": "Friday"})
        same_call = ToolCallReply([ScriptedToolCall("call_book1", "book_table", {"name": "Ann"})])
        replies: list[Reply] = [same_call, LONG_REPLY, same_call, "You are all set for Friday."]
        async with ScriptedLlmServer(replies, token_delay_s=0.08) as llm:
            with serve(registry(mutation=book), llm) as srv:
                async with EmulatedCall.start(provider, srv.url) as call:
                    await ask(call)
                    # Interrupt the answer that follows the booking, 1.5 s into it, while it still streams.
                    await until(lambda: len(llm.chat_requests) >= 2 and bool(llm.chat_requests[1].tokens))
                    heard_before = call.played_samples
                    await call.wait_until(lambda: call.played_samples - heard_before > 1.5 * 8000, 15)
                    clear_at = await barge_in(call)
                    await until(lambda: len(llm.chat_requests) >= 4)  # the same call asked again, then answered
                    record = await record_when(srv.url, call.call_id, lambda r: bool(r["bargeins"]))
        assert len(book.runs) == 1 and book.committed == 1  # once, though the model asked twice
        [event] = record["bargeins"]
        assert (event["in_flight_tools_canceled"], event["in_flight_tools_completed"]) == (0, 0)
        answer, again, final = llm.chat_requests[1], llm.chat_requests[2], llm.chat_requests[3]
        # The booking's result is in the context exactly once, before the interrupted answer's heard words.
        assert len(tool_messages(again, "call_book1")) == 1
        assert len(tool_messages(final, "call_book1")) == 2  # ... plus this turn's own (repeated) ask
        # No token of the cancelled answer reaches the context: only what the caller heard, marked as cut.
        [cut] = [t for t in record["turns"] if t["role"] == "agent" and t["interrupted"]]
        spoken = [m["content"] for m in again.messages if m.get("role") == "assistant" and m["content"]]
        assert spoken[-1] == f"{cut['heard_text']}{CUT_MARK}"
        streamed_before_clear = "".join(tok for tok, t in answer.tokens if t <= clear_at)
        assert LONG_REPLY.startswith(cut["heard_text"]) and len(cut["heard_text"]) <= len(streamed_before_clear)
        assert len(cut["heard_text"]) < len(LONG_REPLY)
        assert not any(HOLDING in t["text"] for t in record["turns"])  # a quick tool gets no holding line

    both(case)


def test_a_slow_tool_gets_the_holding_line_once_per_turn_and_the_caller_hears_it() -> None:
    async def case(provider: Provider) -> None:
        read = Probe(0.5, {"booking": "Tuesday"})
        replies: list[Reply] = [
            ToolCallReply([ScriptedToolCall("call_r1", "lookup_booking", {"name": "Ann"})]),
            ToolCallReply([ScriptedToolCall("call_r2", "lookup_booking", {"name": "Bob"})]),
            "Both bookings are on Tuesday.",
        ]
        async with ScriptedLlmServer(replies, token_delay_s=0.02) as llm:
            with serve(registry(read=read), llm) as srv:
                async with EmulatedCall.start(provider, srv.url) as call:
                    greeting = await ask(call)
                    record = await record_when(srv.url, call.call_id, lambda r: any(
                        t["role"] == "agent" and t["ended_at"] and "Tuesday" in t["text"] for t in r["turns"]), 15)
                    await call.wait_until(lambda: call.buffered_samples == 0, 5)
                    played = call.played_samples - greeting
        [turn] = [t for t in record["turns"] if t["role"] == "agent" and "Tuesday" in t["text"]]
        assert turn["text"] == f"{HOLDING} Both bookings are on Tuesday."  # said once, though both reads were slow
        assert len(read.runs) == 2 and not turn["interrupted"]
        assert played >= turn["audio_ms"] * 8 * 0.98  # the caller heard the whole turn, holding line too
        messages = llm.chat_requests[2].messages
        assert [len(tool_messages(llm.chat_requests[2], i)) for i in ("call_r1", "call_r2")] == [1, 1]
        assert messages[-1]["role"] == "tool"

    both(case)


def test_the_embedded_agent_books_through_its_demo_tool(server_factory: Any) -> None:
    """No LLM_BASE_URL: the scripted LLM calls the demo `book_table` for a booking that names a day, and answers
    from its result. The caller's words come from the loopback Deepgram server (scripted)."""
    said = "Can you book a table for Friday?"

    async def scenario() -> dict[str, Any]:
        async with DeepgramServer(script_words(said, start_s=0.2, word_s=0.15, gap_s=0.02)) as dg:
            srv = server_factory(agent_greeting="Hello.", stt_engine="deepgram", deepgram_url=dg.url,
                                 deepgram_api_key="test-key")
            async with EmulatedCall.start("twilio", srv.url) as call:
                await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 10)
                await call.send_audio(speech("read", 1, 1.6))
                return await record_when(srv.url, call.call_id, lambda r: any(
                    t["role"] == "agent" and t["ended_at"] and "booked" in t["text"] for t in r["turns"]), 15)

    record = asyncio.run(scenario())
    caller = [t for t in record["turns"] if t["role"] == "user"]
    assert caller[0]["text"] == said
    reply = [t for t in record["turns"] if t["role"] == "agent"][-1]
    assert reply["text"] == "Done, you are booked for Friday. Your reference is B 1."
