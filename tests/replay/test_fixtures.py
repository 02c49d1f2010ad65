"""The recorded calls in tests/recordings/calls, replayed: live vs virtual, exact vs a virtual baseline, and a
changed threshold that must make the barge-in fixture fail with a readable diff.

The fixtures are real calls to the real server (app/replay/make_fixtures.py: uvicorn, the emulator over real
sockets, the live recorder), on both providers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.record.format import read_recording
from app.replay.check import check_file, update
from app.replay.compare import EXACT, REALTIME
from app.replay.outcome import outcome_of
from tests.conftest import make_settings

CALLS = Path(__file__).resolve().parents[1] / "recordings" / "calls"
FIXTURES = sorted(CALLS.glob("*.jsonl.gz"))
KINDS = ("bargein", "noise", "midsentence", "reconnect")


def test_every_kind_is_recorded_on_both_providers() -> None:
    names = {p.name for p in FIXTURES}
    assert names == {f"{provider}_{kind}.jsonl.gz" for provider in ("twilio", "plivo") for kind in KINDS}
    assert sum(p.stat().st_size for p in FIXTURES) < 600_000  # small: a few hundred KB in all


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name.removesuffix(".jsonl.gz"))
def test_the_fixture_shows_what_its_name_says(path: Path) -> None:
    rec = read_recording(path)
    assert rec.header.get("baseline") is None  # a live recording
    o = outcome_of(rec.lines)
    kind = path.name.removesuffix(".jsonl.gz").split("_", 1)[1]
    if kind == "bargein":
        assert len(o.bargeins) == 1 and o.heard[0].interrupted
        assert o.heard[0].heard_text.startswith("Hello")
    elif kind == "noise":
        assert not o.bargeins and not o.clears  # the agent talked through the noise
    elif kind == "midsentence":
        assert o.end_reason == "stop" and not o.bargeins
        assert len(o.heard[0].heard_text) < len(make_settings().agent_greeting)  # cut where the caller hung up
    else:
        assert sum(1 for line in rec.lines if line["type"] == "stream") == 1  # one reconnect, one file
        assert [t.role for t in o.turns] == ["agent", "user", "agent"]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name.removesuffix(".jsonl.gz"))
def test_the_virtual_replay_makes_the_live_run_s_decisions(path: Path) -> None:
    verdict = check_file(path, make_settings())
    assert verdict.tolerance == REALTIME.name
    assert verdict.passed, verdict.text


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name.removesuffix(".jsonl.gz"))
def test_against_its_update_baseline_the_replay_is_exact(path: Path, tmp_path: Path) -> None:
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    settings = make_settings()
    update(check_file(copy, settings), read_recording(copy))
    baseline = read_recording(copy)
    assert baseline.header["baseline"] == "virtual"
    verdict = check_file(copy, settings)
    assert verdict.tolerance == EXACT.name
    assert verdict.passed, verdict.text
    # Deterministic to the microsecond: every event of the replay, not only the decisions.
    assert verdict.result is not None
    strip = [{k: v for k, v in line.items() if k not in ("id", "barge_in_id")} for line in baseline.lines]
    again = [{k: v for k, v in line.items() if k not in ("id", "barge_in_id")} for line in verdict.result.lines]
    assert again == strip


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
def test_changing_one_threshold_fails_the_barge_in_fixture_with_a_readable_diff(provider: str) -> None:
    verdict = check_file(CALLS / f"{provider}_bargein.jsonl.gz", make_settings(bargein_min_speech_ms=400))
    assert not verdict.passed
    text = verdict.text
    assert "DIFFERENT decisions" in text
    assert "barge-in at 1.28" in text and "now at" in text and " ms)" in text  # moved, with both times
    assert "agent turn 1 heard 'Hello, thanks for" in text  # the caller heard more of the greeting
    assert "BARGEIN_MIN_SPEECH_MS: recorded 64, now 400" in text
