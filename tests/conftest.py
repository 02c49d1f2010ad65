"""Shared fixtures: the real app under uvicorn on a loopback port, in a thread of its own."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.edge.served import ServedApp
from app.main import create_app
from app.settings import Settings

# The clips the suite needs live in the repository (tests/corpus, with their licences), so a fresh clone tests
# with nothing beside it. Always these, even when BARGEIN_CORPUS or ../shared/corpus is there (CI sets it): the
# full corpus only widens the benchmark. Set at import, before any test module or subprocess reads it.
CORPUS = Path(__file__).resolve().parent / "corpus"
os.environ["BARGEIN_CORPUS"] = str(CORPUS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(**overrides: Any) -> Settings:
    """Settings for a test server; never reads a developer's .env."""
    port = overrides.pop("port", None) or free_port()
    # No recognizer unless a test asks for one: a Whisper transcription costs about a second of CPU per caller
    # turn, which the tests that are not about words would spend for nothing (tests/e2e/test_hearing.py and
    # tests/stt/ run the real one).
    values: dict[str, Any] = {"port": port, "host": "127.0.0.1", "public_url": f"http://127.0.0.1:{port}",
                              "stt_engine": "none",
                              # each test server its own records: a shared ./bargein-calls.db would mix tests' calls
                              "call_store_url": "memory://"}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class RunningServer(ServedApp):
    """The real app, built by create_app from test settings."""

    def __init__(self, settings: Settings, observers: list[Any] | None = None) -> None:
        self.settings = settings
        self.app = create_app(settings, observers=observers)
        super().__init__(self.app, port=settings.port)

    @property
    def registry(self) -> Any:
        return self.app.state.registry


@pytest.fixture
def server_factory() -> Iterator[Any]:
    running: list[RunningServer] = []

    def start(observers: list[Any] | None = None, **overrides: Any) -> RunningServer:
        """`observers`: called with each call's session at its start (CallDeps.observers), in the server's thread."""
        srv = RunningServer(make_settings(**overrides), observers).__enter__()
        running.append(srv)
        return srv

    yield start
    for srv in running:
        srv.__exit__(None, None, None)


@pytest.fixture(params=["twilio", "plivo"])
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class LogCapture(logging.Handler):
    """Keeps every record it is handed. Attach it after a test server is built: uvicorn.Config resets the
    handlers of the uvicorn loggers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
