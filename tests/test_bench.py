"""`bargein bench`: a sample run end to end (server process, emulator, loopback LLM), and the clip sampler."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.bench.fuzz import FuzzOptions
from app.bench.run import parse_args, sample
from app.offline.corpus import STEADY_CATEGORIES, read_manifest

SECTIONS = (
    "Detector cost",
    "Accuracy: speech",
    "Accuracy: noise",
    "false stops by category",
    "Barge-in event timings",
    "Server per phase",
    "Load generator per phase",
    "Hold: 10 calls open",
    "inbound-frame lag",
    "Server processes",
    "Targets",
    "wall time:",
)


def test_sample_is_deterministic_and_spread_across_categories() -> None:
    clips = read_manifest()
    noise = sample(clips, "noise", 4)
    assert noise == sample(clips, "noise", 4)
    assert len({c.category for c in noise}) == 4
    assert sum(c.category in STEADY_CATEGORIES for c in noise) == 2
    speech = sample(clips, "speech", 3)
    assert {c.category for c in speech} == {"read", "oration", "isolated_word"}
    assert len(sample(clips, "speech", 0)) == sum(c.kind == "speech" for c in clips)


def test_limit_is_a_sample_of_every_mode_and_explicit_sizes_win() -> None:
    full = parse_args(["--mode", "fuzz"])
    assert (full.fuzz_calls, full.fuzz_frames, full.hold_calls, full.hold_seconds) == (10, 100_000, 100, 30.0)
    fuzz = FuzzOptions.from_args(parse_args(["--mode", "fuzz", "--limit", "2"]))
    assert (fuzz.calls, fuzz.frames) == (2, 20_000)  # 2 honest calls, at the full run's frames per call
    big = parse_args(["--limit", "50"])
    assert (big.fuzz_calls, big.fuzz_frames) == (10, 100_000)  # a limit above the default shrinks nothing
    sampled = parse_args(["--limit", "2"])
    assert (sampled.hold_calls, sampled.hold_seconds) == (10, 3.0)  # the hold shrinks too
    explicit = parse_args(["--mode", "fuzz", "--limit", "2", "--fuzz-calls", "4", "--fuzz-frames", "600",
                           "--hold-calls", "7"])
    assert (explicit.fuzz_calls, explicit.fuzz_frames, explicit.hold_calls) == (4, 600, 7)


@pytest.mark.slow
def test_quick_sample_run_prints_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--limit", "2", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for section in SECTIONS:
        assert section in proc.stdout, f"{section!r} missing from the report:\n{proc.stdout}"
    data = json.loads(out.read_text())
    phases = data["summary"]["phases"]
    assert [(p["provider"], p["concurrency"]) for p in phases] == [
        ("twilio", 1),
        ("plivo", 1),
        ("twilio", 20),
        ("plivo", 20),
    ]
    for phase in phases:
        assert phase["failed"] == 0, phase["errors"]
        assert phase["speech"] == 2 and phase["noise"] == (2 if phase["concurrency"] > 1 else 0)
        assert phase["events"] >= 1  # at least one barge-in was recorded by the server
    assert data["hold"]["calls_up"] == 10
    assert data["hold"]["frame_lag_ms"]["count"] > 0
    assert all(s["exit"] == 0 and s["traceback"] == 0 for s in data["servers"])
    assert {t["target"] for t in data["summary"]["targets"]} >= {"detection >= 98%", "no stop on steady noise"}


@pytest.mark.slow
def test_compare_holds_two_servers_at_once_and_prints_their_ratio() -> None:
    root = Path(__file__).resolve().parent.parent  # this checkout against itself: both sides must come up
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--compare", str(root), "--rounds", "1",
         "--hold-calls", "2", "--hold-seconds", "1", "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    rows = [r for r in rows if len(r) > 2 and r[0] in ("this", "other") and r[1][0].isdigit()]
    assert [(r[0], r[1]) for r in rows] == [("this", "2/2"), ("other", "2/2")], proc.stdout
    assert "this / other, mean over 1 round(s):" in proc.stdout


def test_compare_refuses_a_folder_that_is_not_a_checkout(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--compare", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0 and "no app/main.py" in proc.stderr


@pytest.mark.slow
def test_fuzz_mode_at_a_tiny_size_reports_every_target(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--mode", "fuzz", "--fuzz-frames", "600", "--fuzz-calls", "2",
         "--fuzz-connections", "3", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for text in ("Fuzz: hostile frames beside live calls", "fuzz frames sent", "fuzz connections",
                 "server counted invalid", "honest records intact", "crashes", "RSS before / after",
                 "600 fuzzed and hostile frames beside live calls: 0 crashes",
                 "honest onset->clear p95 within 50 ms of a quiet run", "no event-loop stall over 20 ms (worst)",
                 "RSS back within 10% after the run", "/healthz within 200 ms throughout",
                 "honest clear within 400 ms of speech onset"):
        assert text in proc.stdout, f"{text!r} missing from the report:\n{proc.stdout}"
    data = json.loads(out.read_text())
    fuzz = data["summary"]["fuzz"]
    assert fuzz["frames"] == 600 and fuzz["crashes"] == 0, fuzz
    assert fuzz["quiet_n"] == 2 and fuzz["quiet_p95"] is not None
    assert fuzz["stall_max_ms"] is not None and fuzz["rss_growth"] is not None
    assert fuzz["big_calls"] == 2 and fuzz["big_health_max_ms"] > 0
    assert data["fuzz"]["big"]["big_frames"]["frames"] >= 21  # the 1 MB frame and the twenty of 100 KB went out
    assert all(s["exit"] == 0 and s["traceback"] == 0 for s in data["servers"])
    targets = {t["target"].strip(): t["result"] for t in data["summary"]["targets"]}
    assert targets["600 fuzzed and hostile frames beside live calls: 0 crashes"] == "PASS"
    assert {targets[t] for t in targets if "within" in t or "stall" in t} <= {"PASS", "MISS", "n/a"}
