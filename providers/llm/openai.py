"""Any OpenAI-compatible chat-completions endpoint, streamed over server-sent events with httpx."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator

import httpx

from providers.errors import ProviderError, ProviderTimeout, map_vendor_errors
from providers.llm.base import ChatMessage

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

    async def stream(self, messages: list[ChatMessage]) -> AsyncGenerator[str, None]:
        body = {"model": self._model, "messages": messages, "stream": True}
        with map_vendor_errors("llm"):
            async with self._client.stream("POST", self._url, json=body, headers=self._headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise ProviderError(
                        f"llm: HTTP {response.status_code}", retryable=response.status_code >= 500
                    )
                async with contextlib.aclosing(_sse_lines(response.aiter_text(), MAX_LINE_CHARS)) as lines:
                    async for line in lines:
                        done, piece = _parse_sse_line(line)
                        if done:
                            return
                        if piece:
                            yield piece

    async def aclose(self) -> None:
        await self._client.aclose()


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


def _parse_sse_line(line: str) -> tuple[bool, str | None]:
    """One SSE line -> (stream done, content delta or None for comments, keep-alives and role-only chunks)."""
    if not line.startswith("data:"):
        return False, None
    data = line[5:].strip()
    if data == "[DONE]":
        return True, None
    try:
        chunk = json.loads(data)
        choices = chunk.get("choices") or []
        if not choices:
            return False, None
        content = (choices[0].get("delta") or {}).get("content")
    except (ValueError, AttributeError, TypeError) as exc:
        raise ProviderError(f"llm: malformed stream chunk: {exc}") from exc
    return False, content if isinstance(content, str) else None


__all__ = ["OpenAICompatibleLlm", "ProviderTimeout"]
