"""Each call's spans (app/telemetry/calltrace.py) through the OpenTelemetry SDK, exported over OTLP/HTTP.

Theory of operation. app/main.py imports this module only when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, so with tracing off neither it nor the SDK is ever imported. Then
`CallTracer.observe` is a CallDeps observer: when a stream's `start` is accepted it opens the call's span and
subscribes to the call's events. On the event loop an event costs a dictionary look-up; a turn, an LLM
request, a sentence or a barge-in costs an SDK span start and end (a few microseconds each). Ended spans go to
the SDK's BatchSpanProcessor, whose own thread encodes them (protobuf) and POSTs them to the collector: nothing
waits for the network on the loop, and a collector that is down loses spans, never delays a call.

Times. A span's start and end are the events' `t` (the call's clock: the loop's monotonic time) moved to the
wall clock by one offset read when the call starts, so the spans' durations are exactly the event intervals
the call record reports, and no clock is read per event.

The subscription does not ask for the per-frame events (`frames=False`): every event a span is built from is
per turn, per sentence or per barge-in, and the session builds those whoever listens; the LLM's first token
comes on its LlmClosed. A traced call builds no per-frame event.

The provider is this app's own (never the global one): tests build as many apps as they like, and FastAPI's
own request telemetry, which follows the global provider, stays off unless an operator turns it on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, Status, StatusCode

from app.call.events import CallEvent
from app.telemetry.calltrace import CALL, CallTrace, SpanChange, SpanOpened, keeps_children

if TYPE_CHECKING:
    from app.call.session import CallSession
    from app.settings import Settings

logger = logging.getLogger(__name__)

SCOPE = "bargein.call"  # the instrumentation scope's name on every span


class CallTracer:
    """CallDeps observer: every call's spans. `shutdown()` (blocking) exports what is left when the app stops."""

    def __init__(self, provider: TracerProvider, version: str = "") -> None:
        self._provider = provider
        self._tracer = provider.get_tracer(SCOPE, version or None)

    @classmethod
    def from_settings(cls, settings: Settings, version: str = "") -> CallTracer:
        return cls.with_exporter(OTLPSpanExporter(endpoint=settings.otel_traces_url), settings.otel_service_name,
                                 version)

    @classmethod
    def with_exporter(cls, exporter: SpanExporter, service_name: str, version: str = "") -> CallTracer:
        # Resource.create also merges OTEL_RESOURCE_ATTRIBUTES; the service name given here wins over it.
        attributes: dict[str, str] = {"service.name": service_name}
        if version:
            attributes["service.version"] = version
        provider = TracerProvider(resource=Resource.create(attributes), shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        logger.info("tracing on: a span per call, turn and barge-in, batched to OTLP/HTTP")
        return cls(provider, version)

    def observe(self, session: CallSession) -> None:
        """Open the call's span and follow its events (the stream's `start` was just accepted)."""
        record = session.record
        if record is None:
            return
        deps = session.deps
        offset_s = deps.wall() - deps.clock.now()  # call clock -> epoch seconds, read once per call
        calltrace = CallTrace(record.call_id, session.stream_id or "", session.protocol.name, session.opened_at)
        writer = SpanWriter(self._tracer, offset_s)
        writer.apply((calltrace.start(),))
        feed, apply = calltrace.feed, writer.apply

        def on_event(event: CallEvent) -> None:
            changes = feed(event)
            if changes:
                apply(changes)

        # Without the per-frame events: every event a span needs is per turn or per barge-in, so a traced call
        # builds no per-frame event it would not build anyway.
        session.events.subscribe(on_event, frames=False)

    def force_flush(self, timeout_ms: int = 5000) -> bool:
        """Export every ended span now (blocking)."""
        return self._provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        """Export what is waiting and stop the export thread (blocking: call it off the loop)."""
        self._provider.shutdown()


class SpanWriter:
    """One call's span changes as SDK spans: keeps the open spans, and the contexts spans may hang under."""

    __slots__ = ("_tracer", "_offset_s", "_spans", "_parents")

    def __init__(self, tracer: trace.Tracer, offset_s: float) -> None:
        self._tracer = tracer
        self._offset_s = offset_s
        self._spans: dict[str, Span] = {}
        self._parents: dict[str, Context] = {}  # the call's and its turns' contexts, until the call ends

    def _ns(self, t: float) -> int:
        return int(round((t + self._offset_s) * 1e9))

    def apply(self, changes: Iterable[SpanChange]) -> None:
        for change in changes:
            if isinstance(change, SpanOpened):
                # The root gets an empty context, never the ambient one: one trace per call, whatever runs around.
                parent = self._parents.get(change.parent) if change.parent is not None else None
                span = self._tracer.start_span(change.name, context=parent or Context(),
                                               start_time=self._ns(change.t), attributes=change.attributes)
                self._spans[change.key] = span
                if keeps_children(change.key):
                    self._parents[change.key] = trace.set_span_in_context(span, Context())
                continue
            if change.key not in self._spans:
                continue
            span = self._spans.pop(change.key)
            if change.attributes:
                span.set_attributes(change.attributes)
            if change.failed:
                span.set_status(Status(StatusCode.ERROR))
            span.end(end_time=self._ns(change.t))
            if change.key == CALL:
                self._parents.clear()
