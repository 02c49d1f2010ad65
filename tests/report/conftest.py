"""Generated recordings for the report tests: a 30-second call with one barge-in, and a 5-minute one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.report.callgen import make_call


@pytest.fixture(scope="session")
def short_call(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_call(tmp_path_factory.mktemp("rec") / "short.jsonl.gz", 25.0, "twilio")


@pytest.fixture(scope="session")
def plivo_call(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_call(tmp_path_factory.mktemp("rec") / "plivo.jsonl.gz", 25.0, "plivo")


@pytest.fixture(scope="session")
def long_call(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_call(tmp_path_factory.mktemp("rec") / "long.jsonl.gz", 300.0, "twilio")
