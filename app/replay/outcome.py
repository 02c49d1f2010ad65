"""A call's outcome: the decisions a replay is judged on, read from its event lines.

Only decisions count, not their plumbing: when the agent was cut off (barge-ins, each with the turn it cut),
when the provider was told to flush (clears), what each agent turn's caller heard (text, char offset, whether
it was interrupted) and the conversation's turns (role, start, end). Frames, marks, VAD states and LLM tokens
are how the call got there; they are in the recording for a person to read, not compared.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class BargeIn:
    t: float  # the deciding frame's arrival, seconds from the stream's open
    turn_id: int | None


@dataclass(frozen=True, slots=True)
class Heard:
    """An agent turn as it ended: what it meant to say and what the caller heard of it."""

    turn_id: int
    text: str  # the turn's text as kept (cut at the heard position when interrupted)
    heard_text: str  # what the caller heard (the whole text when it played to the end)
    heard_chars: int
    interrupted: bool


@dataclass(frozen=True, slots=True)
class TurnSpan:
    turn_id: int
    role: str
    start: float | None
    end: float | None


@dataclass(slots=True)
class Outcome:
    bargeins: list[BargeIn] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    heard: list[Heard] = field(default_factory=list)
    turns: list[TurnSpan] = field(default_factory=list)
    end_reason: str | None = None

    def agent_turn(self, turn_id: int) -> Heard | None:
        return next((h for h in self.heard if h.turn_id == turn_id), None)


def outcome_of(lines: Iterable[dict[str, Any]]) -> Outcome:
    """The outcome of one stream's event lines (a recording's or a replay's)."""
    out = Outcome()
    starts: dict[int, tuple[str, float]] = {}
    ends: dict[int, float] = {}
    order: list[int] = []
    for line in lines:
        kind = line.get("type")
        t = float(line.get("t", 0.0))
        if kind == "barge_in":
            turn = line.get("turn_id")
            out.bargeins.append(BargeIn(t, int(turn) if turn is not None else None))
        elif kind == "clear":
            out.clears.append(t)
        elif kind == "turn_start":
            turn_id = int(line["turn_id"])
            if turn_id not in starts:
                order.append(turn_id)
            starts[turn_id] = (str(line.get("role")), t)
        elif kind == "turn_end":
            turn_id = int(line["turn_id"])
            role = str(line.get("role"))
            if turn_id not in starts:
                order.append(turn_id)
                starts[turn_id] = (role, float("nan"))
            ends[turn_id] = t
            if role == "agent":
                text = str(line.get("text") or "")
                heard_text = line.get("heard_text")
                heard = text if heard_text is None else str(heard_text)
                chars = line.get("heard_chars")
                out.heard.append(Heard(turn_id, text, heard, len(heard) if chars is None else int(chars),
                                       bool(line.get("interrupted"))))
        elif kind == "call_end":
            out.end_reason = str(line.get("reason"))
    for turn_id in order:
        role, start = starts[turn_id]
        out.turns.append(TurnSpan(turn_id, role, None if start != start else start, ends.get(turn_id)))
    return out
