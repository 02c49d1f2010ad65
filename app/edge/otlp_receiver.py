"""A small OTLP/HTTP trace receiver: what a collector does with `POST /v1/traces`, for tests and the benchmark.

Theory of operation. A stdlib HTTP server on its own threads accepts `POST /v1/traces` with a protobuf
`ExportTraceServiceRequest` (plain or gzip, as the OTLP/HTTP exporters send it), decodes it with the
opentelemetry-proto messages, keeps every span as a `ReceivedSpan` (or only counts them: `keep=False`, for a
benchmark that sends thousands) and answers 200 with an empty `ExportTraceServiceResponse`, as the OTLP
specification asks. Anything else is 404 / 400 / 415. It is a stand-in for a collector on loopback, not a
collector: nothing is stored past the process.

    with OtlpReceiver() as receiver:                  # http://127.0.0.1:<port>: OTEL_EXPORTER_OTLP_ENDPOINT
        ...
        spans = receiver.wait_for(lambda spans: any(s.name == "call" for s in spans), timeout_s=5)

`python -m app.edge.otlp_receiver --port 4318` runs one until interrupted (it prints the spans received).
"""

from __future__ import annotations

import argparse
import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str  # hex
    span_id: str
    parent_span_id: str  # "" for a root
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    scope: str
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pair: KeyValue
    for pair in pairs:
        out[pair.key] = any_value(pair.value)
    return out


def decode(body: bytes) -> list[ReceivedSpan]:
    """An ExportTraceServiceRequest's spans, flattened (raises on a body that is not one)."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(ReceivedSpan(
                    name=span.name, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(), start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano, attributes=attributes(span.attributes),
                    status_code=span.status.code, scope=scope_spans.scope.name, resource=resource,
                ))
    return spans


class OtlpReceiver:
    """OTLP/HTTP traces on a loopback port, on threads of its own. `url` is the OTEL_EXPORTER_OTLP_ENDPOINT."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, keep: bool = True) -> None:
        self.keep = keep
        self.spans: list[ReceivedSpan] = []
        self.span_count = 0
        self.requests = 0
        self.rejected = 0
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OtlpReceiver:
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def received(self, spans: list[ReceivedSpan]) -> None:
        with self._changed:
            self.requests += 1
            self.span_count += len(spans)
            if self.keep:
                self.spans.extend(spans)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 10.0) -> list[ReceivedSpan]:
        """The spans once `predicate(spans)` holds (AssertionError after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self.spans):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the spans received never satisfied the test: {[s.name for s in self.spans]}")
                self._changed.wait(left)
            return list(self.spans)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if 0 < length <= MAX_BODY else b""
                if self.path.split("?")[0] != TRACES_PATH:
                    self._answer(404, b"", "text/plain")
                    return
                if self.headers.get("Content-Type", "").split(";")[0].strip() != PROTOBUF:
                    receiver.rejected += 1
                    self._answer(415, b"only application/x-protobuf", "text/plain")
                    return
                try:
                    if self.headers.get("Content-Encoding", "").lower() == "gzip":
                        body = gzip.decompress(body)
                    spans = decode(body)
                except Exception:  # a body that is not an export request: the client's error
                    receiver.rejected += 1
                    self._answer(400, b"not an ExportTraceServiceRequest", "text/plain")
                    return
                receiver.received(spans)
                self._answer(200, ExportTraceServiceResponse().SerializeToString(), PROTOBUF)

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
                pass  # one line per export would drown a benchmark's output

        return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="An OTLP/HTTP trace receiver on loopback (counts spans).")
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    receiver = OtlpReceiver(args.host, args.port, keep=False)
    with receiver:
        print(f"OTLP/HTTP receiver on http://{args.host}:{receiver.port}{TRACES_PATH}", flush=True)
        try:
            while True:
                time.sleep(10)
                print(f"{receiver.span_count} spans in {receiver.requests} requests", flush=True)
        except KeyboardInterrupt:
            pass
    print(f"{receiver.span_count} spans in {receiver.requests} requests ({receiver.rejected} rejected)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
