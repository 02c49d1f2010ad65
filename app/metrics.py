"""Prometheus metrics (one registry per app, no globals) and exact frame-lag statistics for the benchmark."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_MS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 1000.0)
# After the turn-end silence, an answer takes ~0.2-2 s (LLM first sentence, its synthesis); past 10 s is a stall.
_TURN_GAP_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0)
# SQLite on a local disk is ~0.1-1 ms a write (fsync more); PostgreSQL over a network a few ms.
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LagRecorder:
    """A ring of the most recent samples (ms), for exact percentiles: histogram buckets are too coarse for p99.9."""

    def __init__(self, capacity: int = 1 << 20) -> None:
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._n = 0
        self.max_ms = 0.0

    def add(self, ms: float) -> None:
        self._buf[self._n % len(self._buf)] = ms
        self._n += 1
        if ms > self.max_ms:
            self.max_ms = ms

    def reset(self) -> None:
        self._n = 0
        self.max_ms = 0.0

    def summary(self) -> dict[str, float]:
        n = min(self._n, len(self._buf))
        if n == 0:
            return {"count": 0}
        data = self._buf[:n]
        p50, p99, p999 = np.percentile(data, [50, 99, 99.9])
        return {"count": float(self._n), "p50": float(p50), "p99": float(p99), "p99_9": float(p999),
                "max": float(self.max_ms)}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_calls = Gauge("bargein_active_calls", "Calls with a live media stream", registry=r)
        self.calls_total = Counter("bargein_calls_total", "Media streams started", ["provider"], registry=r)
        self.bargeins_total = Counter("bargein_bargeins_total", "Barge-ins (the agent was interrupted)",
                                      ["provider"], registry=r)
        self.bargein_resumed_total = Counter(
            "bargein_bargein_resumed_total",
            "Provisional stops after which the agent resumed (noise, echo, a backchannel), and stops after which it "
            "went on with the rest of its turn (no_words, listener_words: the caller's turn held no words): "
            "false barge-ins",
            ["provider", "reason"], registry=r)
        self.invalid_frames_total = Counter("bargein_invalid_frames_total", "Inbound frames logged and ignored",
                                            ["provider", "kind"], registry=r)
        self.fallbacks_total = Counter("bargein_fallbacks_total", "Spoken fallbacks after a provider failure",
                                       ["stage"], registry=r)
        self.dtmf_total = Counter("bargein_dtmf_total", "DTMF keys pressed by callers", registry=r)
        self.stt_seconds = Histogram(
            "bargein_stt_seconds", "A caller turn's end to its words from the recognizer (queue wait included)",
            buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0), registry=r)
        self.stt_failures_total = Counter("bargein_stt_failures_total",
                                          "Caller turns the recognizer could not transcribe", registry=r)
        hist: dict[str, Histogram] = {}
        for name, doc in (
            ("clear_sent", "Trigger frame arrival to clear written to the socket"),
            ("tts_stopped", "Trigger frame arrival to TTS stopped and queued audio dropped"),
            ("llm_closed", "Trigger frame arrival to the LLM HTTP stream closed"),
            ("total", "Trigger frame arrival to the barge-in fully handled"),
        ):
            hist[name] = Histogram(f"bargein_bargein_{name}_ms", doc, buckets=_MS_BUCKETS, registry=r)
        self.clear_sent_ms = hist["clear_sent"]
        self.tts_stopped_ms = hist["tts_stopped"]
        self.llm_closed_ms = hist["llm_closed"]
        self.total_ms = hist["total"]
        self.frame_lag_ms = Histogram("bargein_frame_lag_ms", "Inbound frame arrival to its VAD decision",
                                      buckets=_MS_BUCKETS, registry=r)
        self.frame_lag = LagRecorder()
        self.loop_stall_ms = Histogram("bargein_event_loop_stall_ms",
                                       "How late the event loop woke a 10 ms timer (time it was held by others)",
                                       buckets=_MS_BUCKETS, registry=r)
        # Issue 14: the turn gap (app/telemetry/turngap.py), the drain state (set by the drain), the store's
        # write latency (observed by the call store). False barge-ins are bargein_bargein_resumed_total above.
        self.turn_gap_seconds = Histogram(
            "bargein_turn_gap_seconds",
            "The caller's turn ending (decided TURN_END_SILENCE_MS after their last speech) to the agent's first "
            "audio of its answer handed to the outbox",
            buckets=_TURN_GAP_BUCKETS, registry=r)
        self.draining = Gauge("bargein_draining", "1 while the process drains (SIGTERM: no new calls), else 0",
                              registry=r)
        self.store_write_seconds = Histogram("bargein_store_write_seconds",
                                             "One call-store write (a turn, a call record, a used token), off the loop",
                                             buckets=_STORE_BUCKETS, registry=r)

    def observe_stt(self, seconds: float, ok: bool) -> None:
        self.stt_seconds.observe(seconds)
        if not ok:
            self.stt_failures_total.inc()

    def observe_frame_lag(self, ms: float) -> None:
        self.frame_lag.add(ms)
        self.frame_lag_ms.observe(ms)

    def observe_bargein(self, clear_sent: float, tts_stopped: float, llm_closed: float, total: float) -> None:
        for hist, value in ((self.clear_sent_ms, clear_sent), (self.tts_stopped_ms, tts_stopped),
                            (self.llm_closed_ms, llm_closed), (self.total_ms, total)):
            hist.observe(value)
