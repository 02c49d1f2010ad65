"""The call's record: its turns, as heard, and every barge-in with its timings. The single record of a call."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["agent", "user"]


@dataclass(slots=True)
class Turn:
    """One turn. An interrupted agent turn keeps what it meant to say (`intended_text`) and what was heard."""

    id: int
    role: Role
    text: str = ""
    started_at: float = 0.0  # wall-clock seconds (epoch), for people reading the record
    ended_at: float | None = None
    interrupted: bool = False
    intended_text: str | None = None
    heard_text: str | None = None
    heard_chars: int | None = None
    heard_audio_ms: float | None = None
    audio_ms: float | None = None  # agent turns: how much audio was synthesised
    fallback: bool = False  # agent turns: a provider failed and the fallback was spoken
    keys: str = ""  # caller turns: the DTMF keys pressed in it, in order
    # Caller turns: it stopped the agent mid-turn and held no words, or only listener words ("mm-hmm"), so the
    # agent went on with the rest of its cut turn instead of answering it (app/call/going_on.py).
    went_on: bool = False
    continues: int | None = None  # agent turns: the id of the cut agent turn whose rest this one says


@dataclass(frozen=True, slots=True)
class BargeInEvent:
    """One barge-in. Timings are ms from the arrival of the caller frame that triggered it."""

    id: str
    turn_id: int | None
    at: float  # wall-clock seconds (epoch)
    confidence: float
    sustained_ms: float
    peak_dbfs: float
    clear_sent_ms: float
    tts_stopped_ms: float | None
    llm_closed_ms: float | None  # None when the agent resumed (nothing was closed)
    total_ms: float
    cut_word_index: int | None
    cut_char_offset: int | None
    heard_audio_ms: float | None
    outcome: str = "stopped"  # "stopped" (the agent's turn ended) or "resumed" (a false or backchannel stop)
    reason: str = ""
    settled_ms: float = 0.0  # from the deciding frame to the decision that settled it (see BargeInHandled)
    resumed_from_ms: float | None = None
    in_flight_tools_canceled: int = 0  # mutations in flight the barge-in cancelled
    in_flight_tools_completed: int = 0  # reads in flight it let run to completion
    # The kind of the caller's words that followed it, once heard (app/bargein/words.py: backchannel, stop,
    # correction, cancellation, redirect, clarification); None: no words, or not heard (no recognizer).
    kind: str | None = None


@dataclass(slots=True)
class CallRecord:
    call_id: str
    provider: str
    started_at: float
    stream_ids: list[str] = field(default_factory=list)
    ended_at: float | None = None
    end_reason: str | None = None
    turns: list[Turn] = field(default_factory=list)
    bargeins: list[BargeInEvent] = field(default_factory=list)
    invalid_frames: int = 0
    generation: int = 0  # the playback generation reached; a reconnecting stream starts after it
    _next_turn: int = 1

    def new_turn(self, role: Role, started_at: float) -> Turn:
        turn = Turn(id=self._next_turn, role=role, started_at=started_at)
        self._next_turn += 1
        self.turns.append(turn)
        return turn

    def history(self) -> list[Turn]:
        """Turns as the caller experienced them, for the next LLM request: a caller turn without words that the
        agent went on over (a cough that stopped it) is a pause in the agent's talk, not a turn."""
        return [t for t in self.turns if (t.role == "user" and not (t.went_on and not t.text)) or t.text]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_next_turn")
        data["active"] = self.ended_at is None
        return data
