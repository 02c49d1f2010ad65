"""The two log formats: JsonFormatter (LOG_FORMAT=json) and TextFormatter (LOG_FORMAT=text, the default).

JsonFormatter writes one log record as one line of JSON, for log shippers. Keys: `time` (ISO 8601, UTC,
milliseconds), `level`, `logger`, `message`, then every `extra` field the record carries (the call sessions add
`call_sid` and `provider`; `app.logctx.ContextFilter` adds `call_id`, `stream_id` and `provider` to every line of
a call), then `exc` (the formatted traceback) and `stack` when there is one. The output is pure ASCII JSON: a
newline, a control character or a Unicode line separator in any value is escaped, so a record is never more than
one physical line.

TextFormatter is the plain format with the call's ids after the logger name when the record has them:
`... INFO app.call.turn call=CA12 stream=MZ34: agent turn 2: provider failed: ...`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from app.logsafe import safe

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",  # set by Formatter.format
    "asctime",  # set by Formatter.format when the format string uses it
    "taskName",  # Python 3.12+
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}
_CORE = ("time", "level", "logger", "message")


class JsonFormatter(logging.Formatter):
    """A logging.Formatter whose every output is one line of JSON; takes no format string."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRS or key.startswith("_"):
                continue
            data[f"extra_{key}" if key in _CORE or key in ("exc", "stack") else key] = value
        if record.exc_info:
            # Cached like the base class does, so a second handler does not format the traceback again.
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, ensure_ascii=True, default=_fallback)


def _utc_iso(created: float) -> str:
    return datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fallback(value: object) -> str:
    """An extra value JSON has no form for (bytes, an exception, an object): its repr, still one string."""
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not lose the log line
        return f"<unrepresentable {type(value).__name__}>"


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(call_context)s: %(message)s"


class TextFormatter(logging.Formatter):
    """The text format, naming the call (` call=... stream=...`) on every line that belongs to one."""

    def __init__(self, datefmt: str | None = None) -> None:
        super().__init__(TEXT_FORMAT, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # `call_context` is computed here rather than set on the record: another handler's formatter (JSON)
        # would otherwise print it as one more key.
        return self._style._fmt % {**record.__dict__, "call_context": call_context(record)}


def call_context(record: logging.LogRecord) -> str:
    """` call=... stream=...` for a record of a call, else "".

    `call_id`/`stream_id` come from app.logctx, escaped there. A `call_sid` passed with `extra=` (the webhooks,
    before any stream exists) is escaped here, as it may be a form field's raw text.
    """
    attrs = record.__dict__
    call = attrs.get("call_id")
    if call is None and attrs.get("call_sid") is not None:
        call = safe(attrs["call_sid"], 64, quote=False)
    parts = [f"call={call}"] if call is not None else []
    if attrs.get("stream_id") is not None:
        parts.append(f"stream={attrs['stream_id']}")
    return "".join(" " + part for part in parts)
