"""Tools the agent runs during a call, and the per-call ledger that keeps each call to one run.

Theory of operation
-------------------
A `Tool` is declared in code: a name, a description and a JSON schema for the model, a `kind`, and an async
handler that takes the parsed arguments and returns the result (text, or anything JSON can carry). A
`ToolRegistry` holds a server's tools; create_app() hands it to every call, and each call gets its own
`ToolRunner`.

The kind says what a barge-in may do to a call in flight:

    read       idempotent (a lookup): it runs to the end whatever happens; its result feeds the next turn
    mutation   changes something (a booking): cancelled if the caller barges in before it completes, or if
               their words withdraw or correct the request (cancellation / correction kinds,
               app/bargein/words.py); once completed it stands

A mutation's handler must commit at its end, in one step (or undo on `CancelledError`): cancelled, it must
leave nothing done, since the model is told it was not done.

The `ToolLedger` is the pure half: keyed by the model's `tool_call_id`, each call is begun once and settled
once (done, failed or cancelled), and a settled entry never changes. A call the model makes again with an
id it used before is not run again: it gets the stored result (or waits for the run in flight). That is
"committed exactly once": the entry's result goes into the conversation once, in the context of the turn
that first asked for it (`context`), and the handler ran at most once.

The `ToolRunner` is the async half: it runs handlers as tasks of its own, not of the agent's turn, so a
barge-in that cancels the turn does not cancel a read; it cancels the in-flight mutations itself
(`on_barge_in`). Times come from the clock it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from app.bargein.words import Kind
from providers.llm.base import ChatMessage, ToolCall, ToolCallMessage, ToolSchema

logger = logging.getLogger(__name__)

ToolKind = Literal["read", "mutation"]
ToolHandler = Callable[[dict[str, Any]], Awaitable[Any]]
State = Literal["running", "done", "failed", "cancelled"]

# The interruption kinds that withdraw or change what the caller asked for: a mutation in flight is dropped.
CONTRADICTING: frozenset[Kind] = frozenset({"cancellation", "correction"})

# What the model reads for a call that did not complete (JSON, like any other result).
CANCELLED_BY_BARGE_IN = "the caller interrupted before it completed; nothing was done"
CANCELLED_BY_WORDS = "the caller withdrew or corrected the request; nothing was done"


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call. `parameters` is the JSON schema of its arguments (an object)."""

    name: str
    description: str
    parameters: dict[str, Any]
    kind: ToolKind
    handler: ToolHandler

    def schema(self) -> ToolSchema:
        """The tool as a request's `tools` entry (OpenAI function calling)."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


class ToolRegistry:
    """A server's tools, by name, in the order registered."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> Tool:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is registered already")
        self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def schemas(self) -> list[ToolSchema]:
        return [tool.schema() for tool in self._tools.values()]

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())


@dataclass(slots=True)
class LedgerEntry:
    """One tool call, from the model's request to its settled result."""

    call: ToolCall
    kind: ToolKind | None  # None: the model named no registered tool
    turn_id: int  # the agent turn that first asked for it
    started_at: float
    state: State = "running"
    result: str = ""  # the tool message's content, once settled
    finished_at: float | None = None
    cancel_reason: str | None = None  # set when a cancellation was asked for
    repeats: int = 0  # how often the model asked again with the same id

    @property
    def settled(self) -> bool:
        return self.state != "running"


@dataclass(frozen=True, slots=True)
class BargeInTools:
    """What a barge-in did to the tools in flight: mutations cancelled, reads left to complete."""

    canceled: int
    completed: int


def result_text(value: Any) -> str:
    """A handler's return value as a tool message's content: text as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return str(value)


def _status(status: str, detail: str) -> str:
    return json.dumps({"status": status, "detail": detail}, separators=(",", ":"))


@dataclass(slots=True)
class ToolLedger:
    """Every tool call of one call, keyed by tool_call_id, in the order first asked. Pure: no I/O, no clock."""

    entries: dict[str, LedgerEntry] = field(default_factory=dict)

    def begin(self, call: ToolCall, kind: ToolKind | None, turn_id: int, now: float) -> tuple[LedgerEntry, bool]:
        """The entry for `call`, and whether it is new (to be run). A known id is never run again."""
        known = self.entries.get(call.id)
        if known is not None:
            known.repeats += 1
            return known, False
        entry = LedgerEntry(call, kind, turn_id, now)
        self.entries[call.id] = entry
        return entry, True

    def settle(self, call_id: str, state: State, result: str, now: float) -> bool:
        """Settle a running entry; False (and nothing changes) if it was settled already: a result is
        committed once."""
        entry = self.entries.get(call_id)
        if entry is None or entry.settled or state == "running":
            return False
        entry.state, entry.result, entry.finished_at = state, result, now
        return True

    def in_flight(self) -> list[LedgerEntry]:
        return [e for e in self.entries.values() if not e.settled]

    def mutations_in_flight(self) -> list[LedgerEntry]:
        return [e for e in self.entries.values() if not e.settled and e.kind == "mutation"]

    def context(self, turn_id: int) -> list[ChatMessage]:
        """The settled calls `turn_id` first asked for, as the model reads them: one assistant message with
        their `tool_calls`, then one tool message per result. Calls still running are left out (a request
        must answer every call it lists); they appear once settled."""
        settled = [e for e in self.entries.values() if e.turn_id == turn_id and e.settled]
        return exchange(settled)

    def turn_ids(self) -> list[int]:
        """The turns with settled calls, in order."""
        return sorted({e.turn_id for e in self.entries.values() if e.settled})


def exchange(entries: Iterable[LedgerEntry], text: str = "") -> list[ChatMessage]:
    """An assistant message asking for `entries`' calls (after `text`, what it said first) and their results."""
    entries = list(entries)
    if not entries:
        return []
    calls: list[ToolCallMessage] = [
        {"id": e.call.id, "type": "function",
         "function": {"name": e.call.name, "arguments": json.dumps(e.call.arguments, separators=(",", ":"))}}
        for e in entries
    ]
    messages: list[ChatMessage] = [{"role": "assistant", "content": text, "tool_calls": calls}]
    messages.extend({"role": "tool", "tool_call_id": e.call.id, "content": e.result} for e in entries)
    return messages


class ToolRunner:
    """One call's tool runs: starts each call once, as a task of its own, and settles it in the ledger."""

    def __init__(self, registry: ToolRegistry, clock: Callable[[], float], timeout_s: float = 10.0) -> None:
        self.registry = registry
        self.ledger = ToolLedger()
        self._clock = clock
        self._timeout_s = timeout_s
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def schemas(self) -> list[ToolSchema]:
        return self.registry.schemas()

    def start(self, call: ToolCall, turn_id: int) -> LedgerEntry:
        """Run `call` unless its id was seen before (then its entry, settled or running, is the answer)."""
        tool = self.registry.get(call.name)
        entry, new = self.ledger.begin(call, tool.kind if tool else None, turn_id, self._clock())
        if not new:
            logger.info("tool call %s asked again: not run twice (%s)", call.id, entry.state)
            return entry
        if tool is None:
            self.ledger.settle(call.id, "failed", _status("error", f"no tool named {call.name!r}"), self._clock())
            return entry
        task = asyncio.create_task(self._run(tool, entry), name=f"tool-{call.name}")
        self._tasks[call.id] = task
        task.add_done_callback(functools.partial(self._ended, call.id))
        return entry

    async def _run(self, tool: Tool, entry: LedgerEntry) -> None:
        call = entry.call
        try:
            async with asyncio.timeout(self._timeout_s):
                value = await tool.handler(call.arguments)
        except TimeoutError:
            self.ledger.settle(call.id, "failed", _status("error", "the tool timed out"), self._clock())
        except asyncio.CancelledError:
            self._settle_cancelled(entry)
            raise
        except Exception as exc:  # a tool's failure is the model's to explain, not the call's end
            logger.warning("tool %s failed: %s", tool.name, type(exc).__name__)
            self.ledger.settle(call.id, "failed", _status("error", f"the tool failed ({type(exc).__name__})"),
                               self._clock())
        else:
            self.ledger.settle(call.id, "done", result_text(value), self._clock())

    def _settle_cancelled(self, entry: LedgerEntry) -> None:
        self.ledger.settle(entry.call.id, "cancelled",
                           _status("cancelled", entry.cancel_reason or CANCELLED_BY_BARGE_IN), self._clock())

    def _ended(self, call_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.pop(call_id, None)
        entry = self.ledger.entries[call_id]
        if task.cancelled() and not entry.settled:  # cancelled before its first step ran
            self._settle_cancelled(entry)

    async def wait(self, entries: Iterable[LedgerEntry], timeout_s: float | None = None) -> bool:
        """Wait until `entries` are settled (at most `timeout_s`); True if they all are. Cancelling the
        waiter leaves the runs alone."""
        tasks = {self._tasks[e.call.id] for e in entries if not e.settled and e.call.id in self._tasks}
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        return all(e.settled for e in entries)

    async def settle_in_flight(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) for every call in flight: the reads a barge-in let run, the mutations it
        is cancelling. True if none is left running."""
        return await self.wait(self.ledger.in_flight(), timeout_s)

    def in_flight(self) -> list[LedgerEntry]:
        return self.ledger.in_flight()

    def _cancel(self, entries: list[LedgerEntry], reason: str) -> int:
        count = 0
        for entry in entries:
            task = self._tasks.get(entry.call.id)
            if task is None or task.done():
                continue  # completed (or ending) already: it stands
            entry.cancel_reason = reason
            task.cancel()
            count += 1
        return count

    def on_barge_in(self) -> BargeInTools:
        """The caller took the turn: cancel the mutations in flight; the reads run on."""
        reads = sum(1 for e in self.ledger.in_flight() if e.kind == "read")
        canceled = self._cancel(self.ledger.mutations_in_flight(), CANCELLED_BY_BARGE_IN)
        return BargeInTools(canceled, reads)

    def on_words(self, kind: Kind | None) -> int:
        """The caller's words are known: if they withdraw or correct the request, cancel the mutations in
        flight. Returns how many were cancelled."""
        if kind not in CONTRADICTING:
            return 0
        return self._cancel(self.ledger.mutations_in_flight(), CANCELLED_BY_WORDS)

    async def aclose(self) -> None:
        """The call is over: cancel whatever still runs (a read nobody will hear either) and wait for it."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
