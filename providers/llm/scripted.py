"""The embedded default LLM: scripted replies, streamed in the OpenAI chat-completions SSE format.

The server mounts this on itself and talks to it through `OpenAICompatibleLlm` over loopback, so with no keys the
agent still takes the real path: a real HTTP stream that a barge-in really aborts.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence

REPLIES: tuple[str, ...] = (
    "I hear you. This is the embedded demo agent, so I cannot understand words yet, but I can tell when you "
    "speak. Try talking while I am in the middle of a sentence, and notice how quickly I stop. "
    "Then let me finish a reply, and I will answer again.",
    "Thanks. Every time you cut in, the server sends the provider a clear message, stops my speech, closes "
    "the language model stream and notes exactly how much of my sentence you heard. "
    "You can read it all back from the call record afterwards.",
    "Got it. Background noise such as rain, traffic or a vacuum cleaner should not stop me, but your voice "
    "should. If I ever stop for a cough, that is something we want to know about.",
)

_TOKEN = re.compile(r"\S+\s*")


def scripted_reply(messages: Sequence[dict[str, str]]) -> str:
    """The reply for a conversation: cycles through the script by the number of agent turns so far."""
    assistant_turns = sum(1 for m in messages if m.get("role") == "assistant")
    return REPLIES[assistant_turns % len(REPLIES)]


def tokens(text: str) -> list[str]:
    """Word-sized pieces with their trailing space, as an LLM would stream them."""
    return _TOKEN.findall(text)


def sse_chunks(text: str, model: str = "scripted") -> Iterator[bytes]:
    """The whole SSE body for `text`, chunk by chunk (without pacing)."""
    created = int(time.time())
    ident = f"chatcmpl-{created}"

    def frame(delta: dict[str, str], finish: str | None) -> bytes:
        chunk = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    yield frame({"role": "assistant"}, None)
    for token in tokens(text):
        yield frame({"content": token}, None)
    yield frame({}, "stop")
    yield b"data: [DONE]\n\n"
