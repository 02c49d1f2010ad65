"""BargeInPolicy: the state table, policy by policy, on scripted inputs and times."""

from __future__ import annotations

import pytest

from app.bargein.detector import (
    ON_CANDIDATE,
    TRANSITIONS,
    Action,
    BargeInPolicy,
    Candidate,
    Input,
    Keypress,
    Obs,
    Paused,
    PolicyConfig,
    Progress,
    SpanEnded,
    State,
    TurnEnd,
    Verdict,
    Words,
)


def run(policy: BargeInPolicy, *inputs: Input) -> list[Action]:
    return [policy.feed(i).action for i in inputs]


def over_agent(at: float = 1.0, **kw: bool) -> Candidate:
    return Candidate(at, speech_start=at - 0.064, agent_speaking=True, **kw)


def test_immediate_stops_at_once_and_the_caller_keeps_the_turn_until_it_ends() -> None:
    p = BargeInPolicy(PolicyConfig(policy="immediate"))
    assert run(p, over_agent(), Verdict(1.1, "noise"), Paused(1.2, 150), TurnEnd(2.0)) == [
        Action.STOP, Action.NONE, Action.NONE, Action.END_CALLER_TURN]
    assert p.state is State.IDLE


def test_resume_pauses_at_once_then_stops_when_the_caller_goes_on() -> None:
    p = BargeInPolicy(PolicyConfig(policy="resume", backchannel_max_ms=600))
    assert run(p, over_agent()) == [Action.PAUSE]
    assert p.holding
    assert run(p, Verdict(1.1, "speech"), Progress(1.3, 300), Progress(1.6, 599)) == [Action.NONE] * 3
    assert run(p, Progress(1.62, 600)) == [Action.STOP]
    assert p.state is State.CALLER and not p.holding
    assert run(p, TurnEnd(3.0)) == [Action.END_CALLER_TURN]


def test_resume_goes_on_at_once_after_echo() -> None:
    p = BargeInPolicy(PolicyConfig(policy="resume"))
    steps = [p.feed(i) for i in (over_agent(), Verdict(1.1, "echo"))]
    assert [s.action for s in steps] == [Action.PAUSE, Action.RESUME]
    assert steps[1].reason == "echo" and p.state is State.IDLE


def test_a_sound_called_noise_resumes_when_it_ends_and_is_the_caller_if_it_goes_on() -> None:
    p = BargeInPolicy(PolicyConfig(policy="resume", doubt_max_ms=1000))
    steps = [p.feed(i) for i in (over_agent(), Verdict(1.1, "noise"), Progress(1.3, 400), Paused(1.7, 450))]
    assert [s.action for s in steps] == [Action.PAUSE, Action.NONE, Action.NONE, Action.RESUME]
    assert steps[-1].reason == "noise"
    # a quiet talker the second look mistook for noise: heard once the sound outlasts any cough
    p = BargeInPolicy(PolicyConfig(policy="resume", doubt_max_ms=1000, backchannel_max_ms=600))
    assert run(p, over_agent(), Verdict(1.1, "noise"), Progress(1.6, 700), Progress(2.0, 1000)) == [
        Action.PAUSE, Action.NONE, Action.NONE, Action.STOP]


def test_a_short_utterance_of_speech_is_a_backchannel_and_the_agent_resumes() -> None:
    p = BargeInPolicy(PolicyConfig(policy="resume", backchannel_max_ms=600))
    steps = [p.feed(i) for i in (over_agent(), Verdict(1.1, "speech"), Paused(1.6, 350))]
    assert [s.action for s in steps] == [Action.PAUSE, Action.NONE, Action.RESUME]
    assert steps[-1].reason == "backchannel"


def test_a_sound_over_before_the_second_look_is_too_short_to_be_a_turn() -> None:
    p = BargeInPolicy(PolicyConfig(policy="resume"))
    steps = [p.feed(i) for i in (over_agent(), Paused(1.3, 90))]
    assert [s.action for s in steps] == [Action.PAUSE, Action.RESUME] and steps[-1].reason == "short"


def test_saying_it_again_soon_after_a_resume_stops_the_agent() -> None:
    # "stop" sounds like "okay" to a detector without words: the caller who repeats it is heard.
    p = BargeInPolicy(PolicyConfig(policy="resume", escalate_s=4.0))
    assert run(p, over_agent(1.0), Verdict(1.1, "speech"), Paused(1.5, 300)) == [
        Action.PAUSE, Action.NONE, Action.RESUME]
    assert run(p, over_agent(3.0), Verdict(3.1, "speech"), Paused(3.5, 300)) == [
        Action.PAUSE, Action.NONE, Action.STOP]
    # ... but not long after
    p = BargeInPolicy(PolicyConfig(policy="resume", escalate_s=4.0))
    run(p, over_agent(1.0), Verdict(1.1, "speech"), Paused(1.5, 300))
    assert run(p, over_agent(9.0), Verdict(9.1, "speech"), Paused(9.5, 300))[-1] is Action.RESUME


def test_confirm_sends_nothing_until_the_second_look_says_speech() -> None:
    p = BargeInPolicy(PolicyConfig(policy="confirm"))
    assert run(p, over_agent(), Verdict(1.1, "noise"), Paused(1.4, 300)) == [Action.NONE, Action.NONE, Action.REARM]
    assert run(p, over_agent(2.0), Verdict(2.1, "echo")) == [Action.NONE, Action.REARM]
    assert run(p, over_agent(3.0), Verdict(3.1, "speech"), Progress(3.7, 700)) == [
        Action.NONE, Action.PAUSE, Action.STOP]
    p = BargeInPolicy(PolicyConfig(policy="confirm", doubt_max_ms=1000))
    assert run(p, over_agent(), Verdict(1.1, "noise"), Progress(2.0, 1000)) == [Action.NONE, Action.NONE, Action.STOP]


def test_after_a_false_stop_the_resume_policy_confirms_for_a_while() -> None:
    # Music or dishes fool the detector again and again: only the first candidate may clear.
    p = BargeInPolicy(PolicyConfig(policy="resume", cautious_s=3.0))
    assert run(p, over_agent(1.0), Verdict(1.1, "echo")) == [Action.PAUSE, Action.RESUME]
    assert run(p, over_agent(1.5), Verdict(1.6, "echo")) == [Action.NONE, Action.REARM]
    assert run(p, over_agent(2.0), Verdict(2.1, "speech")) == [Action.NONE, Action.PAUSE]  # speech still gets in
    p = BargeInPolicy(PolicyConfig(policy="resume", cautious_s=3.0))
    assert run(p, over_agent(1.0), Verdict(1.1, "noise"), Paused(1.4, 300)) == [
        Action.PAUSE, Action.NONE, Action.RESUME]
    assert run(p, over_agent(2.0)) == [Action.NONE]
    p = BargeInPolicy(PolicyConfig(policy="resume", cautious_s=3.0))
    run(p, over_agent(1.0), Verdict(1.1, "echo"))
    assert run(p, over_agent(5.0)) == [Action.PAUSE]


def test_speech_while_the_agent_is_silent_is_the_callers_turn() -> None:
    p = BargeInPolicy(PolicyConfig(policy="resume"))
    c = Candidate(1.0, speech_start=0.9, agent_speaking=False)
    assert run(p, c, Verdict(1.1, "noise"), Paused(1.5, 300), TurnEnd(2.0)) == [
        Action.CALLER_TURN, Action.NONE, Action.NONE, Action.END_CALLER_TURN]


def test_uninterruptible_spans_defer_or_ignore() -> None:
    p = BargeInPolicy(PolicyConfig(policy="resume", uninterruptible="defer"))
    assert run(p, over_agent(in_uninterruptible=True), Progress(1.5, 500), SpanEnded(2.0)) == [
        Action.NONE, Action.NONE, Action.STOP]
    p = BargeInPolicy(PolicyConfig(policy="resume", uninterruptible="defer"))
    assert run(p, over_agent(in_uninterruptible=True), Paused(1.4, 300), SpanEnded(2.0)) == [
        Action.NONE, Action.REARM, Action.NONE]  # a backchannel during the span is let go
    p = BargeInPolicy(PolicyConfig(policy="resume", uninterruptible="defer"))
    assert run(p, over_agent(in_uninterruptible=True), Progress(1.5, 900), TurnEnd(2.5), SpanEnded(3.0)) == [
        Action.NONE, Action.NONE, Action.NONE, Action.STOP]  # a whole question asked during the span
    assert p.state is State.IDLE
    p = BargeInPolicy(PolicyConfig(policy="resume", uninterruptible="ignore"))
    assert run(p, over_agent(in_uninterruptible=True), SpanEnded(2.0)) == [Action.REARM, Action.NONE]


@pytest.mark.parametrize(("text", "action"), [
    ("wait", Action.STOP), ("Hold on, no.", Action.STOP), ("stop", Action.STOP),
    ("mm-hmm", Action.RESUME), ("yeah okay", Action.RESUME), ("I see", Action.RESUME),
    ("what time do you open", Action.NONE),
])
def test_the_recognizers_words_decide_where_they_are_in(text: str, action: Action) -> None:
    p = BargeInPolicy(PolicyConfig(policy="resume"))
    run(p, over_agent(), Verdict(1.1, "speech"))
    assert p.feed(Words(1.3, text)).action is action


def test_needs_verdict_once_the_window_has_arrived() -> None:
    p = BargeInPolicy(PolicyConfig(policy="resume"))
    p.feed(Candidate(1.0, speech_start=0.936, agent_speaking=True))
    assert not p.needs_verdict(1.0, 0.16)
    assert p.needs_verdict(1.096, 0.16)
    p.feed(Verdict(1.1, "speech"))
    assert not p.needs_verdict(1.2, 0.16)


def test_every_table_row_is_reachable_from_a_real_state() -> None:
    states = {s for s, _ in TRANSITIONS} | {s for s, _ in TRANSITIONS.values()} | {s for s, _ in ON_CANDIDATE.values()}
    assert states == set(State)
    assert {o for _, o in TRANSITIONS} <= set(Obs)
    with pytest.raises(ValueError):
        PolicyConfig(policy="sometimes")  # type: ignore[arg-type]


def test_on_a_line_with_echo_the_resume_policy_confirms_before_it_clears() -> None:
    p = BargeInPolicy(PolicyConfig(policy="resume"))
    assert run(p, Candidate(1.0, 0.936, agent_speaking=True, echo_possible=True), Verdict(1.1, "echo")) == [
        Action.NONE, Action.REARM]  # the agent's own voice never causes a clear
    assert run(p, Candidate(2.0, 1.936, agent_speaking=True, echo_possible=True), Verdict(2.1, "speech")) == [
        Action.NONE, Action.PAUSE]  # double talk still stops it, one second look later


def test_on_a_line_with_echo_a_repeated_short_sound_does_not_escalate() -> None:
    # The echo of the resumed audio comes back like a second "stop": on such a line it resumes again.
    p = BargeInPolicy(PolicyConfig(policy="resume", escalate_s=4.0))
    echo = {"agent_speaking": True, "echo_possible": True}
    assert run(p, Candidate(1.0, 0.936, **echo), Verdict(1.1, "speech"), Paused(1.5, 300)) == [
        Action.NONE, Action.PAUSE, Action.RESUME]
    assert run(p, Candidate(2.0, 1.936, **echo), Verdict(2.1, "speech"), Paused(2.5, 300)) == [
        Action.NONE, Action.PAUSE, Action.RESUME]


def test_a_key_over_the_agent_stops_it_and_a_key_settles_an_open_candidate_as_the_caller() -> None:
    p = BargeInPolicy(PolicyConfig(policy="resume"))
    step = p.feed(Keypress(1.0, agent_speaking=True))
    assert (step.action, step.state, step.reason) == (Action.STOP, State.IDLE, "dtmf")
    # a candidate held open (the key's own tone, or the caller talking) is the caller's once a key comes
    p = BargeInPolicy(PolicyConfig(policy="resume"))
    assert run(p, over_agent(), Keypress(1.05, agent_speaking=True), TurnEnd(2.0)) == [
        Action.PAUSE, Action.STOP, Action.END_CALLER_TURN]
    p = BargeInPolicy(PolicyConfig(policy="confirm"))
    assert run(p, over_agent(), Keypress(1.05, agent_speaking=True)) == [Action.NONE, Action.STOP]


@pytest.mark.parametrize("key", [
    Keypress(1.0, agent_speaking=False),
    Keypress(1.0, agent_speaking=True, interrupts=False),
    Keypress(1.0, agent_speaking=True, in_uninterruptible=True),
], ids=["agent-silent", "keys-do-not-interrupt", "in-span"])
def test_a_key_stops_nothing_when_the_agent_is_silent_keys_do_not_interrupt_or_in_a_span(key: Keypress) -> None:
    p = BargeInPolicy(PolicyConfig(policy="resume"))
    assert run(p, key) == [Action.NONE] and p.state is State.IDLE


def test_a_candidate_the_first_look_doubts_waits_for_the_second_look_under_resume() -> None:
    # A cough's first 64 ms: nothing is sent until the second look; speech after all pauses then, noise never.
    p = BargeInPolicy(PolicyConfig(policy="resume"))
    steps = [p.feed(i) for i in (over_agent(doubtful=True), Verdict(1.1, "noise"), Paused(1.4, 300))]
    assert [s.action for s in steps] == [Action.NONE, Action.NONE, Action.REARM] and steps[0].reason == "doubtful"
    assert run(p, over_agent(5.0, doubtful=True), Verdict(5.1, "speech")) == [Action.NONE, Action.PAUSE]
    # immediate does not look; confirm waits anyway
    assert run(BargeInPolicy(PolicyConfig(policy="immediate")), over_agent(doubtful=True)) == [Action.STOP]
    assert run(BargeInPolicy(PolicyConfig(policy="confirm")), over_agent(doubtful=True)) == [Action.NONE]
