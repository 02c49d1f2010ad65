"""A call's bookkeeping, kept from its events: the barge-ins in the call record, and the barge-in metrics.

It subscribes to the call's event stream like any other observer (without the per-frame events), so the
record `GET /calls/{id}` serves, the Prometheus figures and a recording all come from the same events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from app.call.events import AgentWentOn, BargeInDecided, BargeInHandled, CallEvent, InterruptionHeard
from app.metrics import Metrics
from app.transcript import BargeInEvent, CallRecord


class CallBookkeeper:
    def __init__(self, record: CallRecord, provider: str, metrics: Metrics, wall: Callable[[], float]) -> None:
        self._record = record
        self._provider = provider
        self._metrics = metrics
        self._wall = wall
        self._decided: BargeInDecided | None = None

    def __call__(self, event: CallEvent) -> None:
        if isinstance(event, AgentWentOn):  # a stop found false once the caller's turn was heard
            self._metrics.bargein_resumed_total.labels(self._provider, event.reason).inc()
        elif isinstance(event, InterruptionHeard):  # the words came after the barge-in was settled
            bargeins = self._record.bargeins
            for i in range(len(bargeins) - 1, -1, -1):
                if bargeins[i].id == event.bargein_id:
                    bargeins[i] = dataclasses.replace(bargeins[i], kind=event.words_kind)
                    break
        elif isinstance(event, BargeInDecided):
            self._decided = event
        elif isinstance(event, BargeInHandled):
            decided, self._decided = self._decided, None
            if decided is None or decided.id != event.id:
                return  # cannot happen: a barge-in's events are emitted together
            self._record.bargeins.append(BargeInEvent(
                id=event.id,
                turn_id=decided.turn_id,
                at=self._wall(),
                confidence=decided.confidence,
                sustained_ms=decided.sustained_ms,
                peak_dbfs=decided.peak_dbfs,
                clear_sent_ms=event.clear_sent_ms,
                tts_stopped_ms=event.tts_stopped_ms,
                llm_closed_ms=event.llm_closed_ms,
                total_ms=event.total_ms,
                cut_word_index=event.cut_word_index,
                cut_char_offset=event.cut_char_offset,
                heard_audio_ms=event.heard_audio_ms,
                outcome=event.outcome,
                reason=event.reason,
                settled_ms=event.settled_ms,
                resumed_from_ms=event.resumed_from_ms,
                in_flight_tools_canceled=event.in_flight_tools_canceled,
                in_flight_tools_completed=event.in_flight_tools_completed,
            ))
            m = self._metrics
            if event.outcome == "resumed":
                m.bargein_resumed_total.labels(self._provider, event.reason).inc()
                return
            m.bargeins_total.labels(self._provider).inc()
            m.observe_bargein(event.clear_sent_ms, event.tts_stopped_ms or 0.0, event.llm_closed_ms or 0.0,
                              event.total_ms)
