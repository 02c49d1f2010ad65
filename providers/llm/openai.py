"""Any OpenAI-compatible chat-completions endpoint, streamed over server-sent events with httpx."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from providers.errors import ProviderError, ProviderTimeout, map_vendor_errors
from providers.llm.base import ChatMessage, LlmEvent, TextDelta, ToolCall, ToolSchema

logger = logging.getLogger(__name__)

# The longest SSE line accepted. A content delta is a few characters and its line a few hundred; a server that
# sends more without a line break is broken or hostile. httpx's aiter_lines has no bound: it buffers the line
# whole, then json.loads parses it in one go on the event loop (measured here: a 10 MB line held the loop for
# 19 ms, a 50 MB one for 165 ms). At 1 MB the parse costs under 1 ms, the line is refused as soon as that much
# of it has arrived, and the turn keeps LLM_MAX_REPLY_CHARS of whatever a shorter line carries.
MAX_LINE_CHARS = 1_000_000

# SSE ends a line at CRLF, LF or CR only (WHATWG HTML, "Server-sent events", parsing an event stream). httpx's
# aiter_lines uses str.splitlines, which also breaks at U+2028, U+0085 and friends: a JSON chunk with one of
# those raw inside a string (legal JSON) would be cut in two and fail to parse.
_EOL = re.compile(r"\r\n|\r|\n")

# The most JSON text one tool call's arguments may stream (they arrive in pieces over many lines, so the line
# bound above does not cap their sum). A call's arguments are a few dozen characters; 64 KB is a broken model.
MAX_TOOL_ARGUMENT_CHARS = 65_536


class OpenAICompatibleLlm:
    """Streams `POST {base_url}/chat/completions` with `stream: true`.

    Each request gets its own connection from the pool; leaving the iterator early closes the response before
    its end, and httpx then closes that connection (a half-read HTTP/1.1 response cannot be reused), so the
    server sees the abort at once.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        first_token_timeout_s: float = 5.0,
        token_timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._headers = {"Accept": "text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        # The read timeout bounds the gap between two chunks: a stalled stream fails instead of hanging the turn.
        timeout = httpx.Timeout(connect=first_token_timeout_s, read=token_timeout_s, write=5.0, pool=5.0)
        self._first_token_timeout_s = first_token_timeout_s
        self._client = client or httpx.AsyncClient(timeout=timeout)

    def stream(self, messages: list[ChatMessage], tools: Sequence[ToolSchema] = ()) -> SseStream:
        """The reply's events; the returned stream is `Abortable` (base.py says why)."""
        return SseStream(lambda holder: self._events(messages, tools, holder))

    async def _events(
        self, messages: list[ChatMessage], tools: Sequence[ToolSchema], holder: SseStream
    ) -> AsyncGenerator[LlmEvent, None]:
        body: dict[str, Any] = {"model": self._model, "messages": messages, "stream": True}
        if tools:
            body["tools"] = list(tools)
        parser = StreamParser()
        with map_vendor_errors("llm"):
            async with self._client.stream("POST", self._url, json=body, headers=self._headers) as response:
                holder.response = response
                if response.status_code != 200:
                    await response.aread()
                    raise ProviderError(
                        f"llm: HTTP {response.status_code}", retryable=response.status_code >= 500
                    )
                async with contextlib.aclosing(_sse_lines(response.aiter_text(), MAX_LINE_CHARS)) as lines:
                    async for line in lines:
                        done, events = parser.feed(line)
                        for event in events:
                            yield event
                        if done:
                            return
                # The body ended without `[DONE]`: what it held still counts (a tool call whose arguments
                # had arrived in full before the end).
                for call in parser.finish():
                    yield call

    async def aclose(self) -> None:
        await self._client.aclose()


class SseStream(AsyncGenerator[LlmEvent, None]):
    """One reply's events (the client's generator, `events`), and `abort()`: its connection shut at once.

    Each request has a connection of its own while its response is open (a half-read HTTP/1.1 response is never
    shared), so shutting that socket ends this reply and nothing else. The shutdown sends the FIN (and makes
    reads on our side end) without waiting for the event loop; httpx's own close runs later, when the generator
    is closed, and finds the connection already dead."""

    def __init__(self, events: Callable[[SseStream], AsyncGenerator[LlmEvent, None]]) -> None:
        self.response: httpx.Response | None = None  # set by `events` while the request is open; None once aborted
        self._events = events(self)

    async def asend(self, value: None) -> LlmEvent:
        return await self._events.asend(value)

    async def athrow(self, typ: Any, val: Any = None, tb: Any = None) -> LlmEvent:
        return await self._events.athrow(typ, val, tb)

    async def aclose(self) -> None:
        await self._events.aclose()

    def abort(self) -> bool:
        response, self.response = self.response, None  # a second abort (cancel() after the barge-in's) is a no-op
        if response is None or response.is_closed:
            return False
        network = response.extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is None:
            return False
        # Through a duplicate of the descriptor: uvloop's transport sockets refuse shutdown() (asyncio's allow
        # it), and a shutdown acts on the socket whichever descriptor names it; closing the duplicate leaves the
        # transport's own descriptor for httpx to close.
        try:
            with socket.fromfd(sock.fileno(), sock.family, sock.type) as dup:
                dup.shutdown(socket.SHUT_RDWR)
        except OSError:  # already reset by the peer, or closed: nothing left to shut
            return False
        return True


async def _sse_lines(chunks: AsyncIterator[str], max_chars: int) -> AsyncGenerator[str, None]:
    """Split decoded text into SSE lines, in time linear in the text; a line over `max_chars` is refused."""
    parts: list[str] = []  # the current line so far, as it arrived
    size = 0
    skip_lf = False  # the last chunk ended in CR: a LF opening the next one belongs to the same line end
    async for chunk in chunks:
        if not chunk:
            continue
        start = 1 if skip_lf and chunk[0] == "\n" else 0
        for end in _EOL.finditer(chunk, start):
            if size + end.start() - start > max_chars:
                raise ProviderError(f"llm: stream line longer than {max_chars} characters")
            parts.append(chunk[start : end.start()])
            yield "".join(parts)
            parts, size = [], 0
            start = end.end()
        if start < len(chunk):
            size += len(chunk) - start
            if size > max_chars:
                raise ProviderError(f"llm: stream line longer than {max_chars} characters")
            parts.append(chunk[start:])
        skip_lf = chunk[-1] == "\r"
    if parts:
        yield "".join(parts)


@dataclass(slots=True)
class _PendingCall:
    """A tool call whose pieces are still streaming."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    size: int = 0


class StreamParser:
    """SSE lines of a chat-completions stream in, typed events out.

    Text deltas go out as they come. Tool calls stream as `delta.tool_calls` entries keyed by `index`: the
    first carries the call's `id` and `function.name`, the rest pieces of `function.arguments` (JSON text);
    a call is yielded once the choice has a `finish_reason` (or the stream ends), its arguments parsed, in
    index order (OpenAI API reference, "chat completion chunk" object).
    """

    def __init__(self) -> None:
        self._calls: dict[int, _PendingCall] = {}

    def feed(self, line: str) -> tuple[bool, list[LlmEvent]]:
        """One SSE line -> (stream done, events); comments, keep-alives and role-only chunks give none."""
        if not line.startswith("data:"):
            return False, []
        data = line[5:].strip()
        if data == "[DONE]":
            return True, list(self.finish())
        events: list[LlmEvent] = []
        try:
            chunk = json.loads(data)
            choices = chunk.get("choices") or []
            if not choices:
                return False, []
            choice = choices[0]
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                events.append(TextDelta(content))
            for position, entry in enumerate(delta.get("tool_calls") or []):
                self._add_piece(position, entry)
            finished = choice.get("finish_reason") is not None
        except (ValueError, AttributeError, TypeError) as exc:
            raise ProviderError(f"llm: malformed stream chunk: {exc}") from exc
        if finished:
            events.extend(self.finish())
        return False, events

    def _add_piece(self, position: int, entry: Any) -> None:
        index = entry.get("index", position)
        if not isinstance(index, int):
            raise TypeError("tool call index is not an integer")
        call = self._calls.setdefault(index, _PendingCall())
        if isinstance(entry.get("id"), str) and entry["id"] and not call.id:
            call.id = entry["id"]
        function = entry.get("function") or {}
        # The name comes whole in the call's first piece; later pieces may repeat it (some servers send the whole
        # call in every chunk), so only the first counts.
        if isinstance(function.get("name"), str) and function["name"] and not call.name:
            call.name = function["name"]
        piece = function.get("arguments")
        if isinstance(piece, str) and piece:
            call.size += len(piece)
            if call.size > MAX_TOOL_ARGUMENT_CHARS:
                raise ProviderError(f"llm: tool call arguments longer than {MAX_TOOL_ARGUMENT_CHARS} characters")
            call.arguments.append(piece)

    def finish(self) -> list[ToolCall]:
        """The tool calls streamed so far, parsed, in index order (and forgotten)."""
        calls, self._calls = self._calls, {}
        out: list[ToolCall] = []
        for _, call in sorted(calls.items()):
            if not call.name:
                raise ProviderError("llm: a streamed tool call has no function name")
            text = "".join(call.arguments).strip() or "{}"
            try:
                arguments = json.loads(text)
            except ValueError as exc:
                raise ProviderError(f"llm: tool call {call.name!r} arguments are not JSON: {exc}") from exc
            if not isinstance(arguments, dict):
                raise ProviderError(f"llm: tool call {call.name!r} arguments are not a JSON object")
            if not call.id:  # OpenAI always names a call; a server that does not gets one made up here
                call.id = "call_" + secrets.token_hex(8)
                logger.warning("llm: a tool call came without an id; gave it %s", call.id)
            out.append(ToolCall(call.id, call.name, arguments))
        return out


__all__ = ["OpenAICompatibleLlm", "ProviderTimeout", "StreamParser"]
