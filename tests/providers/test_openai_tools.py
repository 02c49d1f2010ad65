"""OpenAI streaming tool calls: literal wire lines through the parser, and a real stream from the loopback LLM."""

from __future__ import annotations

import asyncio
import json

import pytest

from app.edge.llm_server import ScriptedLlmServer, ScriptedToolCall, ToolCallReply
from providers.errors import ProviderError
from providers.llm.base import LlmEvent, TextDelta, ToolCall
from providers.llm.openai import OpenAICompatibleLlm, StreamParser


def line(delta: dict[str, object], finish: str | None = None) -> str:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return "data: " + json.dumps(chunk)


# Two calls, their arguments split mid-token, as OpenAI streams them (ids and names only in each call's first
# delta), after a bit of text.
WIRE = [
    line({"role": "assistant", "content": None}),
    line({"content": "Checking. "}),
    line({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                          "function": {"name": "lookup_booking", "arguments": ""}}]}),
    line({"tool_calls": [{"index": 0, "function": {"arguments": '{"na'}}]}),
    line({"tool_calls": [{"index": 0, "function": {"arguments": 'me": "Ann \\u00e9"}'}}]}),
    line({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                          "function": {"name": "check_opening_hours", "arguments": ""}}]}),
    line({}, "tool_calls"),
    "data: [DONE]",
]


def parse(lines: list[str]) -> tuple[bool, list[LlmEvent]]:
    parser = StreamParser()
    events: list[LlmEvent] = []
    done = False
    for text in lines:
        done, out = parser.feed(text)
        events.extend(out)
    return done, events


def test_streamed_tool_calls_come_out_whole_and_in_order_after_the_text() -> None:
    done, events = parse(WIRE)
    assert done
    assert events == [
        TextDelta("Checking. "),
        ToolCall("call_a", "lookup_booking", {"name": "Ann \u00e9"}),
        ToolCall("call_b", "check_opening_hours", {}),
    ]


def test_a_stream_ending_without_finish_reason_still_yields_its_calls_at_done() -> None:
    done, events = parse([WIRE[2], WIRE[3], WIRE[4], "data: [DONE]"])
    assert done and events == [ToolCall("call_a", "lookup_booking", {"name": "Ann \u00e9"})]


@pytest.mark.parametrize("bad", ['{"a": ', "[1, 2]"])
def test_arguments_that_are_not_a_json_object_are_a_provider_error(bad: str) -> None:
    lines = [line({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": bad}}]}),
             line({}, "tool_calls")]
    with pytest.raises(ProviderError, match="arguments"):
        parse(lines)


def test_a_call_without_a_name_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="no function name"):
        parse([line({"tool_calls": [{"index": 0, "id": "c", "function": {"arguments": "{}"}}]}), "data: [DONE]"])


def test_tools_go_out_in_the_request_and_calls_come_back_over_a_real_socket() -> None:
    tool = {"type": "function", "function": {"name": "book_table", "description": "Book a table.",
                                             "parameters": {"type": "object", "properties": {}}}}
    reply = ToolCallReply([ScriptedToolCall("call_1", "book_table", {"day": "Friday", "people": 4})], "Sure. ")

    async def scenario() -> None:
        async with ScriptedLlmServer([reply, "Booked."], token_delay_s=0.0) as llm:
            client = OpenAICompatibleLlm(llm.base_url, "scripted")
            first = [e async for e in client.stream([{"role": "user", "content": "a table"}], [tool])]
            second = [e async for e in client.stream([{"role": "user", "content": "a table"}])]
            await client.aclose()
        assert first == [TextDelta("Sure. "), ToolCall("call_1", "book_table", {"day": "Friday", "people": 4})]
        assert second == [TextDelta("Booked.")]
        assert llm.chat_requests[0].tools == [tool]
        assert llm.chat_requests[1].tools == []  # no tools: no `tools` key at all
        assert "tools" not in (llm.chat_requests[1].body or {})

    asyncio.run(scenario())
