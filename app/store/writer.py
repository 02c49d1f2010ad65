"""StoreWriter: copies call records into the store behind the calls, so a call never waits for it.

Theory of operation. The call path only snapshots and queues: `opened`, `sync` and `closed` turn what changed
in a record since the last look (a new call, turns that have ended, barge-ins appended, the header) into
`Write` rows (app/store/base.py) and append them to a deque; nothing there awaits, takes a lock, or touches
a file or a socket. One task drains the deque: everything waiting goes to the store as one batch, one
transaction (SQLite runs it in its own thread, asyncpg on the loop without blocking it), and the next batch
gathers while that one commits. So under load the writes coalesce into fewer commits instead of queueing up.

Failures never reach a call. A batch the store refuses (StoreError: it is down, locked, unreachable) is put
back and retried with a growing pause, and counted and logged; rows are upserts, so a retry is harmless.
A row the store cannot take at all (any other error, e.g. a value JSON cannot carry) is retried alone and
dropped, counted. The queue is bounded: past `max_pending` rows the oldest are dropped and counted, so a
store that stays down costs bounded memory, not the process.

When rows are written: a call's header when it opens and closes; a turn once it has ended (`ended_at` set),
checked on every non-per-frame event of the call (the writer subscribes with frames=False: turns ended,
barge-ins settled, the call closed); every barge-in once settled; and at the close, everything left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import Counter

from app.call.events import CallEvent, CallEvents
from app.metrics import Metrics
from app.settings import Settings
from app.store.base import CallStore, StoreError, Write, bargein_row, call_row, turn_row
from app.transcript import CallRecord

logger = logging.getLogger(__name__)

MAX_PENDING = 50_000  # rows; a turn row is ~1 KB, so ~50 MB at worst while the store is down
MAX_BATCH = 500  # rows in one transaction
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
FORGET_EVERY_S = 600.0  # how often used-token rows past their window, and calls past retention, are deleted
FORGET_CALLS_BATCH = 1000  # calls deleted in one transaction: a backlog goes in short ones, never one long lock
LOG_EVERY_S = 30.0  # a store that keeps failing is logged at most this often


class Observed(Protocol):
    """What the writer needs of a call session (app/call/session.py CallSession)."""

    @property
    def record(self) -> CallRecord | None: ...

    @property
    def events(self) -> CallEvents: ...


@dataclass(slots=True)
class _Progress:
    """How much of one record has been queued."""

    first_open: int = 0  # turns before this index are all queued
    queued_turns: set[int] = field(default_factory=set)
    bargeins: int = 0
    # The barge-ins as queued: one whose words came later is a new object in the record, queued again.
    queued_bargeins: list[object] = field(default_factory=list)
    header: tuple[object, ...] = ()


class StoreWriter:
    def __init__(self, store: CallStore, metrics: Metrics, wall: Callable[[], float] = time.time,
                 *, max_pending: int = MAX_PENDING, retention_s: float = 0.0) -> None:
        self.store = store
        self.retention_s = retention_s  # calls older than this are deleted; 0 keeps them for ever
        self._wall = wall
        self._max_pending = max_pending
        self._pending: deque[tuple[float, Write]] = deque()  # (queued at, perf_counter; row)
        self._progress: dict[str, _Progress] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._write_seconds = metrics.store_write_seconds
        r = metrics.registry
        self._errors = Counter("bargein_store_errors_total", "Call-store operations that failed (the calls went on)",
                               ["op"], registry=r)
        self._dropped = Counter("bargein_store_dropped_rows_total",
                                "Call-store rows given up on (queue full, or a row the store refused)", registry=r)
        self._forgotten = Counter("bargein_store_forgotten_calls_total",
                                  "Calls deleted from the store past CALL_STORE_RETENTION_DAYS", registry=r)
        self._last_log = -LOG_EVERY_S
        self.written = 0  # rows committed
        self.lag_s: deque[float] = deque(maxlen=10_000)  # queued -> committed, per row (for figures and tests)

    # -- the call path: snapshot and queue, nothing else ---------------------------------------------
    def put(self, row: Write) -> None:
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self._dropped.inc()
        self._pending.append((time.perf_counter(), row))
        self._idle.clear()
        self._wake.set()

    def opened(self, record: CallRecord, fresh: bool) -> None:
        """A stream opened the call (`fresh`: a new call, whose old rows under this id are replaced)."""
        if fresh or record.call_id not in self._progress:
            self._progress[record.call_id] = _Progress()
        progress = self._progress[record.call_id]
        progress.header = _header(record)
        self.put(call_row(record, fresh))
        self._sync(record, progress, final=False)

    def sync(self, record: CallRecord) -> None:
        """Queue what changed in an open call: ended turns, settled barge-ins, the header."""
        progress = self._progress.get(record.call_id)
        if progress is not None:
            self._sync(record, progress, final=False)

    def closed(self, record: CallRecord) -> None:
        """The call ended: queue every turn (ended or not), barge-in and the header, and stop following it."""
        progress = self._progress.pop(record.call_id, None) or _Progress()
        self._sync(record, progress, final=True)

    def observe(self, session: Observed) -> None:
        """Follow a call's decisions (an observer for CallDeps.observers): no per-frame events, so no frame cost."""
        record = session.record
        if record is None:
            return

        def on_event(event: CallEvent) -> None:
            self.sync(record)

        session.events.subscribe(on_event, frames=False)

    def _sync(self, record: CallRecord, progress: _Progress, final: bool) -> None:
        call_id = record.call_id
        turns = record.turns
        queued = progress.queued_turns
        for turn in turns[progress.first_open:]:
            if turn.id not in queued and (final or turn.ended_at is not None):
                queued.add(turn.id)
                self.put(turn_row(call_id, turn))
        while progress.first_open < len(turns) and turns[progress.first_open].id in queued:
            queued.discard(turns[progress.first_open].id)
            progress.first_open += 1
        bargeins = record.bargeins
        queued_b = progress.queued_bargeins
        for seq, queued_one in enumerate(queued_b):
            if bargeins[seq] is not queued_one:  # replaced (app/call/bookkeeping.py): its words' kind came
                queued_b[seq] = bargeins[seq]
                self.put(bargein_row(call_id, seq, bargeins[seq]))
        while progress.bargeins < len(bargeins):
            self.put(bargein_row(call_id, progress.bargeins, bargeins[progress.bargeins]))
            queued_b.append(bargeins[progress.bargeins])
            progress.bargeins += 1
        header = _header(record)
        if final or header != progress.header:
            progress.header = header
            self.put(call_row(record))

    # -- the writer task -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="store-writer")

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued row is committed (or `timeout_s` passes); True if it was."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (for up to `timeout_s`), then stop the task and close the store."""
        if self._task is not None:
            if not await self.flush(timeout_s):
                logger.warning("call store: %d rows not written at shutdown", len(self._pending))
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await self.store.aclose()
        except Exception:
            logger.exception("call store: closing failed")

    async def _run(self) -> None:
        retry_s = RETRY_FIRST_S
        next_forget = time.monotonic()
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                wait = max(next_forget - time.monotonic(), 0.0)
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            if time.monotonic() >= next_forget:
                next_forget = time.monotonic() + FORGET_EVERY_S
                await self._forget_tokens()
                await self._forget_calls()
            if not self._pending:
                continue
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), MAX_BATCH))]
            t0 = time.perf_counter()
            try:
                await self.store.write([row for _, row in batch])
            except StoreError as exc:
                self._failed("write", exc)
                self._requeue(batch)
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, RETRY_MAX_S)
                continue
            except Exception:
                logger.exception("call store: a batch could not be written; retrying its rows one by one")
                self._errors.labels("write").inc()
                await self._one_by_one(batch)
                continue
            retry_s = RETRY_FIRST_S
            self._committed(batch, t0)

    def _committed(self, batch: list[tuple[float, Write]], t0: float) -> None:
        done = time.perf_counter()
        self._write_seconds.observe(done - t0)
        self.written += len(batch)
        self.lag_s.extend(done - queued for queued, _ in batch)

    async def _one_by_one(self, batch: list[tuple[float, Write]]) -> None:
        for item in batch:
            t0 = time.perf_counter()
            try:
                await self.store.write([item[1]])
            except Exception as exc:
                self._failed("write", exc)
                self._dropped.inc()
                continue
            self._committed([item], t0)

    def _requeue(self, batch: list[tuple[float, Write]]) -> None:
        self._pending.extendleft(reversed(batch))
        while len(self._pending) > self._max_pending:
            self._pending.popleft()
            self._dropped.inc()

    async def _forget_tokens(self) -> None:
        try:
            await self.store.forget_tokens(self._wall())
        except Exception as exc:
            self._failed("forget_tokens", exc)

    async def _forget_calls(self) -> None:
        if self.retention_s <= 0:
            return
        before = self._wall() - self.retention_s
        try:
            while True:
                gone = await self.store.forget_calls(before, FORGET_CALLS_BATCH)
                self._forgotten.inc(gone)
                if gone < FORGET_CALLS_BATCH:
                    return
        except Exception as exc:
            self._failed("forget_calls", exc)

    def _failed(self, op: str, exc: BaseException) -> None:
        self._errors.labels(op).inc()
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            logger.warning("call store %s failed (%s; %d rows waiting); calls go on, retrying", op, exc,
                           len(self._pending))

    def failed(self, op: str, exc: BaseException) -> None:
        """Count and log a failure of a store call made elsewhere (a token claim, a read)."""
        self._failed(op, exc)


def _header(record: CallRecord) -> tuple[object, ...]:
    return (record.ended_at, record.end_reason, len(record.stream_ids), record.invalid_frames, record.generation)


async def start_writer(settings: Settings, metrics: Metrics) -> StoreWriter | None:
    """Open CALL_STORE_URL's store and start its writer; None for memory://.

    A store set explicitly that cannot be opened stops the start (StoreError): whoever configured it expects
    the records to be there. The default SQLite file that cannot be opened (e.g. a read-only working
    directory in a container) is logged as an error and the process keeps its records in memory.
    """
    from app.store import open_store, safe_url

    store = open_store(settings.call_store_url)
    if store is None:
        return None
    try:
        await store.start()
    except StoreError:
        if "call_store_url" in settings.model_fields_set:
            raise
        logger.exception("the default call store %s cannot be opened: call records stay in this process's "
                         "memory (set CALL_STORE_URL to a writable sqlite:////path or a postgresql:// URL)",
                         safe_url(settings.call_store_url))
        return None
    writer = StoreWriter(store, metrics, retention_s=settings.call_store_retention_days * 86400.0)
    writer.start()
    logger.info("call store: %s", safe_url(settings.call_store_url))
    return writer
