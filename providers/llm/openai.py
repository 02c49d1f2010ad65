"""Any OpenAI-compatible chat-completions endpoint, streamed over server-sent events with httpx."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator

import httpx

from providers.errors import ProviderError, ProviderTimeout, map_vendor_errors
from providers.llm.base import ChatMessage

logger = logging.getLogger(__name__)


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
                async for line in response.aiter_lines():
                    done, piece = _parse_sse_line(line)
                    if done:
                        return
                    if piece:
                        yield piece

    async def aclose(self) -> None:
        await self._client.aclose()


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
