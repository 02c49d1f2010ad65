"""Log hygiene for hostile input: escape what a peer sent before it reaches a log line, and bound how often a
peer can make us log.

A media stream is open to anyone who can reach the port until its `start` carries a valid token, so every
string taken from a frame or a header (event names, encodings, call ids, key ids) is attacker text. Written
raw, a newline forges a second log line, an ANSI escape repaints the operator's terminal, and a lone
surrogate (legal in JSON as `"\\ud800"`) makes a UTF-8 log handler raise. `safe()` turns any of it into one
printable, bounded line. `LogBudget` keeps a flood of bad frames from becoming a flood of log lines: the
first few are logged in full, then at most one summary per interval with the count of the rest.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

ELLIPSIS = "..."


def safe(value: object, limit: int = 80, *, quote: bool = True) -> str:
    """`value` as a repr-style escaped string of at most about `limit` characters of input, on one line.

    Control characters (newlines, ESC, DEL, C1), format characters (bidi overrides), line and paragraph
    separators, lone surrogates and backslashes come out escaped (`\\n`, `\\x1b`, `\\u202e`, `\\\\`), as
    `repr()` writes them; a longer value is cut at `limit` characters and marked with "...". With `quote`
    the result keeps repr's quotes, so empty strings and trailing spaces stay visible; without it, an id
    that needs no escaping comes out unchanged (for `extra={"call_sid": ...}`).
    """
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    if cut:
        text = text[: max(0, limit)]
    escaped = repr(text)
    if not quote:
        escaped = escaped[1:-1]
    return escaped + ELLIPSIS if cut else escaped


class LogBudget:
    """How many of a stream of similar events get a log line: the first `burst` in full, then one summary line
    per `interval_s` at most, carrying how many events were not logged since the previous line.

    Pure: the caller passes the time in. `take()` is asked once per event; `flush()` by a timer (or at the
    end) so that a flood which stops is still summed up in the log.
    """

    __slots__ = ("burst", "interval_s", "seen", "pending", "last_detail", "_next_summary")

    def __init__(self, burst: int = 5, interval_s: float = 10.0) -> None:
        if burst < 0 or interval_s <= 0:
            raise ValueError("burst must be >= 0 and interval_s > 0")
        self.burst = burst
        self.interval_s = interval_s
        self.seen = 0  # every event ever taken
        self.pending = 0  # taken but not yet reported in any log line
        self.last_detail = ""  # what the caller said about the latest pending event, as given (escape to log it)
        self._next_summary = -math.inf

    def take(self, now: float, detail: str = "") -> int | None:
        """Count one event. None: log nothing. 0: log this event in full. n > 0: log one summary line for n
        events (this one and the n - 1 before it that were not logged)."""
        self.seen += 1
        if self.seen <= self.burst:
            self._next_summary = now + self.interval_s
            return 0
        self.pending += 1
        self.last_detail = detail
        return self.flush(now)

    def flush(self, now: float, *, force: bool = False) -> int | None:
        """The number of events to sum up in one line now (a summary is due, or `force`), else None."""
        if self.pending == 0 or (not force and now < self._next_summary):
            return None
        count, self.pending = self.pending, 0
        self._next_summary = now + self.interval_s
        return count


def drop_uvicorn_invalid_utf8_traceback(logger: logging.Logger | None = None) -> None:
    """Install (once) a filter on "uvicorn.error" that drops uvicorn's traceback for a non-UTF-8 text frame.

    uvicorn 0.5x's websockets-sansio protocol decodes every text frame itself; on invalid UTF-8 it calls
    `logger.exception("Invalid UTF-8 sequence received from client.")` (an ERROR with the UnicodeDecodeError's
    traceback), closes with 1007 and hands the app a `websocket.disconnect` with code 1007. The app never sees
    the frame, so nothing in the endpoint can prevent that line: any peer could fill the error log with
    tracebacks. The close itself is right; `routes/media.py` logs it once, with the call's context. Only this
    one record is dropped (same message, UnicodeDecodeError attached); every other uvicorn error stays.
    """
    target = logger or logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _InvalidUtf8Filter) for f in target.filters):
        target.addFilter(_InvalidUtf8Filter())


class _InvalidUtf8Filter(logging.Filter):
    MESSAGE = "Invalid UTF-8 sequence received from client."

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.msg == self.MESSAGE and isinstance(exc, UnicodeDecodeError))



class RateLimitedLog:
    """Warnings a stranger can trigger at will (a forged signature, a replayed webhook), written through a
    budget per message template: the first `burst` lines of a flood are the useful ones, the ten-thousandth is
    an attack on the disk. A line that follows dropped ones says how many were dropped.

    One instance per owner (e.g. per WebhookAuth, so per app), with the owner's clock; templates are constants
    in our code, so the set of budgets is bounded.
    """

    def __init__(self, logger: logging.Logger, clock: Callable[[], float], burst: int = 20,
                 interval_s: float = 10.0) -> None:
        self._logger = logger
        self._clock = clock
        self._burst = burst
        self._interval_s = interval_s
        self._budgets: dict[str, LogBudget] = {}

    def warning(self, msg: str, *args: object) -> None:
        budget = self._budgets.get(msg)
        if budget is None:
            budget = self._budgets[msg] = LogBudget(self._burst, self._interval_s)
        count = budget.take(self._clock())
        if count is None:
            return
        if count > 1:
            msg = f"{msg} [{count - 1} more lines like this were not logged]"
        self._logger.warning(msg, *args, stacklevel=2)
