"""The turn bench's reading of the server's log for the end-of-turn model (app/bench/turns.py)."""

from __future__ import annotations

import pytest

from app.bench.turns import CallResult, model_asks, report_model

LOG = """\
2026-11-30 15:40:01 INFO app.call.session call=CA1 stream=MZ1: end-of-turn model: p=0.912 in 61.2 ms \
(cpu 58.0 ms, queued 0.1 ms) -> complete (says_complete)
2026-11-30 15:40:02 INFO app.call.session call=CA1 stream=MZ1: turn draft spoken (1 drafts, 0 restarts)
2026-11-30 15:40:09 INFO app.call.session call=CA2 stream=MZ2: end-of-turn model: p=none in 0.0 ms \
(cpu 0.0 ms, queued 0.0 ms) -> unsure (stale)
2026-11-30 15:40:10 INFO app.call.session call=CA2 stream=MZ2: end-of-turn model: p=0.100 in 70.0 ms \
(cpu 62.0 ms, queued 12.5 ms) -> incomplete (quiet)
"""


def test_model_lines_are_read_with_their_call_verdict_and_cost() -> None:
    asks = model_asks(LOG)
    assert [(a.call_id, a.p_complete, a.verdict) for a in asks] == [
        ("CA1", 0.912, "complete"), ("CA2", None, "unsure"), ("CA2", 0.1, "incomplete")]
    assert (asks[0].infer_ms, asks[0].cpu_ms, asks[2].wait_ms) == (61.2, 58.0, 12.5)


def test_the_model_report_counts_verdicts_per_condition_and_a_cores_capacity(
        capsys: pytest.CaptureFixture[str]) -> None:
    results = [CallResult("strict", "twilio", "plain", "a", "CA1", 500.0, False),
               CallResult("strict", "twilio", "paused", "a", "CA2", 900.0, False)]
    report_model(model_asks(LOG), results, budget_ms=450.0)
    out = capsys.readouterr().out
    assert "plain: 1 verdicts in 1 calls (complete 1)" in out
    assert "paused: 2 verdicts in 1 calls (incomplete 1, unsure 1)" in out
    assert "CPU p50 60 ms" in out  # the two that ran; the one without an answer is counted apart
    assert "1 without an answer" in out
    assert "one core carries 16.7 turn ends a second, 7 at once" in out
