"""The pytest plugin, as a team would use it: an installed entry point and `pytest --bargein-replay DIR`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

CALLS = Path(__file__).resolve().parents[1] / "recordings" / "calls"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def test_the_plugin_is_a_pytest11_entry_point_of_the_package() -> None:
    found = [ep for ep in entry_points(group="pytest11") if ep.name == "bargein"]
    assert [ep.value for ep in found] == ["app.replay.plugin"]


def run_pytest(where: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    # A directory of the team's own, outside this repository's tests: only the plugin knows these files.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **settings}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
                          cwd=where, env=env, capture_output=True, text=True, timeout=300)


def test_recorded_calls_and_scenarios_become_passing_tests(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()
    shutil.copy(CALLS / "twilio_bargein.jsonl.gz", calls)
    shutil.copy(SCENARIOS / "cut_in_twilio.toml", calls)
    done = run_pytest(tmp_path, "--bargein-replay", "calls", "-vv")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "twilio_bargein.jsonl.gz PASSED" in done.stdout
    assert "cut_in_twilio.toml PASSED" in done.stdout
    assert "2 passed" in done.stdout


def test_a_difference_fails_with_the_replay_diff_as_its_message(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()
    shutil.copy(CALLS / "plivo_bargein.jsonl.gz", calls)
    (calls / "broken.jsonl.gz").write_bytes(b"not a recording")
    done = run_pytest(tmp_path, "--bargein-replay", "calls", BARGEIN_MIN_SPEECH_MS="400")
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "plivo_bargein.jsonl.gz: DIFFERENT decisions" in out
    assert re.search(r"barge-in at 1\.2\d\d s \(agent turn 1\): now at", out), out
    assert "BARGEIN_MIN_SPEECH_MS: recorded 64, now 400" in out
    assert "broken.jsonl.gz: cannot read" in out
    assert "2 failed" in out
    assert "Traceback" not in out  # the diff is the message, not a stack


def test_without_the_option_the_plugin_adds_nothing(tmp_path: Path) -> None:
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    shutil.copy(CALLS / "twilio_noise.jsonl.gz", tmp_path)
    done = run_pytest(tmp_path)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
