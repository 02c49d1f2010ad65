"""The conversation's state as the LLM reads it: what the agent is doing and what the caller did to it.

Theory of operation
-------------------
A model that only sees the chat history cannot tell that its last answer was cut off, that a lookup is
still running, or that the caller has interrupted it three times already (and likely wants it shorter).
`ConversationState` is that state, built by the session from the call's record when it makes an LLM
request (`conversation_state`, pure: the turns, the barge-ins and the tools in flight are arguments), and
rendered as a few lines appended to the system message (`render`), so any OpenAI-compatible model reads it
without a tool of its own. AGENT_STATE_IN_PROMPT turns it off.

The fields are the ones the issue names: agent speaking, the last agent utterance (complete or cut, and then
only the words the caller heard), the tools in flight, the interrupt count and the last interrupted turn; and,
after a cut, the whole sentence the caller was hearing (`cut_sentence`): a caller who cuts in with "sorry?"
wants that sentence again, and the history holds only its heard part. It is offered as state, never put in
the history as said.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from app.transcript import BargeInEvent, Turn
from providers.llm.scripted import CUT_SENTENCE_LINE  # the embedded model reads the line back

_SENTENCE_END = ".!?"


def sentence_at(text: str, offset: int) -> str:
    """The sentence of `text` holding the character before `offset` (the last one heard), whole."""
    if not text or offset <= 0:
        return text[: next((i + 1 for i, c in enumerate(text) if c in _SENTENCE_END), len(text))].strip()
    last = min(offset, len(text)) - 1
    start = max((i + 1 for i in range(last) if text[i] in _SENTENCE_END), default=0)
    end = next((i + 1 for i in range(last, len(text)) if text[i] in _SENTENCE_END), len(text))
    return text[start:end].strip()


@dataclass(frozen=True, slots=True)
class ConversationState:
    agent_speaking: bool
    last_agent_utterance: str  # what the caller heard of the agent's last turn ("" before any)
    last_agent_utterance_cut: bool  # ... and whether the caller cut it off
    tools_in_flight: tuple[str, ...]  # names of the tool calls still running
    interrupt_count: int  # barge-ins that stopped the agent so far
    last_interrupted_turn: int | None  # the id of the agent turn most recently cut off
    last_interrupted_heard: str  # ... and what the caller heard of it
    cut_sentence: str = ""  # the whole sentence the caller was hearing when they cut in (last utterance only)

    def render(self) -> str:
        """The state as the system message's last lines (strings JSON-quoted, so nothing in a transcript can
        pass for a line of its own)."""
        lines = [
            "Conversation state (kept by the phone system, not said by the caller):",
            f"- agent speaking: {'yes' if self.agent_speaking else 'no'}",
        ]
        if self.last_agent_utterance or self.last_agent_utterance_cut:
            how = "cut off by the caller; they heard only" if self.last_agent_utterance_cut else "complete"
            lines.append(f"- your last utterance ({how}): {json.dumps(self.last_agent_utterance)}")
        if self.cut_sentence:
            lines.append(f"{CUT_SENTENCE_LINE}{json.dumps(self.cut_sentence)}")
        tools = ", ".join(self.tools_in_flight) if self.tools_in_flight else "none"
        lines.append(f"- tools in flight: {tools}")
        lines.append(f"- times the caller interrupted you: {self.interrupt_count}")
        if self.last_interrupted_turn is not None:
            lines.append(f"- last interrupted turn: #{self.last_interrupted_turn}, heard "
                         f"{json.dumps(self.last_interrupted_heard)}")
        return "\n".join(lines)


def conversation_state(
    turns: Sequence[Turn],
    bargeins: Sequence[BargeInEvent],
    *,
    agent_speaking: bool,
    tools_in_flight: Sequence[str] = (),
    current: Turn | None = None,
) -> ConversationState:
    """The state from the call's record; `current` is the agent turn being answered for (not yet said)."""
    agent = [t for t in turns if t.role == "agent" and t is not current and t.ended_at is not None]
    last = agent[-1] if agent else None
    cut = [t for t in agent if t.interrupted]
    last_cut = cut[-1] if cut else None
    return ConversationState(
        agent_speaking=agent_speaking,
        last_agent_utterance=last.text if last is not None else "",
        last_agent_utterance_cut=last.interrupted if last is not None else False,
        tools_in_flight=tuple(tools_in_flight),
        interrupt_count=sum(1 for b in bargeins if b.outcome == "stopped"),
        last_interrupted_turn=last_cut.id if last_cut is not None else None,
        last_interrupted_heard=(last_cut.heard_text or "") if last_cut is not None else "",
        cut_sentence=_cut_sentence(last) if last is not None and last.interrupted else "",
    )


def _cut_sentence(turn: Turn) -> str:
    intended = turn.intended_text or ""
    heard = turn.heard_text or ""
    offset = len(heard) if intended.startswith(heard) else (turn.heard_chars or 0)
    return sentence_at(intended, offset)
