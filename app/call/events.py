"""What happened in a call, as typed events on one per-call stream.

Theory of operation. A call's logic (session, outbox, turn, the detector's state machine) says what it did by
emitting an event here; it never writes a file, a metric or a log line about it. Whoever needs to know
subscribes to the call's `CallEvents`: the recorder writes every event to the call's file, a replay collects
them to compare with a recording, a test asserts on them. Every event carries `t`, the call's clock (the event
loop's time, see app/clock.py) when it happened, so a recording replayed on a virtual clock produces the same
events at the same `t`.

The stream is synchronous and in order: `emit` calls each subscriber before it returns, so a subscriber sees
the events in the order the call made its decisions, with nothing in between. Subscribers therefore must be
cheap and must not raise (a recorder hands the line to its writer thread and returns).

Two kinds of subscriber. Every call has its bookkeeping (app/call/bookkeeping.py: the call record's barge-ins
and the barge-in metrics), which needs only the call's decisions: it subscribes with `frames=False`. The
per-frame events (ws_in, ws_out, vad, mark_sent, mark_acked, llm_token) are built only while a subscriber
wants them (`events.active`: a recorder, a replay, a test), so a call that is not recorded pays one truth test
per frame for them.

Event names on the wire (a recording's `type` field) are the snake_case `kind` of each class, and the fields
are the dataclass fields; adding a field is backwards compatible, renaming one is a format version bump
(app/record/format.py).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallEvent:
    kind: ClassVar[str] = "event"
    per_frame: ClassVar[bool] = False  # one per frame or chunk: only `frames=True` subscribers get it
    t: float


# -- the wire ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WireReceived(CallEvent):
    """One text frame from the provider, as it arrived (`t` is its arrival time)."""

    kind: ClassVar[str] = "ws_in"
    per_frame: ClassVar[bool] = True
    text: str


@dataclass(frozen=True, slots=True)
class WireSent(CallEvent):
    """One text frame written to the provider."""

    kind: ClassVar[str] = "ws_out"
    per_frame: ClassVar[bool] = True
    text: str


# -- hearing the caller ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VadChanged(CallEvent):
    """The detector's hysteresis moved (quiet, starting, speaking, stopping)."""

    kind: ClassVar[str] = "vad"
    per_frame: ClassVar[bool] = True
    state: str
    previous: str
    probability: float  # the classifier's probability for the window that moved it
    level_dbfs: float  # the loudest 20 ms frame of that window (-120 when below the energy gate)


@dataclass(frozen=True, slots=True)
class PolicyChanged(CallEvent):
    """The barge-in policy's state moved (app/bargein/detector.py): what it saw, what it did, and why."""

    kind: ClassVar[str] = "policy"
    state: str
    previous: str
    observation: str
    action: str
    reason: str


@dataclass(frozen=True, slots=True)
class BargeInDecided(CallEvent):
    """The detector decided the caller is talking over the agent (`t` is the deciding frame's arrival)."""

    kind: ClassVar[str] = "barge_in"
    id: str
    turn_id: int | None
    confidence: float
    sustained_ms: float
    peak_dbfs: float


@dataclass(frozen=True, slots=True)
class ClearSent(CallEvent):
    """The provider's flush went out (`t` is after the write returned)."""

    kind: ClassVar[str] = "clear"
    barge_in_id: str
    heard_turn_id: int | None
    heard_audio_ms: float  # how far into that turn's audio the caller had heard


@dataclass(frozen=True, slots=True)
class BargeInHandled(CallEvent):
    """A barge-in is settled and every step of it is done.

    `clear_sent_ms` is from the deciding frame's arrival (`BargeInDecided.t`). The rest is from the decision
    that settled it, `settled_ms` after that frame: the same frame for the `immediate` policy; for `resume`
    and `confirm`, the frame or the second look that showed the caller taking the turn (`outcome` "stopped")
    or not (`outcome` "resumed": the agent went on from `resumed_from_ms` of its turn; nothing was closed,
    so `llm_closed_ms` is None, and `tts_stopped_ms` is when its queued audio was dropped).
    """

    kind: ClassVar[str] = "barge_in_done"
    id: str
    clear_sent_ms: float
    tts_stopped_ms: float | None
    llm_closed_ms: float | None
    total_ms: float
    cut_word_index: int | None = None  # where the agent's turn was cut (None: no agent turn was running)
    cut_char_offset: int | None = None
    heard_audio_ms: float | None = None
    outcome: str = "stopped"  # "stopped": the agent's turn ended; "resumed": it went on
    reason: str = ""  # why it settled so: caller, words, repeated, noise, echo, short, backchannel, ...
    settled_ms: float = 0.0
    resumed_from_ms: float | None = None
    in_flight_tools_canceled: int = 0  # mutations in flight that the barge-in cancelled (app/call/tools.py)
    in_flight_tools_completed: int = 0  # reads in flight that it let run to completion


# -- the agent's audio -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AudioQueued(CallEvent):
    """A synthesised sentence went into the outbox."""

    kind: ClassVar[str] = "audio_queued"
    turn_id: int
    audio_ms: float
    text: str


@dataclass(frozen=True, slots=True)
class MarkSent(CallEvent):
    kind: ClassVar[str] = "mark_sent"
    per_frame: ClassVar[bool] = True
    name: str
    turn_id: int
    audio_ms: float  # the audio this marker follows


@dataclass(frozen=True, slots=True)
class MarkAcked(CallEvent):
    kind: ClassVar[str] = "mark_acked"
    per_frame: ClassVar[bool] = True
    name: str
    known: bool  # False: not a marker this stream has outstanding (late, cleared, or foreign)


@dataclass(frozen=True, slots=True)
class AudioDropped(CallEvent):
    """A clear threw away the queued agent audio."""

    kind: ClassVar[str] = "audio_dropped"
    chunks: int


# -- the LLM and TTS ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LlmOpened(CallEvent):
    kind: ClassVar[str] = "llm_open"
    turn_id: int


@dataclass(frozen=True, slots=True)
class LlmToken(CallEvent):
    kind: ClassVar[str] = "llm_token"
    per_frame: ClassVar[bool] = True
    turn_id: int
    text: str


@dataclass(frozen=True, slots=True)
class LlmClosed(CallEvent):
    kind: ClassVar[str] = "llm_close"
    turn_id: int
    reason: str  # "done", "capped", "cancelled", "error", "timeout"
    first_token_at: float | None = None  # when the first token came (the LLM's share of the turn gap)


@dataclass(frozen=True, slots=True)
class TtsStarted(CallEvent):
    kind: ClassVar[str] = "tts_start"
    turn_id: int
    text: str


@dataclass(frozen=True, slots=True)
class TtsFinished(CallEvent):
    kind: ClassVar[str] = "tts_done"
    turn_id: int
    audio_ms: float


# -- turns -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TurnStarted(CallEvent):
    kind: ClassVar[str] = "turn_start"
    turn_id: int
    role: str


@dataclass(frozen=True, slots=True)
class TurnEnded(CallEvent):
    kind: ClassVar[str] = "turn_end"
    turn_id: int
    role: str
    text: str
    interrupted: bool
    heard_text: str | None  # agent turns: what the caller heard (None when it played to the end)
    heard_chars: int | None
    heard_audio_ms: float | None
    audio_ms: float | None
    keys: str = ""  # caller turns: the DTMF keys pressed in it
    speech_end_t: float | None = None  # caller turns: the end of their speech (or last key); the turn gap's start


@dataclass(frozen=True, slots=True)
class Transcribed(CallEvent):
    """The recognizer's words for a stretch of the caller's audio: a whole turn (`turn_id`), or a short
    utterance over the agent (`turn_id` None) whose words may still stop it."""

    kind: ClassVar[str] = "transcribed"
    turn_id: int | None
    text: str
    audio_ms: float
    stt_ms: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class InterruptionHeard(CallEvent):
    """The caller's words that followed a barge-in are in: their interruption kind (app/bargein/words.py), or
    None when they hold no words. The words of a short utterance the agent resumed over, or of the caller's
    turn that a stop opened."""

    kind: ClassVar[str] = "bargein_words"
    bargein_id: str
    words_kind: str | None


@dataclass(frozen=True, slots=True)
class AgentWentOn(CallEvent):
    """A caller turn that stopped the agent held no words (or only listener words): instead of answering it,
    the agent goes on with the rest of its cut turn (app/call/going_on.py), a false barge-in found late."""

    kind: ClassVar[str] = "went_on"
    bargein_id: str  # the barge-in that cut the turn
    user_turn_id: int
    cut_turn_id: int
    reason: str  # "no_words" or "listener_words"
    rest_chars: int  # how much of the cut turn is said again


@dataclass(frozen=True, slots=True)
class KeyPressed(CallEvent):
    """A DTMF key from the caller."""

    kind: ClassVar[str] = "dtmf"
    digit: str


@dataclass(frozen=True, slots=True)
class CallClosed(CallEvent):
    kind: ClassVar[str] = "call_end"
    reason: str


EVENT_TYPES: dict[str, type[CallEvent]] = {
    cls.kind: cls
    for cls in (
        WireReceived, WireSent, VadChanged, BargeInDecided, ClearSent, BargeInHandled, AudioQueued, MarkSent,
        MarkAcked, AudioDropped, LlmOpened, LlmToken, LlmClosed, TtsStarted, TtsFinished, TurnStarted,
        TurnEnded, CallClosed, PolicyChanged, KeyPressed, Transcribed, AgentWentOn, InterruptionHeard,
    )
}

_FIELDS: dict[type[CallEvent], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in EVENT_TYPES.values()
}
_REQUIRED: dict[type[CallEvent], frozenset[str]] = {
    cls: frozenset(f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    for cls in EVENT_TYPES.values()
}


def to_dict(event: CallEvent) -> dict[str, Any]:
    """The event as a recording line: {"type": kind, "t": ..., field: value, ...}."""
    out: dict[str, Any] = {"type": event.kind}
    for name in _FIELDS[type(event)]:
        out[name] = getattr(event, name)
    return out


def from_dict(data: dict[str, Any]) -> CallEvent | None:
    """A recording line back as an event; None for a type this build does not know (a newer recorder's)."""
    cls = EVENT_TYPES.get(str(data.get("type")))
    if cls is None:
        return None
    # A field an older recording lacks takes its default (e.g. a barge-in's `outcome`), else None.
    values: dict[str, Any] = {name: data.get(name) for name in _FIELDS[cls] if name in data or name in _REQUIRED[cls]}
    return cls(**values)


Subscriber = Callable[[CallEvent], None]


class CallEvents:
    """One call's event stream. `emit` is synchronous; subscribers must be cheap and must not raise."""

    __slots__ = ("_subscribers", "_framed", "active")

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._framed: list[Subscriber] = []  # those that want the per-frame events too
        self.active = False  # a subscriber wants per-frame events: emitters skip building them otherwise

    def subscribe(self, subscriber: Subscriber, *, frames: bool = True) -> Callable[[], None]:
        """Add a subscriber (`frames=False`: it does not need the per-frame events); returns its remover."""
        self._subscribers.append(subscriber)
        if frames:
            self._framed.append(subscriber)
        self.active = bool(self._framed)

        def unsubscribe() -> None:
            for group in (self._subscribers, self._framed):
                if subscriber in group:
                    group.remove(subscriber)
            self.active = bool(self._framed)

        return unsubscribe

    def emit(self, event: CallEvent) -> None:
        for subscriber in self._framed if event.per_frame else self._subscribers:
            try:
                subscriber(event)
            except Exception:  # one broken subscriber must not take the call's decisions with it
                logger.exception("event subscriber failed on %s; the call goes on", event.kind)
