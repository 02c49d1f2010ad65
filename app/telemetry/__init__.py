"""Telemetry kept from a call's typed events (app/call/events.py).

- `turngap.py`: the turn gap (the caller's turn ending -> the agent's first audio), pure, and the Prometheus
  observer that feeds `bargein_turn_gap_seconds` (no OpenTelemetry import).
- `calltrace.py`: a call's events -> span openings and closings (pure: times come from the events).
- `tracing.py`: those spans through the OpenTelemetry SDK, exported over OTLP/HTTP by a batch processor. It is
  the only module that imports `opentelemetry.sdk`; app/main.py imports it only when an OTLP endpoint is set.

Nothing here imports the SDK at package import: `import app.telemetry` costs nothing.
"""
