"""The replay's LLM: each agent turn gets the reply the recording streamed, at the recorded pace.

A replay needs no key and no network: the model's output is part of the recording (`llm_token` events, each
with its time). `RecordedReplies.from_lines` cuts them into one reply per LLM request, in the order the
requests were made, each token with its delay from that request's `llm_open`. Request n of the replay gets
reply n, whatever the messages (the build under test may word the history differently; the model's answer
is what was recorded).

Limits, stated: a reply is only as long as what was streamed before the recorded call closed the stream, so
if the recorded agent was interrupted earlier than the replayed one would be, the replayed reply ends where
the recording's did. A request past the last recorded one gets the embedded scripted model's reply
(providers/llm/scripted.py) at EXTRA_TOKEN_DELAY_S a token. A recorded "error" ends the reply with a
ProviderError; a recorded "timeout" stalls the stream so the turn's own timeout fires.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.errors import ProviderError
from providers.llm.base import ChatMessage, LlmEvent, TextDelta, ToolSchema
from providers.llm.scripted import scripted_reply, tokens

EXTRA_TOKEN_DELAY_S = 0.025  # the embedded model's default pace (EMBEDDED_LLM_TOKEN_DELAY_MS)
_STALL_S = 3600.0


@dataclass(slots=True)
class Reply:
    tokens: list[tuple[float, str]] = field(default_factory=list)  # (seconds after llm_open, text)
    ending: str = "done"  # the recorded llm_close reason

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.tokens)


@dataclass(slots=True)
class RecordedReplies:
    replies: list[Reply]

    @classmethod
    def from_lines(cls, lines: Sequence[dict[str, Any]]) -> RecordedReplies:
        opened: dict[int, float] = {}
        by_turn: dict[int, Reply] = {}
        order: list[int] = []
        for line in lines:
            kind = line.get("type")
            if kind not in ("llm_open", "llm_token", "llm_close"):
                continue
            turn = int(line.get("turn_id") or 0)
            t = float(line.get("t", 0.0))
            if kind == "llm_open":
                opened[turn] = t
                by_turn[turn] = Reply()
                order.append(turn)
            elif turn in by_turn:
                if kind == "llm_token":
                    # To the microsecond, as a recording keeps times: a baseline written by `--update` then gives
                    # back exactly the delays its replay used.
                    by_turn[turn].tokens.append((round(t - opened[turn], 6), str(line.get("text", ""))))
                else:
                    by_turn[turn].ending = str(line.get("reason", "done"))
        return cls([by_turn[turn] for turn in order])

    @classmethod
    def from_texts(cls, texts: Sequence[str], token_delay_s: float = EXTRA_TOKEN_DELAY_S) -> RecordedReplies:
        """Replies written by hand (scenarios): word-sized tokens at `token_delay_s`."""
        return cls([Reply([(i * token_delay_s, tok) for i, tok in enumerate(tokens(text))]) for text in texts])


class ReplayLlm:
    """An LlmClient (providers/llm/base.py) serving `RecordedReplies` on the running loop's clock."""

    def __init__(self, replies: RecordedReplies, token_timeout_s: float = 5.0) -> None:
        self.replies = replies
        self.token_timeout_s = token_timeout_s
        self.requests: list[list[ChatMessage]] = []

    async def stream(
        self, messages: list[ChatMessage], tools: Sequence[ToolSchema] = ()
    ) -> AsyncGenerator[LlmEvent, None]:
        n = len(self.requests)
        self.requests.append(list(messages))
        loop = asyncio.get_running_loop()
        opened = loop.time()
        if n < len(self.replies.replies):
            reply = self.replies.replies[n]
        else:
            text = scripted_reply([{"role": m["role"], "content": m["content"]} for m in messages])
            reply = Reply([(i * EXTRA_TOKEN_DELAY_S, tok) for i, tok in enumerate(tokens(text))])
        for delay, text in reply.tokens:
            wait = opened + delay - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            yield TextDelta(text)
        if reply.ending == "error":
            raise ProviderError("replay: the recorded LLM stream failed here", retryable=False)
        if reply.ending == "timeout":
            await asyncio.sleep(self.token_timeout_s if reply.tokens else _STALL_S)
            raise TimeoutError("replay: the recorded LLM stream timed out here")

    async def aclose(self) -> None:
        return None
