"""Scenario files: the agent says X, the caller plays clip Y at t s into it; expectations judged in plain words."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.replay.scenario import ScenarioError, load_scenario, run_scenario, scenario_from_dict
from tests.conftest import make_settings

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.toml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenarios_hold(path: Path) -> None:
    result = run_scenario(load_scenario(path), make_settings())
    assert result.passed, result.render()


def test_the_clip_starts_at_its_offset_into_the_agent_s_speech() -> None:
    sc = load_scenario(Path(__file__).parent / "scenarios" / "cut_in_twilio.toml")
    result = run_scenario(sc, make_settings())
    first_audio = next(line["t"] for line in result.replay.lines
                       if line["type"] == "ws_out" and '"media"' in line["text"])
    assert result.clip_at == pytest.approx(first_audio + 1.2, abs=1e-6)
    bargein = result.outcome.bargeins[0]
    assert bargein.t > result.clip_at and bargein.turn_id == 1


def test_an_unmet_expectation_reads_like_a_diff() -> None:
    sc = scenario_from_dict({
        "provider": "plivo",
        "agent": {"says": "Thanks for calling. Your order shipped this morning."},
        "caller": {"clip": "read_01_libri3982F", "at_s": 1.0, "tail_s": 0.3},
        "expect": {"no_clear": True, "heard_starts_with": "Your order"},
    }, Path("."))
    result = run_scenario(sc, make_settings())
    assert not result.passed
    text = result.render()
    assert "NOT as expected" in text
    assert "expected none (the agent must not stop)" in text
    assert "expected it to start with 'Your order'" in text


def test_bad_scenarios_are_refused_with_a_reason() -> None:
    with pytest.raises(ScenarioError, match="agent.says"):
        scenario_from_dict({"caller": {"clip": "silence"}}, Path("."))
    with pytest.raises(ScenarioError, match="unknown keys"):
        scenario_from_dict({"agent": {"says": "Hi."}, "caller": {"clip": "silence"}, "expect": {"nope": 1}},
                           Path("."))
    with pytest.raises(ScenarioError, match="neither a WAV"):
        scenario_from_dict({"agent": {"says": "Hi."}, "caller": {"clip": "no-such-clip"}}, Path("."))
