"""safe(): peer text on one printable, bounded line; LogBudget: a burst in full, then summaries; the uvicorn filter."""

from __future__ import annotations

import logging

import pytest

from app.logsafe import LogBudget, drop_uvicorn_invalid_utf8_traceback, safe


@pytest.mark.parametrize(
    "raw",
    [
        "evil\nINFO app.main: forged line",
        "\x1b[31mred\x1b[0m",
        "cr\rlf\r\n",
        "nul\x00del\x7fc1\x85",
        "bidi \u202eoverride",
        "line\u2028separator",
        "lone \ud800 surrogate",
        "tab\there",
    ],
)
def test_control_characters_come_out_escaped_on_one_line(raw: str) -> None:
    out = safe(raw)
    assert out.isprintable()
    assert out.encode("utf-8")  # a lone surrogate would raise in a UTF-8 log handler
    for bad in ("\n", "\r", "\x1b", "\x00", "\x7f", "\x85", "\u202e", "\u2028", "\ud800", "\t"):
        assert bad not in out
    assert safe(raw, quote=False).isprintable()


def test_plain_ids_are_unchanged_without_quotes_and_quoted_with() -> None:
    assert safe("CA0123abcd", quote=False) == "CA0123abcd"
    assert safe("audio/x-mulaw") == "'audio/x-mulaw'"
    assert safe("") == "''"
    assert safe("trailing ") == "'trailing '"


def test_backslashes_are_escaped_so_a_peer_cannot_fake_an_escape() -> None:
    assert safe("a\\nb", quote=False) == "a\\\\nb"
    assert safe("a\nb", quote=False) == "a\\nb"


def test_long_values_are_cut_and_marked() -> None:
    out = safe("x" * 10_000, limit=80)
    assert out == repr("x" * 80) + "..."
    assert len(safe("\x1b" * 1000, limit=10)) < 60  # escaping is bounded too: the cut comes first
    assert safe(12345) == "'12345'"


def test_budget_logs_a_burst_in_full_then_one_summary_per_interval() -> None:
    budget = LogBudget(burst=5, interval_s=10.0)
    verdicts = [budget.take(0.0 + i * 0.01, f"frame {i}") for i in range(200)]
    assert verdicts[:5] == [0, 0, 0, 0, 0]
    assert all(v is None for v in verdicts[5:])  # all within 2 s of the burst
    assert budget.seen == 200 and budget.pending == 195
    assert budget.flush(5.0) is None  # not due yet
    assert budget.flush(10.05) == 195
    assert budget.flush(10.06, force=True) is None  # nothing pending
    assert budget.take(11.0, "late") is None  # the next summary is due at 20.05
    assert budget.take(20.1, "later") == 2  # a frame after the interval carries the summary itself
    assert budget.last_detail == "later"


def test_budget_flush_at_the_end_sums_up_what_is_left() -> None:
    budget = LogBudget(burst=1, interval_s=10.0)
    assert budget.take(0.0) == 0
    assert budget.take(0.1) is None
    assert budget.take(0.2) is None
    assert budget.flush(0.3, force=True) == 2
    assert budget.flush(0.4, force=True) is None


def test_uvicorn_filter_drops_only_the_invalid_utf8_traceback() -> None:
    logger = logging.getLogger("test.logsafe.uvicorn")
    drop_uvicorn_invalid_utf8_traceback(logger)
    drop_uvicorn_invalid_utf8_traceback(logger)
    assert len(logger.filters) == 1  # installed once

    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            b"\xff".decode()
        except UnicodeDecodeError:
            logger.exception("Invalid UTF-8 sequence received from client.")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("Invalid UTF-8 sequence received from client.")  # not a decode error: kept
        logger.error("Exception in ASGI application\n")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in seen] == [
        "Invalid UTF-8 sequence received from client.",
        "Exception in ASGI application\n",
    ]
    assert seen[0].exc_info is not None and seen[0].exc_info[0] is ValueError



def test_rate_limited_log_bounds_a_flood_of_one_warning_and_reports_what_it_dropped() -> None:
    import logging

    from app.clock import FakeClock
    from app.logsafe import RateLimitedLog

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("tests.logsafe.flood")
    log.propagate = False
    log.addHandler(Keep())
    clock = FakeClock(100.0)
    limited = RateLimitedLog(log, clock.now, burst=3, interval_s=10.0)
    for _ in range(1000):  # 1000 refusals within one second
        limited.warning("refused %s", "x")
        clock.advance(0.001)
    limited.warning("another template %s", "x")  # a budget of its own
    assert [r.getMessage() for r in records] == ["refused x"] * 3 + ["another template x"]
    clock.advance(10.0)
    limited.warning("refused %s", "x")  # the next interval: one line carrying the count of those dropped
    assert records[-1].getMessage() == "refused x [997 more lines like this were not logged]"
