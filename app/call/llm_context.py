"""The messages of an LLM request: the system prompt, then the call's history as the model reads it.

Theory of operation
-------------------
The model sees the call as the caller lived it, not as the agent meant it: a caller's turn is its words and
the keys pressed (`user_content`; a turn with neither says that words were spoken but are not known, so the
model does not read silence into it); an agent turn the caller cut off is only what they heard, followed by
`CUT_MARK`, so the model neither repeats what was heard nor assumes the rest was (unless the agent went on
with the rest after a caller turn without words: then it is plain heard text, the rest the next turn); the
settled tool calls and results of each turn go before that turn's words, once. Which of the agent's turns the
request is for (`current`) is left out. The conversation state (app/call/conversation.py) is added to the
system prompt by the session, which knows whether the agent is talking.

Pure: the session passes the record's history and the tool ledger in (app/call/agent_turns.py `_messages`).
"""

from __future__ import annotations

from collections.abc import Iterable

from app.call.tools import ToolLedger
from app.transcript import Turn
from providers.llm.base import ChatMessage

# An interrupted agent turn, as the LLM reads it: the heard text, then this (the model should not repeat what
# the caller already heard, nor assume they heard the rest).
CUT_MARK = " [cut off here: the caller interrupted]"
NO_TRANSCRIPT = "[the caller spoke; their words are not known (no recognizer, or it heard none)]"


def user_content(turn: Turn) -> str:
    """A caller's turn as the LLM reads it: the words, and the keys pressed."""
    keys = f"[the caller pressed the keys: {' '.join(turn.keys)}]" if turn.keys else ""
    if turn.text:
        return f"{turn.text} {keys}" if keys else turn.text
    return keys or NO_TRANSCRIPT


def llm_messages(system: str, history: Iterable[Turn], tools: ToolLedger, current: Turn | None) -> list[ChatMessage]:
    """The request's messages: `system`, then `history` (the record's, `current` left out) with each turn's
    settled tool exchanges from `tools` before its words."""
    messages: list[ChatMessage] = [{"role": "system", "content": system}]
    # Each turn's settled tool calls and results go before that turn's words (and once only).
    exchanges = [t for t in tools.turn_ids() if current is None or t != current.id]
    history = list(history)
    # A cut turn the agent went on with after a caller turn without words (app/call/going_on.py): the caller
    # heard all of it, with a pause, so it is not marked as cut.
    continued = {t.continues for t in history if t.continues is not None}
    for turn in history:
        if turn is current:
            continue
        while exchanges and exchanges[0] <= turn.id:
            messages.extend(tools.context(exchanges.pop(0)))
        if turn.role == "user":
            messages.append({"role": "user", "content": user_content(turn)})
        elif turn.interrupted and turn.id not in continued:  # what the caller heard, never the rest, and the cut
            messages.append({"role": "assistant", "content": f"{turn.text}{CUT_MARK}"})
        else:
            messages.append({"role": "assistant", "content": turn.text})
    for turn_id in exchanges:  # an agent turn cut before it said a word: its calls still count
        messages.extend(tools.context(turn_id))
    return messages
