"""The embedded default LLM: scripted replies, streamed in the OpenAI chat-completions SSE format.

The server mounts this on itself and talks to it through `OpenAICompatibleLlm` over loopback, so with no keys the
agent still takes the real path: a real HTTP stream that a barge-in really aborts.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# Said when the caller's words are not known (no recognizer, or it heard nothing): the demo of barge-in itself.
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


@dataclass(frozen=True)
class Intent:
    """What the caller may want: any of `cues` (whole words or phrases) in their words, and the answer."""

    name: str
    cues: tuple[str, ...]
    answer: str  # "" for `repeat`: the agent's last words again


# The demo agent's whole understanding, read in order (the first intent with a cue in the caller's words wins):
# "cancel my booking" is a cancellation before it is a booking, "what time" an hours question.
INTENTS: tuple[Intent, ...] = (
    Intent("goodbye", ("goodbye", "bye", "that's all", "that is all", "hang up", "nothing else"),
           "Thanks for calling bargein. Goodbye!"),
    Intent("repeat", ("say that again", "repeat", "pardon", "come again", "what did you say", "didn't catch",
                      "did not catch", "sorry what"), ""),
    Intent("cancel", ("cancel", "call off", "never mind"),
           "No problem, I have cancelled it for you. Is there anything else I can help with?"),
    Intent("hours", ("open", "opening", "close", "closing", "hours", "what time", "when are you"),
           "We are open from nine to five on weekdays, and from ten to two on Saturdays. We are closed on "
           "Sundays. Can I help with anything else?"),
    Intent("booking", ("book", "booking", "reserve", "reservation", "appointment", "table"),
           "I can book that for you. Which day and what time would suit you?"),
    Intent("thanks", ("thank you", "thanks"), "You are welcome. Is there anything else?"),
)
DEFAULT_ANSWER = (
    "Sorry, in this demo I can only help with our opening hours, a booking or a cancellation. "
    "Could you ask about one of those?"
)
KEYS_PREFIX = "[the caller pressed the keys: "  # how the session puts DTMF keys into a caller's turn
NO_WORDS = "[the caller spoke"  # ... and a turn it has no words for


def intent_of(said: str) -> Intent | None:
    """The first intent with a cue in `said` (lower-cased, matched as whole words)."""
    text = " " + " ".join(re.sub(r"[^a-z' ]+", " ", said.lower()).split()) + " "
    for intent in INTENTS:
        if any(f" {cue} " in text for cue in intent.cues):
            return intent
    return None


def scripted_reply(messages: Sequence[dict[str, str]]) -> str:
    """The reply for a conversation: an answer from the intent table for what the caller last said; without
    words (no recognizer), the demo script, cycled by the number of agent turns so far."""
    assistant = [m.get("content", "") for m in messages if m.get("role") == "assistant"]
    said = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    keys = said[len(KEYS_PREFIX):].split("]")[0].replace(" ", "") if KEYS_PREFIX in said else ""
    words = said.split(KEYS_PREFIX)[0].strip()
    if not words or words.startswith(NO_WORDS):
        if keys:
            return (f"You pressed {' '.join(keys)}. In this demo keys do nothing more, but a real agent could "
                    "route calls on them.")
        return REPLIES[len(assistant) % len(REPLIES)]
    intent = intent_of(words)
    if intent is None:
        return DEFAULT_ANSWER
    if intent.name == "repeat":
        # the agent's last words as the caller heard them (an interrupted turn ends in a bracketed mark)
        return f"Of course. {assistant[-1].split(' [')[0]}" if assistant else DEFAULT_ANSWER
    return intent.answer


_TOKEN = re.compile(r"\S+\s*")


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
