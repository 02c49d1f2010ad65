"""One replay check: a recording or a scenario file in, a verdict with a readable diff out.

Shared by the command line (app/replay/cli.py) and the pytest plugin (app/replay/plugin.py), so a failing
test prints exactly what `bargein replay` prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.record.format import Recording, RecordingError, read_recording, write_recording
from app.replay.compare import EXACT, REALTIME, Diff, Tolerance, diff
from app.replay.outcome import outcome_of
from app.replay.runner import ReplayResult, decision_settings, replay_recording
from app.replay.scenario import ScenarioError, load_scenario, run_scenario
from app.settings import Settings

SCENARIO_SUFFIX = ".toml"


class Unreadable(Exception):
    """The file is neither a recording this build reads nor a valid scenario."""


@dataclass(slots=True)
class Verdict:
    path: Path
    kind: str  # "recording" or "scenario"
    provider: str
    passed: bool
    text: str  # the readable diff (or the scenario's verdict)
    call_s: float  # the call's length
    replay_s: float  # wall-clock seconds the replay took
    differences: int
    tolerance: str = ""
    result: ReplayResult | None = field(default=None, repr=False)


def tolerance_for(header: dict[str, Any]) -> Tolerance:
    """Exact against a baseline the virtual clock wrote (`--update`), else the real-time tolerance."""
    return EXACT if header.get("baseline") == "virtual" else REALTIME


def check_recording(rec: Recording, settings: Settings, *, tolerance: Tolerance | None = None) -> Verdict:
    assert rec.path is not None
    result = replay_recording(rec, settings)
    tol = tolerance or tolerance_for(rec.header)
    d: Diff = diff(outcome_of(rec.lines), outcome_of(result.lines), tol, rec.header.get("settings"),
                   decision_settings(settings))
    title = f"{rec.path.name}: {'same decisions' if not d.failed else 'DIFFERENT decisions'}"
    return Verdict(rec.path, "recording", str(rec.header.get("provider", "?")), not d.failed, d.render(title),
                   rec.duration_s, result.elapsed_s, len(d.decisions), tol.name, result)


def check_file(path: str | Path, settings: Settings | None = None) -> Verdict:
    """Replay one recording (or run one scenario) with `settings` (default: from the environment)."""
    p = Path(path)
    settings = settings or Settings()
    started = time.perf_counter()
    if p.suffix == SCENARIO_SUFFIX:
        try:
            scenario = load_scenario(p)
        except ScenarioError as exc:
            raise Unreadable(str(exc)) from None
        res = run_scenario(scenario, settings)
        return Verdict(p, "scenario", scenario.provider, res.passed, res.render(), res.replay.virtual_s,
                       time.perf_counter() - started, len(res.failures), "expectations", res.replay)
    try:
        rec = read_recording(p)
    except RecordingError as exc:
        raise Unreadable(str(exc)) from None
    return check_recording(rec, settings)


def update(verdict: Verdict, rec: Recording) -> None:
    """Accept the replay's outcome: rewrite the recording with the replay's events, baseline "virtual"."""
    assert verdict.result is not None and rec.path is not None
    header = {k: v for k, v in verdict.result.header.items() if k not in ("type", "format", "version")}
    header["baseline"] = "virtual"
    write_recording(rec.path, header, verdict.result.lines, verdict.result.record)
