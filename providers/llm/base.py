"""The LLM interface: stream a chat reply as text pieces."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, TypedDict


class ChatMessage(TypedDict):
    role: str
    content: str


class LlmClient(Protocol):
    def stream(self, messages: list[ChatMessage]) -> AsyncGenerator[str, None]:
        """Yield the reply's text as it streams. Closing the iterator closes the HTTP stream."""
        ...

    async def aclose(self) -> None: ...
