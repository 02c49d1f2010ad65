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
    "Hold: 4 calls open",
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
        # the smallest run that still fills every section: one clip of each kind per phase (the noise one a steady
        # clip, which the "no stop on steady noise" target needs) and a short hold of a few calls
        [sys.executable, "-m", "app.cli", "bench", "--limit", "1", "--quick", "--hold-calls", "4", "--hold-seconds",
         "1", "--json", str(out)],
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
        assert phase["speech"] == 1 and phase["noise"] == (1 if phase["concurrency"] > 1 else 0)
        assert phase["events"] >= 1  # at least one barge-in was recorded by the server
    assert data["hold"]["calls_up"] == 4
    assert data["hold"]["frame_lag_ms"]["count"] > 0
    assert all(s["exit"] == 0 and s["traceback"] == 0 for s in data["servers"])
    assert {t["target"] for t in data["summary"]["targets"]} >= {"detection >= 98%", "no stop on steady noise"}


@pytest.mark.slow
def test_compare_holds_two_servers_at_once_and_prints_their_ratio() -> None:
    root = Path(__file__).resolve().parent.parent  # this checkout against itself: both sides must come up
    proc = subprocess.run(
        # one barge-in call per side after the hold (not the default twelve): enough to reach the clear-sent figures
        [sys.executable, "-m", "app.cli", "bench", "--compare", str(root), "--rounds", "1",
         "--hold-calls", "2", "--hold-seconds", "1", "--compare-bargeins", "1", "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    rows = [r for r in rows if len(r) > 2 and r[0] in ("this", "other") and r[1][0].isdigit()]
    assert [(r[0], r[1]) for r in rows] == [("this", "2/2"), ("other", "2/2")], proc.stdout
    assert "this / other, mean over 1 round(s):" in proc.stdout
    assert "decision -> clear written over all rounds (n = 1 / 1)" in proc.stdout, proc.stdout


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


# --- --conditions ------------------------------------------------------------------------------------------


def test_wilson_interval_matches_known_values() -> None:
    from app.bench.stats import Count, wilson

    assert wilson(0, 30)[0] == 0.0 and wilson(0, 30)[1] == pytest.approx(0.11351, abs=1e-5)
    assert wilson(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert wilson(1, 10) == pytest.approx((0.01788, 0.40415), abs=1e-5)
    assert wilson(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-5)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(3, 2)
    assert str(Count(3, 10)) == "3/10 (30%, CI 11-60%)"
    assert Count(0, 0).to_json()["rate"] is None


def test_conditions_option_parses_and_runs_accuracy_only() -> None:
    from app.bench.conditions import CONDITIONS

    args = parse_args(["--conditions", "echo_only,stop_words", "--limit", "2"])
    assert args.conditions == ["echo_only", "stop_words"] and args.mode == "accuracy"
    assert parse_args(["--conditions", "all"]).conditions == list(CONDITIONS)
    assert parse_args([]).conditions is None and parse_args([]).mode == "all"  # today's default run
    with pytest.raises(SystemExit):
        parse_args(["--conditions", "no_such_condition"])


def test_condition_items_carry_their_echo_level_and_labels() -> None:
    import numpy as np

    from app.bench import conditions as cond
    from app.offline.corpus import load_clip

    clips = read_manifest()
    speech, noise = sample(clips, "speech", 3), sample(clips, "noise", 2)
    audio = {c.path: load_clip(c) for c in speech + noise}
    echo = cond.items(cond.CONDITIONS["echo_only"], speech, noise, audio, {}, 3)
    assert [i.echo.erl_db for i in echo if i.echo] == [-6.0, -12.0, -18.0]
    assert all(60.0 <= i.echo.delay_ms <= 250.0 and i.echo.drift_ms == 20.0 for i in echo if i.echo)
    assert all(i.kind == "noise" and not i.pcm.any() for i in echo)
    quiet = cond.items(cond.CONDITIONS["quiet_speech"], speech, noise, audio, {}, 3)
    assert all(abs(20 * np.log10(cond.active_rms(i.pcm) / 32768) + 40.0) < 0.5 for i in quiet)
    step = cond.items(cond.CONDITIONS["line_step"], speech, noise, audio, {}, 1)[0]
    before, after = step.pcm[:8000].astype(float), step.pcm[-8000:].astype(float)
    assert 20 * np.log10(np.sqrt((after**2).mean()) / np.sqrt((before**2).mean())) == pytest.approx(25.0, abs=2.0)
    words = cond.items(cond.CONDITIONS["stop_words"], speech, noise, audio, {"stop": np.ones(800, np.int16)}, 0)
    assert words[0].stand_in and "SYNTHETIC" in words[0].stand_in
    net = cond.items(cond.CONDITIONS["network"], speech, noise, audio, {}, 3)
    assert len(net) == 5 and all(i.network is not None and i.network.to_edge.delay_ms == 40.0 for i in net)


def test_one_condition_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--conditions", "echo_only", "--limit", "1",
         "--providers", "twilio", "--concurrency", "1", "--no-cost", "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "echo_only:" in proc.stdout and "self-stops" in proc.stdout
    data = json.loads(out.read_text())
    [summary] = data["summary"]["conditions"]
    assert (summary["condition"], summary["provider"], summary["concurrency"]) == ("echo_only", "twilio", 1)
    assert summary["failed"] == 0, summary["errors"]
    assert summary["self_stops"]["n"] == 1 and len(summary["self_stops"]["ci95"]) == 2
    [run] = data["condition_phases"][0]["runs"]
    assert run["erl_db"] == -6.0 and 60.0 <= run["echo_delay_ms"] <= 250.0
    assert run["self_stops"] == run["all_clears"]  # the caller said nothing: every clear is a self-stop


def test_detector_cost_one_call_one_second_is_sane_and_the_guard_costs_nothing_when_off() -> None:
    from app.bench.detector_cost import GUARD_OFF, GUARD_ON, HANDSET, QUIET, measure_detector, render

    rows = {r.condition: r for r in measure_detector([1], 1.0, repeats=1)}
    assert set(rows) == {GUARD_ON, HANDSET, GUARD_OFF, QUIET}
    for row in rows.values():
        assert row.calls == 1 and row.frames == 50
        # a real detector costs something, and no machine does it in under 1 us or over 20 ms a frame
        assert 1.0 < row.total_us.median < 20_000.0
        assert row.vad_us.median > 0.0
    assert rows[GUARD_OFF].guard_us.median == 0.0
    assert rows[GUARD_ON].guard_us.median > 0.0
    # the guard works only while the agent talks: idle on a quiet call it is far cheaper than cancelling echo
    assert rows[QUIET].guard_us.median < rows[GUARD_ON].guard_us.median / 5
    assert parse_args(["--mode", "detector", "--detector-calls", "1,3"]).detector_calls == [1, 3]
    assert "guard off" in render(list(rows.values()), 1.0)


def test_first_words_judges_the_callers_turns_after_the_interrupted_one() -> None:
    import numpy as np

    from app.bench import conditions as cond
    from app.bench.accuracy import first_word_in, heard_after_bargein

    record = {
        "bargeins": [{"turn_id": 3}],
        "turns": [
            {"id": 2, "role": "user", "text": "opening hours"},  # the priming turn, before the interruption
            {"id": 3, "role": "agent", "text": "We open at", "interrupted": True},
            {"id": 4, "role": "user", "text": "And so, my fellow Americans,"},  # a pause split the caller's words
            {"id": 5, "role": "user", "text": "ask not."},
        ],
    }
    heard = heard_after_bargein(record)
    assert heard == "And so, my fellow Americans, ask not."
    assert first_word_in("and so my fellow americans ask not", heard)
    assert first_word_in("stop please", "Oh, stop, please.")  # one filler in front is allowed
    assert not first_word_in("stop please", "top please")  # the first syllables lost: what pre-roll prevents
    assert not first_word_in("stop please", "")
    assert heard_after_bargein(None) == ""
    pcm = np.concatenate([np.zeros(800, np.int16), (8000 * np.sin(np.arange(4000) / 5)).astype(np.int16)])
    [item] = cond.items(cond.CONDITIONS["first_words"], [], [], {}, {}, 0,
                        labelled=[("synthetic/stop_please", "stop please", pcm, "Stop, please.")])
    assert (item.kind, item.category, item.reference, item.offline_text) == (
        "speech", "phrase", "stop please", "Stop, please.")
    assert item.speech_onset_s == pytest.approx(0.1, abs=0.021) and item.stand_in and "SYNTHETIC" in item.stand_in
    # The read sentences without a transcript are referenced by the recognizer's own text and reported apart.
    [selfref] = cond.items(cond.CONDITIONS["first_words"], [], [], {}, {}, 0,
                           labelled=[("selfref/speech/read_01.wav", "The house", pcm, "The house")])
    assert (selfref.category, selfref.reference) == ("self-referenced", "The house")
