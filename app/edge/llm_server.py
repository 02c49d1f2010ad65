"""A loopback OpenAI-compatible LLM that streams scripted replies as server-sent events.

It is a real HTTP/1.1 server on asyncio streams with no framework in between, so a client that goes away is
seen exactly: while a reply streams, a watcher reads the socket, and the end-of-file it gets when the client
closes (or the reset) is recorded with its time and stops the stream before another token is written.

    async with ScriptedLlmServer(["Hello there. How can I help?"]) as llm:
        client = OpenAiLlm(base_url=llm.base_url, ...)      # llm.base_url == "http://127.0.0.1:PORT/v1"
        ...
        assert llm.requests[0].disconnected

Modes, for fallback tests (settable at any time; they apply to the next request):
`"ok"`; `"dead"` reads the request and never answers; `"close"` closes the connection without answering;
`"stall_after=N"` streams N tokens and then nothing more; `"http_error=N"` answers status N with an error
body.

A reply may ask for tools: `ToolCallReply(calls=[ScriptedToolCall(id, name, arguments)], text=...)` streams
its text, then each call as OpenAI streams them (API reference, chat completion chunk `delta.tool_calls`): a
first delta with the call's `index`, `id`, `type` and `function.name` (and empty `arguments`), then the
arguments' JSON text in pieces of `TOOL_ARGUMENT_CHUNK` characters, each a token apart, and a last chunk with
`finish_reason: "tool_calls"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.edge.http_loopback import HttpLoopback

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ScriptedToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCallReply:
    """A reply that asks for tools: `text` first (may be empty), then the calls."""

    calls: tuple[ScriptedToolCall, ...] | list[ScriptedToolCall]
    text: str = ""


Reply = str | ToolCallReply
Replies = Sequence[Reply] | Callable[[list[dict[str, Any]]], Reply]
TOOL_ARGUMENT_CHUNK = 8  # characters of a call's arguments per streamed delta

_MAX_HEAD = 64 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def tokenize(reply: str) -> list[str]:
    """Words with their trailing whitespace, the way the scripted model streams them."""
    return re.findall(r"\S+\s*", reply)


@dataclass(slots=True)
class LlmRequest:
    """One request the server received, and what it did with it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any] | None
    started_at: float  # when the request had been read in full
    mode: str
    reply: str = ""
    tool_calls: list[ScriptedToolCall] = field(default_factory=list)  # the calls the reply asked for
    tokens: list[tuple[str, float]] = field(default_factory=list)  # content tokens written, with when
    completed: bool = False  # the whole reply and `[DONE]` were written
    finished_at: float | None = None
    disconnected: bool = False  # the client went away before the end
    disconnected_at: float | None = None  # when the server noticed

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = (self.body or {}).get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def text_sent(self) -> str:
        return "".join(token for token, _ in self.tokens)

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The `tools` the request offered."""
        tools = (self.body or {}).get("tools")
        return tools if isinstance(tools, list) else []


class _Disconnected(Exception):
    pass


class _Connection:
    """A byte buffer over one socket, so the disconnect watcher can keep what a client pipelines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()

    async def _fill(self) -> None:
        try:
            data = await self.reader.read(65536)
        except ConnectionError as exc:
            raise _Disconnected from exc
        if not data:
            raise _Disconnected
        self.buf += data

    async def read_head(self) -> bytes:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > _MAX_HEAD:
                raise ValueError("request head too large")
            await self._fill()
        head = bytes(self.buf[:end])
        del self.buf[: end + 4]
        return head

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            while (eol := self.buf.find(b"\r\n")) < 0:
                await self._fill()
            size = int(bytes(self.buf[:eol]).split(b";")[0], 16)
            del self.buf[: eol + 2]
            chunk = await self.read_exactly(size + 2)
            body += chunk[:size]
            if size == 0:
                return bytes(body)  # trailers are not expected from chat clients

    async def watch(self) -> None:
        """Return (via _Disconnected) the moment the client closes or resets the socket."""
        while True:
            await self._fill()

    async def write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise _Disconnected
        self.writer.write(data)
        try:
            await self.writer.drain()
        except ConnectionError as exc:
            raise _Disconnected from exc


class ScriptedLlmServer(HttpLoopback):
    """An OpenAI-compatible `/v1/chat/completions` on 127.0.0.1 that streams scripted replies.

    `replies` is a list (request n gets `replies[n % len(replies)]`) or a function of the request's
    messages. Content tokens go out `token_delay_s` apart on an absolute schedule, the first one
    `first_token_delay_s` after the request was read. A token is a word with its trailing whitespace, or,
    with `chunk_chars`, that many characters of the reply whatever they are (`chunk_chars=len(reply)` sends
    the whole reply as one delta, on one line). `ensure_ascii=False` writes the JSON as raw UTF-8, as
    llama.cpp and vLLM do, instead of escaping every non-ASCII character.
    """

    MODES = re.compile(r"ok|dead|close|stall_after=(\d+)|http_error=(\d{3})")

    def __init__(
        self,
        replies: Replies,
        token_delay_s: float = 0.02,
        first_token_delay_s: float = 0.0,
        *,
        mode: str = "ok",
        model: str = "scripted",
        chunk_chars: int | None = None,
        ensure_ascii: bool = True,
        clock: Clock = time.monotonic,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not callable(replies) and not replies:
            raise ValueError("replies must not be empty")
        self.replies = replies
        self.token_delay_s = token_delay_s
        self.first_token_delay_s = first_token_delay_s
        super().__init__(mode, host, port)
        self.model = model
        if chunk_chars is not None and chunk_chars < 1:
            raise ValueError("chunk_chars must be at least 1")
        self.chunk_chars = chunk_chars
        self.ensure_ascii = ensure_ascii
        self._clock = clock
        self._connections: dict[asyncio.Task[Any], _Connection] = {}
        self._stopping = False
        self._completions = 0
        self.requests: list[LlmRequest] = []

    @property
    def chat_requests(self) -> list[LlmRequest]:
        return [r for r in self.requests if r.path.rstrip("/").endswith("/chat/completions")]

    async def _end_connections(self) -> None:
        # Closing the socket lets each handler finish on its own: a cancelled connection task is logged as an
        # error by asyncio.streams on 3.11.
        self._stopping = True
        handlers = list(self._connections)
        for conn in self._connections.values():
            conn.writer.close()
        if handlers:
            _, late = await asyncio.wait(handlers, timeout=1.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._stopping = False

    # --- HTTP ----------------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Connection(reader, writer)
        self._connections[task] = conn
        try:
            while await self._serve_one(conn):
                pass
        except (_Disconnected, ValueError):
            pass
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve_one(self, conn: _Connection) -> bool:
        """Read and answer one request; False when the connection must close."""
        head = await conn.read_head()
        lines = head.decode("latin-1").split("\r\n")
        method, path, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raw = await conn.read_chunked()
        else:
            raw = await conn.read_exactly(int(headers.get("content-length", "0")))
        body: dict[str, Any] | None = None
        if raw:
            with contextlib.suppress(ValueError):
                parsed = json.loads(raw)
                body = parsed if isinstance(parsed, dict) else None
        keep_alive = headers.get("connection", "").lower() != "close"
        route = path.split("?", 1)[0].rstrip("/")
        record = LlmRequest(method, path, headers, body, self._clock(), self.mode)
        self.requests.append(record)

        if route == "/v1/models" and method == "GET":
            models = {
                "object": "list",
                "data": [{"id": self.model, "object": "model", "owned_by": "bargein"}],
            }
            await self._send_json(conn, 200, models, keep_alive)
            record.completed, record.finished_at = True, self._clock()
            return keep_alive
        if route != "/v1/chat/completions":
            await self._send_json(conn, 404, _error("no such route", "invalid_request_error"), keep_alive)
            return keep_alive
        if method != "POST":
            await self._send_json(conn, 405, _error("use POST", "invalid_request_error"), keep_alive)
            return keep_alive
        if body is None or not isinstance(body.get("messages"), list):
            await self._send_json(conn, 400, _error("messages required", "invalid_request_error"), keep_alive)
            return keep_alive

        reply = self._reply_for(record.messages)
        if isinstance(reply, ToolCallReply):
            record.reply, record.tool_calls = reply.text, list(reply.calls)
        else:
            record.reply = reply
        mode = record.mode
        if mode == "close":
            return False
        if mode.startswith("http_error="):
            status = int(mode.split("=", 1)[1])
            await self._send_json(conn, status, _error("scripted failure", "server_error"), keep_alive)
            return keep_alive
        work = self._dead() if mode == "dead" else self._complete(conn, record, body, keep_alive)
        return await self._watched(conn, record, work) and keep_alive

    async def _watched(self, conn: _Connection, record: LlmRequest, work: Coroutine[Any, Any, None]) -> bool:
        """Run one response while watching the socket; False if the client went away first."""
        responder = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(conn.watch())
        try:
            await asyncio.wait({responder, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (responder, watcher):
                task.cancel()
            await asyncio.gather(responder, watcher, return_exceptions=True)
        if responder.done() and not responder.cancelled():
            error = responder.exception()
            if error is None:
                return True
            if not isinstance(error, _Disconnected):
                raise error
        if not self._stopping:
            record.disconnected = True
            record.disconnected_at = self._clock()
        return False

    @staticmethod
    async def _dead() -> None:
        await asyncio.Event().wait()

    def _reply_for(self, messages: list[dict[str, Any]]) -> Reply:
        n = self._completions
        self._completions += 1
        if callable(self.replies):
            return self.replies(messages)
        return self.replies[n % len(self.replies)]

    async def _complete(
        self, conn: _Connection, record: LlmRequest, body: dict[str, Any], keep_alive: bool
    ) -> None:
        completion_id = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        reply, n = record.reply, self.chunk_chars
        tokens = tokenize(reply) if n is None else [reply[i : i + n] for i in range(0, len(reply), n)]
        if not body.get("stream"):
            await asyncio.sleep(self.first_token_delay_s + self.token_delay_s * max(0, len(tokens) - 1))
            message: dict[str, Any] = {"role": "assistant", "content": record.reply}
            if record.tool_calls:
                message["tool_calls"] = [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                    for c in record.tool_calls
                ]
            await self._send_json(
                conn,
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": self.model,
                    "choices": [{"index": 0, "message": message,
                                 "finish_reason": "tool_calls" if record.tool_calls else "stop"}],
                    "usage": _usage(record.messages, tokens),
                },
                keep_alive,
            )
            record.tokens = [(t, self._clock()) for t in tokens]
            record.completed, record.finished_at = True, self._clock()
            return

        stall = re.fullmatch(r"stall_after=(\d+)", record.mode)
        limit = int(stall.group(1)) if stall else None

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return _sse(json.dumps(data, separators=(",", ":"), ensure_ascii=self.ensure_ascii))

        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
            f"transfer-encoding: chunked\r\nconnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        )
        await conn.write(head.encode())
        first_at = record.started_at + self.first_token_delay_s
        for i, token in enumerate(tokens):
            if limit is not None and i >= limit:
                await self._dead()
            delay = first_at + i * self.token_delay_s - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            data = chunk({"role": "assistant", "content": token} if i == 0 else {"content": token}, None)
            await conn.write(data)
            record.tokens.append((token, self._clock()))
        if limit == len(tokens):
            await self._dead()  # stalled right before the final chunk
        n_sent = len(tokens)
        for index, call in enumerate(record.tool_calls):
            arguments = json.dumps(call.arguments)
            pieces = [arguments[i : i + TOOL_ARGUMENT_CHUNK] for i in range(0, len(arguments), TOOL_ARGUMENT_CHUNK)]
            head_delta = {"index": index, "id": call.id, "type": "function",
                          "function": {"name": call.name, "arguments": ""}}
            deltas = [head_delta] + [{"index": index, "function": {"arguments": p}} for p in pieces]
            for delta in deltas:
                delay = first_at + n_sent * self.token_delay_s - self._clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                role = {"role": "assistant", "content": None} if n_sent == 0 else {}
                await conn.write(chunk({**role, "tool_calls": [delta]}, None))
                n_sent += 1
        tail = chunk({}, "tool_calls" if record.tool_calls else "stop")
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": [],
                "usage": _usage(record.messages, tokens),
            }
            tail += _sse(json.dumps(usage, separators=(",", ":")))
        await conn.write(tail + _sse("[DONE]") + b"0\r\n\r\n")
        record.completed, record.finished_at = True, self._clock()

    @staticmethod
    async def _send_json(conn: _Connection, status: int, payload: dict[str, Any], keep_alive: bool) -> None:
        data = json.dumps(payload).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\nconnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        )
        await conn.write(head.encode() + data)


def _sse(data: str) -> bytes:
    """One server-sent event as one HTTP chunk."""
    event = f"data: {data}\n\n".encode()
    return f"{len(event):x}\r\n".encode() + event + b"\r\n"


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _usage(messages: list[dict[str, Any]], tokens: list[str]) -> dict[str, int]:
    prompt = sum(len(tokenize(str(m.get("content") or ""))) for m in messages)
    return {"prompt_tokens": prompt, "completion_tokens": len(tokens), "total_tokens": prompt + len(tokens)}
