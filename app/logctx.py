"""The call a log line belongs to: a per-stream `LogContext` in a ContextVar, and a filter that stamps it on
every record (`call_id`, `stream_id`, `provider`), so a line from deep inside a turn or the outbox can be
found by call without every module passing `extra=` around.

How it reaches every task of a stream: asyncio copies the current context into each task it creates, and a
copy holds references, not copies, of the values. `bind()` puts one fresh, mutable LogContext into the
current task's context at the start of the stream's pump task, before that task creates any other (its
timer, then the session's outbox and agent turns, each created from the pump or the timer). Every one of
them inherits a reference to the same object, so when `set_call()` fills in the ids on the provider's
`start`, tasks created earlier see them too. Another stream's pump task binds its own object; tasks outside
any stream (the shared Silero batcher, start-up, webhooks) see none and their records get no ids.

The ids are the peer's text (a stream is open to anyone until its start is checked), so they are stored
already escaped by `logsafe.safe`: a formatter can write them as they are.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass

from app.logsafe import safe

FIELDS = ("call_id", "stream_id", "provider")
# Twilio's CallSid is 34 characters, Plivo's call UUID 36: this bound cuts only a hostile id.
_ID_LIMIT = 64


@dataclass(slots=True)
class LogContext:
    """What is known of the current stream so far; every field already escaped for a log line."""

    call_id: str | None = None
    stream_id: str | None = None
    provider: str | None = None


_current: ContextVar[LogContext | None] = ContextVar("bargein_log_context", default=None)


def _clean(value: str | None) -> str | None:
    return None if value is None else safe(value, _ID_LIMIT, quote=False)


def bind(provider: str | None = None) -> LogContext:
    """A fresh LogContext for the current task and every task it creates from now on; returns it.

    Call it first thing in a stream's own task: a task created before the call keeps what it had.
    """
    ctx = LogContext(provider=_clean(provider))
    _current.set(ctx)
    return ctx


def set_call(call_id: str, stream_id: str, provider: str | None = None) -> LogContext:
    """Fill in the ids once the provider's `start` has named them (escaped here: they are the peer's text).

    Mutates the bound context, so every task of the stream sees them; binds one if none is (a session driven
    without a pump, as in-process tests do), which then reaches only tasks created after this call.
    """
    ctx = _current.get()
    if ctx is None:
        ctx = bind(provider)
    ctx.call_id = _clean(call_id)
    ctx.stream_id = _clean(stream_id)
    if provider is not None:
        ctx.provider = _clean(provider)
    return ctx


def current() -> LogContext | None:
    """The current task's LogContext, or None outside any stream."""
    return _current.get()


class ContextFilter(logging.Filter):
    """Copies the current LogContext's fields onto each record (`record.call_id` ...), only those that are set
    and only where the record does not already have one (a value passed with `extra=` wins). Never drops a
    record. Install it on handlers, not loggers: a logger's filters do not see records from its children.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _current.get()
        if ctx is not None:
            attrs = record.__dict__
            for name in FIELDS:
                value = getattr(ctx, name)
                if value is not None and name not in attrs:
                    attrs[name] = value
        return True


def install(handlers: list[logging.Handler]) -> None:
    """Add one ContextFilter to each handler that has none yet."""
    for handler in handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
