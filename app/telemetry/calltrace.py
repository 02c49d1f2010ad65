"""A call's events as spans: which span opens and closes when, under which parent, with which attributes.

Theory of operation. `CallTrace` is pure: `start()` opens the call's span, and `feed(event)` turns each of the
call's typed events (app/call/events.py) into span openings and closings, with the event's own `t` (the call's
clock) as the span's time. It reads no clock and knows nothing of OpenTelemetry; app/telemetry/tracing.py turns
its output into SDK spans. Nothing is computed per frame: of the per-frame events only the LLM's first token is
looked at, and the rest cost one dictionary miss.

The tree, one trace per stream:

    call                     start of the stream -> call_end        call_id, stream_id, provider, end_reason, ...
      agent turn / user turn TurnStarted -> TurnEnded               turn_id, role, interrupted, heard_*, ...
        llm                  LlmOpened -> LlmClosed                 close reason (error/timeout mark the span failed)
        tts                  TtsStarted -> TtsFinished, a sentence  audio_ms
        barge-in             BargeInDecided -> BargeInHandled       the attributes a team tunes with (below)

A barge-in is the child of the agent turn it interrupted (`BargeInDecided.turn_id`), or of the call when no agent
turn was running. Its attributes are the issue's names: barge_in_event_id, turn_id, vad_confidence,
vad_duration_ms, energy_dbfs (the decision); clear_sent_ms, tts_flush_ms, llm_cancel_ms, total_handle_ms,
settled_ms (the handling, as in the call record: clear_sent_ms from the deciding frame, the rest from the
decision that settled it); agent_utterance_truncated_at (the character offset the agent's turn was cut at),
cut_word_index, heard_audio_ms, heard_turn_id, audio_chunks_dropped; outcome, reason and false_barge_in (true
when the agent resumed: a backchannel, a noise, its own echo; a caller turn after which the agent went on with
the rest of its cut turn carries went_on and false_barge_in instead); in_flight_tools_canceled and
in_flight_tools_completed (the mutations it cancelled, the reads it let finish: app/call/tools.py).

An agent turn that answers the caller carries turn_gap_ms (app/telemetry/turngap.py) and every agent turn
first_audio_ms (its start to its first audio queued). Transcripts never go into a span: only their lengths.

Spans still open when the call ends (a sentence being synthesised at a hang-up) are closed at the call's end
with `ended_by_call_end`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.call.events import (
    AgentWentOn,
    AudioDropped,
    AudioQueued,
    BargeInDecided,
    BargeInHandled,
    CallClosed,
    CallEvent,
    ClearSent,
    LlmClosed,
    LlmOpened,
    LlmToken,
    TtsFinished,
    TtsStarted,
    TurnEnded,
    TurnStarted,
)
from app.telemetry.turngap import TurnGaps

AttributeValue = str | bool | int | float
Attributes = Mapping[str, AttributeValue]

CALL = "call"  # the call span's key
LLM_FAILED = frozenset({"error", "timeout"})


@dataclass(frozen=True, slots=True)
class SpanOpened:
    key: str  # names the span within its call: "call", "turn:3", "llm:3:1", "tts:7", "bargein:<id>"
    name: str
    parent: str | None  # the parent's key; None for the call
    t: float  # the call's clock
    attributes: Attributes


@dataclass(frozen=True, slots=True)
class SpanClosed:
    key: str
    t: float
    attributes: Attributes  # added at the close
    failed: bool = False


SpanChange = SpanOpened | SpanClosed
_NOTHING: tuple[SpanChange, ...] = ()


def keeps_children(key: str) -> bool:
    """A span later spans may hang under (the call, a turn): its context outlives its close."""
    return key == CALL or key.startswith("turn:")


def _present(**values: AttributeValue | None) -> dict[str, AttributeValue]:
    """The attributes that have a value (OpenTelemetry has no null attribute)."""
    return {name: value for name, value in values.items() if value is not None}


class CallTrace:
    """One stream's spans, from its events. `start()` once, then `feed(event)` for every event, in order."""

    def __init__(self, call_id: str, stream_id: str, provider: str, opened_at: float) -> None:
        self._start = SpanOpened(CALL, "call", None, opened_at,
                                 {"call_id": call_id, "stream_id": stream_id, "provider": provider})
        self._open: dict[str, None] = {}  # open span keys, in opening order
        self._known: set[str] = set()  # every turn span opened: a barge-in may hang under a closed one
        self._extra: dict[str, dict[str, AttributeValue]] = {}  # attributes gathered for a span's close
        self._turn_started: dict[int, float] = {}
        self._llm: dict[int, str] = {}  # turn id -> its open LLM span
        self._llm_opened: dict[str, float] = {}  # an LLM span not yet given its first token
        self._tts: dict[int, str] = {}  # turn id -> its open sentence span
        self._last_bargein: str | None = None
        self._gaps = TurnGaps()
        self._seq = 0
        self._turns = self._bargeins = self._resumed = 0
        self.closed = False
        handlers: dict[type[CallEvent], Callable[[Any], tuple[SpanChange, ...]]] = {
            TurnStarted: self._turn_start, TurnEnded: self._turn_end,
            LlmOpened: self._llm_open, LlmToken: self._llm_token, LlmClosed: self._llm_close,
            TtsStarted: self._tts_start, TtsFinished: self._tts_done, AudioQueued: self._audio_queued,
            BargeInDecided: self._bargein, ClearSent: self._clear, AudioDropped: self._dropped,
            BargeInHandled: self._bargein_done, AgentWentOn: self._went_on, CallClosed: self._call_end,
        }
        self._handlers = handlers

    def start(self) -> SpanOpened:
        self._open[CALL] = None
        return self._start

    def feed(self, event: CallEvent) -> tuple[SpanChange, ...]:
        handler = self._handlers.get(type(event))
        if handler is None or self.closed:
            return _NOTHING
        return handler(event)

    # -- helpers ---------------------------------------------------------------------------------------
    def _opened(self, key: str, name: str, parent: str | None, t: float, attributes: Attributes) -> SpanOpened:
        self._open[key] = None
        return SpanOpened(key, name, parent, t, attributes)

    def _closed(self, key: str, t: float, attributes: Attributes | None = None, failed: bool = False) -> SpanClosed:
        self._open.pop(key, None)
        extra = self._extra.pop(key, None)
        if extra is not None:
            if attributes:
                extra.update(attributes)
            attributes = extra
        return SpanClosed(key, t, attributes or {}, failed)

    def _turn_parent(self, turn_id: int | None) -> str:
        key = f"turn:{turn_id}"
        return key if key in self._known else CALL

    def _next(self, kind: str) -> str:
        self._seq += 1
        return f"{kind}:{self._seq}"

    # -- turns -----------------------------------------------------------------------------------------
    def _turn_start(self, e: TurnStarted) -> tuple[SpanChange, ...]:
        self._gaps.feed(e)
        key = f"turn:{e.turn_id}"
        self._known.add(key)
        self._turn_started[e.turn_id] = e.t
        self._turns += 1
        return (self._opened(key, f"{e.role} turn", CALL, e.t, {"turn_id": e.turn_id, "role": e.role}),)

    def _turn_end(self, e: TurnEnded) -> tuple[SpanChange, ...]:
        self._gaps.feed(e)
        key = f"turn:{e.turn_id}"
        changes: list[SpanChange] = []
        if key not in self._open:  # a turn whose start this stream did not see: a zero-length span
            self._known.add(key)
            self._turns += 1
            changes.append(self._opened(key, f"{e.role} turn", CALL, e.t, {"turn_id": e.turn_id, "role": e.role}))
        self._turn_started.pop(e.turn_id, None)
        truncated = e.heard_chars if e.interrupted else None
        changes.append(self._closed(key, e.t, _present(
            interrupted=e.interrupted, text_chars=len(e.text), heard_chars=e.heard_chars,
            heard_audio_ms=e.heard_audio_ms, audio_ms=e.audio_ms, agent_utterance_truncated_at=truncated,
        )))
        return tuple(changes)

    def _audio_queued(self, e: AudioQueued) -> tuple[SpanChange, ...]:
        gap = self._gaps.feed(e)
        key = f"turn:{e.turn_id}"
        if key in self._open:
            extra = self._extra.setdefault(key, {})
            if "first_audio_ms" not in extra and e.turn_id in self._turn_started:
                extra["first_audio_ms"] = round((e.t - self._turn_started[e.turn_id]) * 1000.0, 3)
            if gap is not None:
                extra["turn_gap_ms"] = round(gap[1] * 1000.0, 3)
        return _NOTHING

    # -- the LLM and TTS -------------------------------------------------------------------------------
    def _llm_open(self, e: LlmOpened) -> tuple[SpanChange, ...]:
        key = self._next("llm")
        self._llm[e.turn_id] = key
        self._llm_opened[key] = e.t
        return (self._opened(key, "llm", self._turn_parent(e.turn_id), e.t, {"turn_id": e.turn_id}),)

    def _llm_token(self, e: LlmToken) -> tuple[SpanChange, ...]:
        key = self._llm.get(e.turn_id)
        if key is not None:
            opened = self._llm_opened.pop(key, None)
            if opened is not None:
                self._extra[key] = {"first_token_ms": round((e.t - opened) * 1000.0, 3)}
        return _NOTHING

    def _llm_close(self, e: LlmClosed) -> tuple[SpanChange, ...]:
        key = self._llm.pop(e.turn_id, None)
        if key is None:
            return _NOTHING
        opened = self._llm_opened.pop(key, None)
        if opened is not None and e.first_token_at is not None:  # without the per-frame tokens
            self._extra[key] = {"first_token_ms": round((e.first_token_at - opened) * 1000.0, 3)}
        return (self._closed(key, e.t, {"reason": e.reason}, failed=e.reason in LLM_FAILED),)

    def _tts_start(self, e: TtsStarted) -> tuple[SpanChange, ...]:
        changes: list[SpanChange] = []
        previous = self._tts.pop(e.turn_id, None)
        if previous is not None:  # its synthesis never finished (an error): it ends where the next begins
            changes.append(self._closed(previous, e.t, {"finished": False}, failed=True))
        key = self._next("tts")
        self._tts[e.turn_id] = key
        changes.append(self._opened(key, "tts", self._turn_parent(e.turn_id), e.t,
                                    {"turn_id": e.turn_id, "text_chars": len(e.text)}))
        return tuple(changes)

    def _tts_done(self, e: TtsFinished) -> tuple[SpanChange, ...]:
        key = self._tts.pop(e.turn_id, None)
        if key is None:
            return _NOTHING
        return (self._closed(key, e.t, {"audio_ms": e.audio_ms}),)

    # -- barge-ins -------------------------------------------------------------------------------------
    def _bargein(self, e: BargeInDecided) -> tuple[SpanChange, ...]:
        key = f"bargein:{e.id}"
        self._last_bargein = key
        self._bargeins += 1
        return (self._opened(key, "barge-in", self._turn_parent(e.turn_id), e.t, _present(
            barge_in_event_id=e.id, turn_id=e.turn_id, vad_confidence=e.confidence,
            vad_duration_ms=e.sustained_ms, energy_dbfs=e.peak_dbfs,
        )),)

    def _clear(self, e: ClearSent) -> tuple[SpanChange, ...]:
        key = f"bargein:{e.barge_in_id}"
        if key in self._open and e.heard_turn_id is not None:
            self._extra.setdefault(key, {})["heard_turn_id"] = e.heard_turn_id
        return _NOTHING

    def _dropped(self, e: AudioDropped) -> tuple[SpanChange, ...]:
        key = self._last_bargein  # emitted right after its barge-in's ClearSent
        if key is not None and key in self._open:
            self._extra.setdefault(key, {})["audio_chunks_dropped"] = e.chunks
        return _NOTHING

    def _bargein_done(self, e: BargeInHandled) -> tuple[SpanChange, ...]:
        key = f"bargein:{e.id}"
        if key not in self._open:
            return _NOTHING  # its decision was on another stream: nothing to close
        resumed = e.outcome == "resumed"
        self._resumed += resumed
        return (self._closed(key, e.t, _present(
            clear_sent_ms=e.clear_sent_ms, tts_flush_ms=e.tts_stopped_ms, llm_cancel_ms=e.llm_closed_ms,
            total_handle_ms=e.total_ms, settled_ms=e.settled_ms, outcome=e.outcome, reason=e.reason,
            false_barge_in=resumed, agent_utterance_truncated_at=e.cut_char_offset, cut_word_index=e.cut_word_index,
            heard_audio_ms=e.heard_audio_ms, resumed_from_ms=e.resumed_from_ms,
            in_flight_tools_canceled=e.in_flight_tools_canceled, in_flight_tools_completed=e.in_flight_tools_completed,
        )),)

    def _went_on(self, e: AgentWentOn) -> tuple[SpanChange, ...]:
        """A stop found false once the caller's turn was heard (no words): the caller turn's span says so, and the
        call counts it with the resumed ones."""
        self._resumed += 1
        key = f"turn:{e.user_turn_id}"
        if key in self._open:
            self._extra.setdefault(key, {}).update(went_on=e.reason, false_barge_in=True)
        return _NOTHING

    # -- the end ---------------------------------------------------------------------------------------
    def _call_end(self, e: CallClosed) -> tuple[SpanChange, ...]:
        self.closed = True
        changes: list[SpanChange] = [
            self._closed(key, e.t, {"ended_by_call_end": True}) for key in reversed(list(self._open)) if key != CALL
        ]
        changes.append(self._closed(CALL, e.t, {"end_reason": e.reason, "turns": self._turns,
                                                "bargeins": self._bargeins, "false_barge_ins": self._resumed}))
        return tuple(changes)
