"""The LLM interface: stream a chat reply as typed events (text pieces and tool calls).

A reply is a run of `TextDelta`s, possibly with `ToolCall`s: the model asks the agent to run a tool and
answer with its result in a further request. A tool call is yielded whole, once its arguments have
streamed in full (OpenAI streams them as JSON text in pieces), never half-parsed.

The messages follow OpenAI's chat format: an assistant message that asked for tools carries `tool_calls`;
each result goes back as a `role: "tool"` message naming the call's `tool_call_id`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, Protocol, TypedDict, runtime_checkable


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply's text, as it streamed."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for a tool to run: `arguments` is the parsed JSON object it wrote."""

    id: str
    name: str
    arguments: dict[str, Any]


LlmEvent = TextDelta | ToolCall


class ToolCallFunction(TypedDict):
    name: str
    arguments: str  # JSON text, as the wire carries it


class ToolCallMessage(TypedDict):
    """One entry of an assistant message's `tool_calls` (OpenAI chat format)."""

    id: str
    type: str  # "function"
    function: ToolCallFunction


class ChatMessage(TypedDict):
    role: str  # system, user, assistant, tool
    content: str
    tool_calls: NotRequired[list[ToolCallMessage]]  # assistant messages that asked for tools
    tool_call_id: NotRequired[str]  # tool messages: the call this is the result of


# A tool as the request declares it: {"type": "function", "function": {"name", "description", "parameters"}}.
ToolSchema = dict[str, Any]


@runtime_checkable
class Abortable(Protocol):
    """A reply stream that can drop its connection from synchronous code.

    Closing an async iterator runs its cleanup inside the task that iterates it, a loop iteration or two
    later: under load that put the LLM connection's close 15-50 ms after a barge-in. `abort()` shuts the
    socket at once (the server reads end-of-file and stops generating); the iterator's own cleanup still
    runs when it is closed. True when a connection was open and is now shut."""

    def abort(self) -> bool: ...


class LlmClient(Protocol):
    def stream(
        self, messages: list[ChatMessage], tools: Sequence[ToolSchema] = ()
    ) -> AsyncGenerator[LlmEvent, None]:
        """Yield the reply's events as they stream. Closing the iterator closes the HTTP stream; a stream that
        is also `Abortable` can be cut at once. `tools`, when given, are offered to the model (the request's
        `tools`)."""
        ...

    async def aclose(self) -> None: ...
