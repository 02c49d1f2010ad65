"""app/offline/echo_trace.py: the reason each double-talk call's clear came when it did (pure part)."""

from __future__ import annotations

from app.offline.echo_trace import Trace, reason

CALLER_START, ONSET = 1.0, 1.15


def _trace(clear_at: float | None, clear_start: float | None, how: str,
           candidates: list[tuple[float, float, float | None]]) -> Trace:
    return Trace(candidates=candidates, clear_at=clear_at, clear_start=clear_start, clear_how=how)


def test_a_vouched_first_candidate() -> None:
    tr = _trace(1.25, 1.17, "idle/candidate_vouched", [(1.17, 1.25, 0.1)])
    assert reason(tr, CALLER_START, ONSET) == "vouched"


def test_a_first_candidate_turned_away_as_echo_makes_the_clear_late() -> None:
    tr = _trace(1.6, 1.5, "pending/speech", [(1.1, 1.16, 1.0), (1.5, 1.56, 0.7)])
    assert reason(tr, CALLER_START, ONSET) == "late-candidate+confirmed"


def test_noise_doubted_then_long() -> None:
    tr = _trace(2.3, 1.2, "doubted_pending/long", [(1.2, 1.26, 0.6)])
    assert reason(tr, CALLER_START, ONSET) == "doubted"


def test_no_clear_in_the_window_is_a_miss_and_a_clear_before_the_caller_a_self_stop() -> None:
    assert reason(_trace(None, None, "", []), CALLER_START, ONSET) == "missed"
    assert reason(_trace(ONSET + 2.0, 2.0, "pending/speech", []), CALLER_START, ONSET) == "missed"
    assert reason(_trace(0.8, 0.7, "idle/candidate_vouched", []), CALLER_START, ONSET) == "self-stop"
