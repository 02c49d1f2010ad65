"""The burst bench's figures (app/bench/burst.py): what counts as connected, detected, an underrun, a false clear."""

from __future__ import annotations

import argparse

from app.bench.burst import BurstOptions, CallOutcome, summarize, underruns_of, variants
from app.edge.playout import PlayedSpan

GREETING_S = 20.0
ALL = int(GREETING_S * 8000)


def span(start: float, end: float, ended_by: str, first: int = 0, last: int = 8000) -> PlayedSpan:
    return PlayedSpan(start, end, first, last, ended_by)  # type: ignore[arg-type]


def test_a_gap_in_the_agent_audio_is_an_underrun_and_its_end_is_not() -> None:
    gap = [span(0.0, 1.0, "drained"), span(1.2, 5.0, "hangup")]
    assert underruns_of(gap, ALL, ALL, None) == 1
    # The greeting ran out (all of it arrived) before the hang-up: the last drained span is its natural end.
    assert underruns_of([span(0.0, 20.0, "drained")], ALL, ALL, None) == 0
    # ... but running dry with greeting still to come is an underrun, last span or not.
    assert underruns_of([span(0.0, 3.0, "drained")], ALL // 2, ALL, None) == 1
    # A probe's spans count up to its clear only: after it the agent's turn is another one.
    after_clear = [span(0.0, 2.0, "clear"), span(2.5, 3.0, "drained"), span(3.2, 4.0, "hangup")]
    assert underruns_of(after_clear, ALL, ALL, until=2.0) == 0


def test_summary_counts_failures_detections_and_false_clears() -> None:
    options = BurstOptions(calls=5, probe_every=2)
    calls = [
        CallOutcome(probe=False, spans=[span(0.0, 9.0, "hangup")], received_samples=ALL),
        CallOutcome(probe=True, onset=10.0, clears=[10.12], spans=[span(0.0, 10.12, "clear")], received_samples=ALL),
        CallOutcome(probe=False, clears=[4.0], spans=[span(0.0, 4.0, "clear")], received_samples=ALL),
        CallOutcome(probe=True, onset=10.0, clears=[9.0, 10.3], received_samples=ALL),
        CallOutcome(probe=False, error="connect: TimeoutError"),
    ]
    result = summarize(options, calls, GREETING_S)
    assert result.connected == 4 and result.failed == {"connect: TimeoutError": 1}
    assert result.probes == 2 and result.detected == 2
    assert [round(ms) for ms in result.onset_to_clear_ms] == [120, 300]
    assert result.false_clears == 2  # the quiet caller's clear, and the probe's before its onset
    passed = result.passed
    assert not passed["all connect"] and not passed["no false clear"] and passed["no underrun"]
    # Both probes detected, so the percentile decides: numpy's linear p95 of (120, 300) ms is 291 ms.
    assert round(result.pct(95)) == 291 and passed["onset->clear p95 <= 300 ms"]


def test_a_probe_with_no_clear_fails_the_latency_target() -> None:
    options = BurstOptions(calls=1, probe_every=1)
    result = summarize(options, [CallOutcome(probe=True, onset=1.0, received_samples=ALL)], GREETING_S)
    assert result.detected == 0 and not result.passed["onset->clear p95 <= 300 ms"]


def test_default_runs_both_sizes_of_the_issue() -> None:
    assert variants(argparse.Namespace(calls=None, workers=None)) == [(100, 1), (200, 2)]
    assert variants(argparse.Namespace(calls=None, workers=2)) == [(200, 2)]
    assert variants(argparse.Namespace(calls=30, workers=None)) == [(30, 1)]


def test_a_probes_latency_is_split_at_the_server_and_its_own_sending_is_told_apart() -> None:
    options = BurstOptions(calls=1, probe_every=1)
    # Frames on the 20 ms grid from t = 10.0, except that the generator sent the 5th (10.08) 30 ms late, and the
    # 8th 90 ms late, after the clear: that one did not delay it.
    sent = [10.0 + 0.02 * k for k in range(10)]
    sent[4] += 0.03
    sent[7] += 0.09
    # The server read the deciding frame at 10.12 (handled at 10.30: settled 150 ms + cleanup 30 ms after it) and
    # wrote the clear 2 ms after reading it; the edge had the clear at 10.125.
    # A later barge-in (after the edge's clear) is not the one that cleared.
    bargeins = [{"at": 10.30, "settled_ms": 150.0, "total_ms": 30.0, "clear_sent_ms": 2.0},
                {"at": 11.30, "settled_ms": 0.0, "total_ms": 1.0, "clear_sent_ms": 0.5}]
    call = CallOutcome(probe=True, onset=10.04, clears=[10.125], received_samples=ALL, answer_s=0.25,
                       probe_sent=sent, bargeins=bargeins)
    result = summarize(options, [call], GREETING_S)
    assert [round(ms) for ms in result.onset_to_clear_ms] == [85]
    assert [tuple(round(x) for x in split) for split in result.probe_split_ms] == [(80, 2, 3)]
    assert [round(ms) for ms in result.probe_send_late_ms] == [30]
    assert result.answer_ms == (250.0,)


def test_a_probe_without_a_server_record_has_no_split() -> None:
    options = BurstOptions(calls=1, probe_every=1)
    call = CallOutcome(probe=True, onset=1.0, clears=[1.1], received_samples=ALL)
    result = summarize(options, [call], GREETING_S)
    assert result.detected == 1 and result.probe_split_ms == () and result.probe_send_late_ms == (0.0,)


def test_a_split_whose_deciding_frame_comes_before_the_probe_spoke_is_left_out() -> None:
    options = BurstOptions(calls=1, probe_every=1)
    # The record puts the deciding frame at 9.5, before the probe's first frame went out (10.0): not believable.
    bargeins = [{"at": 9.7, "settled_ms": 100.0, "total_ms": 100.0, "clear_sent_ms": 2.0}]
    call = CallOutcome(probe=True, onset=10.04, clears=[10.2], received_samples=ALL,
                       probe_sent=[10.0 + 0.02 * k for k in range(10)], bargeins=bargeins)
    result = summarize(options, [call], GREETING_S)
    assert result.detected == 1 and result.probe_split_ms == ()
