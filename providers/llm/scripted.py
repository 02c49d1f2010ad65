"""The embedded default LLM: scripted replies, streamed in the OpenAI chat-completions SSE format.

The server mounts this on itself and talks to it through `OpenAICompatibleLlm` over loopback, so with no keys the
agent still takes the real path: a real HTTP stream that a barge-in really aborts.

Offered the demo tools (app/call/demo_tools.py), it calls them as a hosted model would (`scripted_turn`): an
hours question first reads `check_opening_hours`, a booking that names a day calls `book_table`, and the
request that brings the tool's result gets the answer.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from providers.llm.base import ToolCall

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
# The conversation state's line for the sentence an interruption cut (app/call/conversation.py writes it): a
# "say that again" answers with it whole.
CUT_SENTENCE_LINE = "- the sentence you were saying when cut off (say it again, whole, if they ask): "
KEYS_PREFIX = "[the caller pressed the keys: "  # how the session puts DTMF keys into a caller's turn
NO_WORDS = "[the caller spoke"  # ... and a turn it has no words for


def intent_of(said: str) -> Intent | None:
    """The first intent with a cue in `said` (lower-cased, matched as whole words)."""
    text = " " + " ".join(re.sub(r"[^a-z' ]+", " ", said.lower()).split()) + " "
    for intent in INTENTS:
        if any(f" {cue} " in text for cue in intent.cues):
            return intent
    return None


def _cut_sentence(messages: Sequence[Mapping[str, Any]]) -> str:
    """The cut sentence the session's conversation state offers (app/call/conversation.py), or ""."""
    system = str(messages[0].get("content") or "") if messages and messages[0].get("role") == "system" else ""
    for line in system.splitlines():
        if line.startswith(CUT_SENTENCE_LINE):
            with contextlib.suppress(ValueError):
                return str(json.loads(line[len(CUT_SENTENCE_LINE):]))
    return ""


def scripted_reply(messages: Sequence[Mapping[str, Any]]) -> str:
    """The reply for a conversation: an answer from the intent table for what the caller last said; without
    words (no recognizer), the demo script, cycled by the number of agent turns so far."""
    # What the agent said (a message asking for tools says nothing).
    assistant = [str(m.get("content") or "") for m in messages
                 if m.get("role") == "assistant" and not m.get("tool_calls")]
    said = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
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
        # Cut off mid-sentence: the whole sentence they were hearing, from the conversation state (the history
        # holds only its heard part); otherwise the agent's last words (an interrupted turn ends in a mark).
        cut = _cut_sentence(messages)
        if cut:
            return f"Sorry, I'll say that again. {cut}"
        return f"Of course. {assistant[-1].split(' [')[0]}" if assistant else DEFAULT_ANSWER
    return intent.answer


HOURS_TOOL, BOOKING_TOOL = "check_opening_hours", "book_table"
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "today", "tomorrow")


def day_in(said: str) -> str | None:
    """The first day named in `said` ("friday", "tomorrow"), or None."""
    words = re.sub(r"[^a-z ]+", " ", said.lower()).split()
    return next((w for w in words if w in DAYS), None)


def scripted_turn(messages: Sequence[Mapping[str, Any]], tools: Collection[str] = ()) -> str | ToolCall:
    """The reply, or the tool call the demo agent makes first (when that tool is offered): the read for an hours
    question, the booking for a booking that names a day. A request that ends in a tool's result gets the
    answer from it."""
    if not messages:
        return DEFAULT_ANSWER
    last = messages[-1]
    if last.get("role") == "tool":
        return _answer_from_tool(messages, last)
    if last.get("role") != "user":
        return scripted_reply(messages)
    said = str(last.get("content") or "").split(KEYS_PREFIX)[0].strip()
    intent = intent_of(said) if said and not said.startswith(NO_WORDS) else None
    turn = sum(1 for m in messages if m.get("role") == "user")  # an id per caller turn, the same on a retry
    if intent is not None and intent.name == "hours" and HOURS_TOOL in tools:
        return ToolCall(f"call_hours_{turn}", HOURS_TOOL, {})
    if intent is not None and intent.name == "booking" and BOOKING_TOOL in tools and (day := day_in(said)):
        return ToolCall(f"call_book_{turn}", BOOKING_TOOL, {"day": day.capitalize()})
    return scripted_reply(messages)


def _answer_from_tool(messages: Sequence[Mapping[str, Any]], result: Mapping[str, Any]) -> str:
    call_id = result.get("tool_call_id")
    name = next((c.get("function", {}).get("name") for m in messages for c in (m.get("tool_calls") or [])
                 if isinstance(c, Mapping) and c.get("id") == call_id), None)
    try:
        data = json.loads(str(result.get("content") or ""))
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    if data.get("status") in ("cancelled", "error"):
        return "All right, I have not done that. What would you like instead?" if data["status"] == "cancelled" \
            else "Sorry, I could not do that just now. Can I help with anything else?"
    if name == HOURS_TOOL:
        return next(i.answer for i in INTENTS if i.name == "hours")
    if name == BOOKING_TOOL and data.get("booked"):
        return (f"Done, you are booked for {data.get('day') or 'that day'}. Your reference is "
                f"{' '.join(str(data.get('reference', '')))}.")
    return DEFAULT_ANSWER


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


def sse_tool_call_chunks(call: ToolCall, model: str = "scripted") -> Iterator[bytes]:
    """The whole SSE body of a reply that asks for one tool: the call in one delta (its arguments whole, which
    OpenAI's format allows), then `finish_reason: "tool_calls"`."""
    created = int(time.time())
    ident = f"chatcmpl-{created}"

    def frame(delta: dict[str, Any], finish: str | None) -> bytes:
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    yield frame({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": call.id, "type": "function",
         "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}]}, None)
    yield frame({}, "tool_calls")
    yield b"data: [DONE]\n\n"
