"""BargeInPolicy on an echo line: a candidate the echo guard vouches for clears at once (issue 12, double talk).

A candidate on a line where the agent's echo comes back waits for the second look before any clear, unless the
guard's estimate is trustworthy and finds little echo in the candidate so far (`Candidate.echo_share` under
`echo_clear_share`): then it pauses at once, under `resume` and `confirm` alike, and is settled as `resume`
settles a candidate.
"""

from __future__ import annotations

import pytest

from app.bargein.detector import (
    Action,
    BargeInPolicy,
    Candidate,
    Obs,
    Paused,
    Policy,
    PolicyConfig,
    Progress,
    State,
    TurnEnd,
    Verdict,
)
from app.settings import Settings
from tests.bargein.test_detector import run


def on_echo_line(at: float, share: float | None, echo_possible: bool = True) -> Candidate:
    return Candidate(at, speech_start=at - 0.064, agent_speaking=True, echo_possible=echo_possible, echo_share=share)


@pytest.mark.parametrize("policy", ["resume", "confirm"])
def test_a_vouched_candidate_pauses_at_once_and_the_caller_takes_the_turn(policy: Policy) -> None:
    p = BargeInPolicy(PolicyConfig(policy=policy, echo_clear_share=0.35, backchannel_max_ms=600))
    step = p.feed(on_echo_line(1.0, 0.1))
    assert (step.action, step.state, step.observation, step.reason) == (
        Action.PAUSE, State.PAUSED, Obs.CANDIDATE_VOUCHED, "vouched")
    assert p.holding and p.awaiting_verdict  # the second look still runs
    assert run(p, Verdict(1.1, "speech"), Progress(1.6, 600), TurnEnd(3.0)) == [
        Action.NONE, Action.STOP, Action.END_CALLER_TURN]


@pytest.mark.parametrize("policy", ["resume", "confirm"])
@pytest.mark.parametrize("share", [0.35, 0.8, None])  # at the threshold, echo, or the guard not trusted
def test_a_candidate_the_guard_does_not_vouch_for_still_waits_for_the_second_look(
        policy: Policy, share: float | None) -> None:
    p = BargeInPolicy(PolicyConfig(policy=policy, echo_clear_share=0.35))
    assert run(p, on_echo_line(1.0, share), Verdict(1.1, "echo")) == [Action.NONE, Action.REARM]
    assert run(p, on_echo_line(2.0, share), Verdict(2.1, "speech")) == [Action.NONE, Action.PAUSE]


def test_a_vouched_candidate_that_the_second_look_calls_echo_is_doubted_not_resumed_at_once() -> None:
    # The guard said both. Once cleared the agent's echo dies away and pauses: resumed then, with reason echo.
    p = BargeInPolicy(PolicyConfig(policy="confirm", cautious_s=3.0, doubt_max_ms=1000))
    steps = [p.feed(i) for i in (on_echo_line(1.0, 0.0), Verdict(1.1, "echo"), Paused(1.3, 240))]
    assert [(s.action, s.state) for s in steps] == [
        (Action.PAUSE, State.PAUSED), (Action.NONE, State.DOUBTED), (Action.RESUME, State.IDLE)]
    assert steps[1].observation is Obs.ECHO_DOUBTED and steps[2].reason == "echo"
    # Soon after such a false stop nothing is vouched for: the sound that fooled the guard tends to go on.
    assert run(p, on_echo_line(2.0, 0.0), Verdict(2.1, "noise"), Paused(2.3, 250)) == [
        Action.NONE, Action.NONE, Action.REARM]
    # A caller the guard then read as echo (adapted on near the echo's level) goes on: the caller's turn.
    p = BargeInPolicy(PolicyConfig(policy="resume", doubt_max_ms=1000, backchannel_max_ms=600))
    assert run(p, on_echo_line(1.0, 0.2), Verdict(1.1, "echo"), Progress(1.7, 650), Progress(2.1, 1000)) == [
        Action.PAUSE, Action.NONE, Action.NONE, Action.STOP]
    # Not vouched for: echo is resumed at once, as before.
    p = BargeInPolicy(PolicyConfig(policy="resume"))
    assert run(p, Candidate(1.0, 0.936, agent_speaking=True), Verdict(1.1, "echo")) == [Action.PAUSE, Action.RESUME]


def test_a_vouched_candidate_that_the_second_look_calls_noise_resumes_when_it_ends() -> None:
    p = BargeInPolicy(PolicyConfig(policy="resume", cautious_s=3.0))
    assert run(p, on_echo_line(1.0, 0.0), Verdict(1.1, "noise"), Paused(1.4, 300)) == [
        Action.PAUSE, Action.NONE, Action.RESUME]
    assert run(p, on_echo_line(5.0, 0.0)) == [Action.PAUSE]  # after cautious_s, vouched for again


def test_vouching_is_for_echo_lines_and_off_at_zero_and_immediate_is_unchanged() -> None:
    # A plain line under confirm: the echo share says nothing about noise, the second look decides.
    p = BargeInPolicy(PolicyConfig(policy="confirm"))
    assert run(p, on_echo_line(1.0, 0.0, echo_possible=False)) == [Action.NONE]
    p = BargeInPolicy(PolicyConfig(policy="resume", echo_clear_share=0.0))
    assert run(p, on_echo_line(1.0, 0.0)) == [Action.NONE]
    p = BargeInPolicy(PolicyConfig(policy="immediate"))
    assert run(p, on_echo_line(1.0, 0.0)) == [Action.STOP]


def test_the_threshold_comes_from_settings_and_is_checked() -> None:
    assert PolicyConfig.from_settings(Settings(echo_clear_share=0.2)).echo_clear_share == 0.2
    assert PolicyConfig().echo_clear_share == Settings().echo_clear_share
    with pytest.raises(ValueError):
        PolicyConfig(echo_clear_share=1.5)
