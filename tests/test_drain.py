"""app/drain.py: the drain's states on a timeline (times are arguments), and DrainControl's callbacks."""

from __future__ import annotations

import pytest

from app.drain import Drain, DrainControl, Exit, Phase, SayGoodbye, StartDrain


def phase(drain: Drain) -> Phase:
    return drain.phase  # read through a call: each assert sees the state as it is now


def test_serving_takes_calls_and_polls_to_nothing() -> None:
    drain = Drain(timeout_s=300)
    assert drain.accepting and drain.phase is Phase.SERVING
    assert drain.poll(1000.0, live=5) is None
    assert drain.poll(1000.0, live=0) is None  # no calls is not a reason to stop before a signal


def test_first_signal_drains_and_the_last_call_ends_it() -> None:
    drain = Drain(timeout_s=300, linger_s=2.0)
    assert drain.signal(10.0, answered_at=3.0) == StartDrain(10.0)
    assert not drain.accepting and drain.phase is Phase.DRAINING
    assert drain.poll(11.0, live=3) is None
    assert drain.poll(50.0, live=1) is None  # calls go on, long past the linger
    assert drain.poll(60.0, live=0) == Exit(60.0, forced=False, reason="drained")
    assert phase(drain) is Phase.STOPPING
    assert drain.poll(60.1, live=0) == Exit(60.1, forced=False, reason="stopping")


def test_no_call_taken_recently_exits_at_once() -> None:
    drain = Drain(timeout_s=300, linger_s=2.0)
    drain.signal(10.0, answered_at=None)
    assert drain.poll(10.0, live=0) == Exit(10.0, forced=False, reason="drained")
    drain = Drain(timeout_s=300, linger_s=2.0)
    drain.signal(10.0, answered_at=7.9)
    assert isinstance(drain.poll(10.0, live=0), Exit)


def test_a_call_answered_just_before_the_signal_is_waited_for() -> None:
    drain = Drain(timeout_s=300, linger_s=2.0)
    drain.signal(10.0, answered_at=9.5)  # its stream may still be on its way
    assert drain.poll(11.4, live=0) is None
    assert drain.poll(11.45, live=1) is None  # it arrived: now it is waited for like any call
    assert drain.poll(30.0, live=1) is None
    assert isinstance(drain.poll(31.0, live=0), Exit)


def test_timeout_says_goodbye_once_then_exits_when_the_calls_end() -> None:
    drain = Drain(timeout_s=30, linger_s=2.0, goodbye_s=15.0)
    drain.signal(0.0)
    assert drain.poll(29.9, live=2) is None
    assert drain.poll(30.0, live=2) == SayGoodbye(30.0, 2)
    assert drain.poll(30.1, live=2) is None  # said once
    assert drain.poll(34.0, live=0) == Exit(34.0, forced=False, reason="drained")


def test_a_goodbye_that_never_ends_the_call_is_bounded() -> None:
    drain = Drain(timeout_s=30, goodbye_s=15.0)
    drain.signal(0.0)
    assert isinstance(drain.poll(30.0, live=1), SayGoodbye)
    assert drain.poll(44.9, live=1) is None
    assert drain.poll(45.0, live=1) == Exit(45.0, forced=False, reason="goodbye timeout")


def test_timeout_zero_says_goodbye_at_the_first_poll() -> None:
    drain = Drain(timeout_s=0, linger_s=2.0)
    drain.signal(5.0)
    assert drain.poll(5.0, live=1) == SayGoodbye(5.0, 1)


@pytest.mark.parametrize("when", ["draining", "stopping"])
def test_a_second_signal_stops_at_once(when: str) -> None:
    drain = Drain(timeout_s=300)
    drain.signal(0.0)
    if when == "stopping":
        drain.poll(5.0, live=0)
    assert drain.signal(6.0) == Exit(6.0, forced=True, reason="second signal")
    assert phase(drain) is Phase.STOPPING
    assert drain.poll(6.1, live=4) == Exit(6.1, forced=True, reason="stopping")


def test_negative_times_are_refused() -> None:
    with pytest.raises(ValueError):
        Drain(timeout_s=-1)


def test_control_admits_while_serving_counts_calls_says_goodbye_and_reports_each_phase() -> None:
    now = [0.0]
    live = [2]
    goodbyes: list[int] = []
    phases: list[Phase] = []
    control = DrainControl(Drain(timeout_s=10, linger_s=1.0, goodbye_s=5.0), lambda: now[0])
    control.attach(live=lambda: live[0], goodbye=lambda: goodbyes.append(live[0]))
    control.on_change.append(phases.append)
    assert control.poll() is None and control.accepting
    now[0] = 0.5
    assert control.admit()  # a call taken at 0.5 s: no exit before 1.5 s
    now[0] = 1.0
    assert isinstance(control.signal(), StartDrain) and not control.accepting
    assert not control.admit()
    live[0] = 0
    assert control.poll() is None
    now[0] = 1.5
    assert isinstance(control.poll(), Exit)
    assert phases == [Phase.DRAINING, Phase.STOPPING]


def test_control_says_goodbye_at_the_timeout() -> None:
    now = [0.0]
    goodbyes: list[int] = []
    control = DrainControl(Drain(timeout_s=10), lambda: now[0])
    control.attach(live=lambda: 2, goodbye=lambda: goodbyes.append(1))
    control.signal()
    now[0] = 10.0
    assert isinstance(control.poll(), SayGoodbye) and goodbyes == [1]
    assert control.live() == 2
