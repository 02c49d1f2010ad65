"""`bargein bench --mode detector`: the barge-in detector's own CPU cost per call per 20 ms frame.

Theory of operation
-------------------
What one call's detector does per inbound 20 ms frame, as `app/call/session.py` does it, with no sockets
and no server (this measures the detector, not the transport):

1. the agent's audio reaches the call's `EchoGuard` as the outbox sends it: 160 ms mu-law chunks, up to
   SEND_AHEAD_S before they play, each decoded and handed to `guard.played(pcm16, start_t)`;
2. the caller's frame goes through `guard.process(frame, t)` only while `guard.active(t)` (agent audio
   played recently enough to echo);
3. then `CallVad.feed(pcm16, t)`: energy gate, webrtcvad, noise floor, and Silero through the one
   process-wide `SileroBatcher`, which batches the windows of every call ready in the same loop turn.

N calls run in lock step on one asyncio loop, on a fake arrival clock (faster than real time): per 20 ms
step every call's guard work runs, then every call's `feed` is gathered (so their Silero windows share
batches, as calls arriving together do on the server), and every DRAIN_EVERY steps (100 ms) the deferred
below-gate windows are run, the pace the batcher's lazy timer keeps live.

Audio: the agent's speech is espeak-ng (a few sentences, synthesised once, looped with a pause), each call
starting at another point of it. The caller leg is that audio through the simulated echo path
(`app.offline.echo_path.echo_of`: ERL -12 dB, delays 60-250 ms, 20 ms drift, mu-law), a -70 dBFS line
floor, and on every third call caller speech from the tuning pool (/work/shared/corpus-pool, never the
report corpus) every few seconds over the echo (double talk); then the caller leg's mu-law round trip.
The agent keeps talking through the caller's speech: no barge-in is acted on, so the guard stays busy (the
guard's worst case).

Conditions (same calls, same caller-leg audio for the first two):
- `guard on`: steps 1-3;
- `guard off`: step 3 only, on the same (echoey) audio;
- `quiet`: no agent audio at all, the caller leg is the floor and the same caller speech; the guard
  exists but is idle (only `active()` is asked).

Figures, each per call per 20 ms frame, in microseconds:
- total: process CPU time (`time.process_time`, every thread: onnxruntime runs on the loop's) over the
  whole run, minus that of the same harness with a detector that does nothing (`harness`, reported);
- guard: `time.perf_counter` around steps 1 and 2 (the chunk decode, `played`, `active`, `process`);
- VAD+Silero: `time.perf_counter` around each step's gathered `feed`s and the deferred-window drains,
  minus the nothing-detector's gather time (wall time, on a loop that does nothing else: CPU, near enough).
Each measurement is repeated (fresh guards and detectors, the conditions interleaved so that a busy spell
on a shared host hits them alike) and reported as the median and the spread (min-max).

Why the guard reads dearer here than in `python -m app.offline.echo_eval --bench` (process() alone, one
call after another): between two of a call's frames the VAD and onnxruntime run, and the guard's code and
data come back cold. Measured on the 2-core VM, one call, 20 s: the guard's time per frame was 48-50 us with
a do-nothing detector after it and 66-69 us with the real one. The server interleaves them the same way, so
this figure, not the isolated one, is what a call costs.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.audio import pcm16_to_ulaw, ulaw_to_pcm16
from app.bargein.echo import EchoConfig, EchoGuard
from app.bargein.silero import SileroBatcher, shared_model
from app.bargein.vad import FRAME, SAMPLE_RATE, CallVad, VadConfig
from app.offline.corpus import as_received, load_clip, white_noise
from app.offline.echo_path import echo_of

I16 = npt.NDArray[np.int16]
FRAME_S = FRAME / SAMPLE_RATE
CHUNK = 1280  # 160 ms: the agent's audio reaches the guard in chunks this long, as the outbox sends them
SEND_AHEAD_S = 0.4  # ... up to this long before they play (as app.offline.echo_eval models the outbox)
DRAIN_EVERY = 5  # steps (100 ms) between deferred-window drains: the batcher's LAZY_FLUSH_S pace
LEAD_IN_S = 0.5  # the call's line before the agent's first chunk plays
SENTENCE_GAP_S = 0.4  # silence between loops of the agent's text
ERL_DB = -12.0
DELAYS_MS = (60.0, 110.0, 150.0, 200.0, 250.0)  # cycled over the calls
DRIFT_MS = 20.0
FLOOR_DBFS = -70.0
DOUBLE_TALK_EVERY = 3  # calls 1, 4, 7, ... have a caller talking over the echo
CALLER_EVERY_S = 5.0  # a caller utterance every this many seconds, from CALLER_FIRST_S
CALLER_FIRST_S = 2.0
POOL_CLIPS = 8
OFFSET_STEP_S = 0.37  # call i starts i x this far into the agent's looped speech
WARMUP_S = 0.5

GUARD_ON, GUARD_OFF, QUIET = "guard on", "guard off", "quiet"
HANDSET = "guard on, no echo"  # the agent talks, nothing comes back (a handset): the guard goes dormant
CONDITIONS = (GUARD_ON, HANDSET, GUARD_OFF, QUIET)

AGENT_TEXT = (
    "Thanks for calling the support line. I can see your order shipped on Monday, "
    "and it should arrive by Thursday afternoon. If you would like, I can also send you the tracking number "
    "by text message. Is there anything else I can help you with today?"
)


@dataclass(frozen=True)
class Spread:
    """Median and range of one figure over the repeats."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(float(np.median(values)), float(min(values)), float(max(values)))

    def format(self) -> str:
        return f"{self.median:6.1f} [{self.low:5.1f}-{self.high:5.1f}]"


@dataclass(frozen=True)
class DetectorRow:
    """One (calls, condition): us per call per 20 ms frame, over `repeats` runs of `frames` steps."""

    calls: int
    condition: str
    frames: int
    repeats: int
    total_us: Spread
    guard_us: Spread
    vad_us: Spread
    harness_us: Spread
    mean_batch: float  # Silero windows per model run, over the repeats


@dataclass(frozen=True)
class _Call:
    """One call's inputs: the caller leg as received, and the agent's audio as (play start, mu-law chunk)."""

    mic: I16
    chunks: tuple[tuple[float, bytes], ...]


@dataclass
class _Spent:
    cpu_s: float = 0.0
    guard_s: float = 0.0
    vad_s: float = 0.0


@functools.cache
def agent_speech() -> I16:
    """The agent's sentences, espeak-ng at 8 kHz, synthesised once per process."""
    from providers.tts.espeak import EspeakTts

    pcm: I16 = asyncio.run(EspeakTts().synthesize(AGENT_TEXT)).pcm
    return pcm


def _caller_clips() -> list[I16]:
    from app.offline.echo_eval import POOL, pool_speech

    return [load_clip(c, POOL) for c in pool_speech(POOL_CLIPS)]


def build_calls(
    calls: int, seconds: float, agent: I16, callers: Sequence[I16]
) -> tuple[list[_Call], list[_Call], list[_Call]]:
    """The calls with the agent talking (echo, some double talk), the same calls quiet (no agent audio), and
    with the agent talking but no echo (a handset)."""
    n = int(seconds * SAMPLE_RATE) // FRAME * FRAME
    lead = int(LEAD_IN_S * SAMPLE_RATE)
    loop = np.concatenate([agent, np.zeros(int(SENTENCE_GAP_S * SAMPLE_RATE), np.int16)])
    talking, quiet, handset = [], [], []
    for i in range(calls):
        shift = int(i * OFFSET_STEP_S * SAMPLE_RATE) % len(loop)
        speech = np.resize(np.roll(loop, -shift), max(0, n - lead))
        timeline = np.concatenate([np.zeros(lead, np.int16), speech])[:n]
        echo = echo_of(timeline, erl_db=ERL_DB, delay_ms=DELAYS_MS[i % len(DELAYS_MS)], drift_ms=DRIFT_MS,
                       seed=i).astype(np.float64)
        line = white_noise(n / SAMPLE_RATE + 0.01, FLOOR_DBFS, seed=i)[:n].astype(np.float64)
        if callers and i % DOUBLE_TALK_EVERY == 1:
            at, k = CALLER_FIRST_S + 0.2 * (i % 5), i
            while int(at * SAMPLE_RATE) < n:
                clip = callers[k % len(callers)].astype(np.float64)
                start = int(at * SAMPLE_RATE)
                end = min(n, start + len(clip))
                line[start:end] += clip[: end - start]
                at, k = at + CALLER_EVERY_S, k + 1
        chunks = tuple(
            ((lead + j) / SAMPLE_RATE, pcm16_to_ulaw(speech[j : j + CHUNK])) for j in range(0, len(speech), CHUNK)
        )
        talking.append(_Call(_to_pcm(echo + line), chunks))
        quiet.append(_Call(_to_pcm(line), ()))
        handset.append(_Call(_to_pcm(line), chunks))
    return talking, quiet, handset


def _to_pcm(x: npt.NDArray[np.float64]) -> I16:
    """The caller leg's mu-law round trip (the echo has had its own on the echo path)."""
    return as_received(np.clip(np.round(x), -32768, 32767).astype(np.int16))


async def _noop(pcm: I16, now: float) -> None:
    return None


async def _drive(
    calls: Sequence[_Call],
    frames: int,
    guards: Sequence[EchoGuard | None],
    feeds: Sequence[Callable[[I16, float], Awaitable[object]]],
    drain: Callable[[], None] | None,
) -> _Spent:
    """Every call's frames in lock step; the guard's and the gathered feeds' time summed apart."""
    spent = _Spent()
    next_chunk = [0] * len(calls)
    perf = time.perf_counter
    for k in range(frames):
        now = (k + 1) * FRAME_S
        pcms: list[I16] = []
        for i, call in enumerate(calls):
            frame = call.mic[k * FRAME : (k + 1) * FRAME]
            guard = guards[i]
            if guard is not None:
                t0 = perf()
                chunks, j = call.chunks, next_chunk[i]
                while j < len(chunks) and chunks[j][0] <= now + SEND_AHEAD_S:
                    # the session decodes the outbox's mu-law for the guard alone: it is the guard's cost
                    guard.played(ulaw_to_pcm16(chunks[j][1]), chunks[j][0])
                    j += 1
                next_chunk[i] = j
                if guard.active(now):
                    frame, _ = guard.process(frame, now)
                spent.guard_s += perf() - t0
            pcms.append(frame)
        t0 = perf()
        await asyncio.gather(*(feed(p, now) for feed, p in zip(feeds, pcms, strict=True)))
        if drain is not None and (k + 1) % DRAIN_EVERY == 0:
            drain()
        spent.vad_s += perf() - t0
    if drain is not None:
        t0 = perf()
        drain()  # what is still deferred would run on the next lazy flush: its cost counts
        spent.vad_s += perf() - t0
    return spent


def _run(calls: Sequence[_Call], frames: int, condition: str | None, batcher: SileroBatcher) -> _Spent:
    """One timed run of a condition on fresh guards and detectors; None: the do-nothing harness."""
    n = len(calls)
    if condition is None:
        guards: list[EchoGuard | None] = [None] * n
        feeds: list[Callable[[I16, float], Awaitable[object]]] = [_noop] * n
        drain: Callable[[], None] | None = None
    else:
        guards = [EchoGuard(EchoConfig()) if condition != GUARD_OFF else None for _ in range(n)]
        feeds = [CallVad(VadConfig(), batcher).feed for _ in range(n)]
        drain = batcher.drain_deferred
    c0 = time.process_time()
    spent = asyncio.run(_drive(calls, frames, guards, feeds, drain))
    spent.cpu_s = time.process_time() - c0
    return spent


def measure_detector(
    calls: Sequence[int] = (1, 100),
    seconds: float = 20.0,
    repeats: int = 3,
    conditions: Sequence[str] = CONDITIONS,
    progress: Callable[[str], None] | None = None,
) -> list[DetectorRow]:
    """The detector's cost per call per 20 ms frame for each number of calls and condition."""
    if repeats < 1 or seconds < 2 * FRAME_S or not calls or min(calls) < 1:
        raise ValueError("need repeats >= 1, seconds >= 0.04 and calls >= 1")
    agent, callers = agent_speech(), _caller_clips()
    batcher = SileroBatcher(shared_model())
    rows: list[DetectorRow] = []
    for n in calls:
        if progress:
            progress(f"  detector: {n} call(s) x {seconds:g} s: preparing the audio")
        talking, quiet, handset = build_calls(n, seconds, agent, callers)
        frames = len(talking[0].mic) // FRAME
        # warm-up: the model's first runs at a batch size allocate; the guard's FFTs plan
        warm = max(2, min(frames, round(WARMUP_S / FRAME_S)))
        _run(talking, warm, GUARD_ON, batcher)
        samples: dict[str, list[tuple[float, float, float, float]]] = {c: [] for c in conditions}
        windows = dict.fromkeys(conditions, 0)
        runs = dict.fromkeys(conditions, 0)
        for r in range(repeats):
            harness = _run(talking, frames, None, batcher)
            for cond in conditions:
                if progress:
                    progress(f"  detector: {n} call(s), {cond}, run {r + 1}/{repeats}")
                before = batcher.stats.windows, batcher.stats.runs
                spent = _run({QUIET: quiet, HANDSET: handset}.get(cond, talking), frames, cond, batcher)
                windows[cond] += batcher.stats.windows - before[0]
                runs[cond] += batcher.stats.runs - before[1]
                scale = 1e6 / (n * frames)
                samples[cond].append(
                    (
                        (spent.cpu_s - harness.cpu_s) * scale,
                        spent.guard_s * scale,
                        (spent.vad_s - harness.vad_s) * scale,
                        harness.cpu_s * scale,
                    )
                )
        for cond in conditions:
            total, guard, vad, base = zip(*samples[cond], strict=True)
            rows.append(
                DetectorRow(n, cond, frames, repeats, Spread.of(total), Spread.of(guard), Spread.of(vad),
                            Spread.of(base), windows[cond] / runs[cond] if runs[cond] else 0.0)
            )
    return rows


def render(rows: Sequence[DetectorRow], seconds: float) -> str:
    """The table: us per call per 20 ms frame, median [min-max] over the repeats."""
    repeats = rows[0].repeats if rows else 0
    lines = [
        f"Detector cost: us of CPU per call per 20 ms frame, {seconds:g} s of audio a call, "
        f"median [min-max] of {repeats} run(s)",
        "  guard on: agent talking, echo at ERL -12 dB, 60-250 ms, double talk on every third call; "
        "guard off: same audio; quiet: no agent audio (guard idle)",
        "  total = process CPU minus the do-nothing harness; guard and VAD+Silero timed apart",
        f"{'calls':>5}  {'condition':<10} {'total':>21} {'guard':>21} {'VAD+Silero':>21} {'harness':>21} "
        f"{'batch':>6}",
    ]
    for r in rows:
        lines.append(
            f"{r.calls:>5}  {r.condition:<10} {r.total_us.format():>21} {r.guard_us.format():>21} "
            f"{r.vad_us.format():>21} {r.harness_us.format():>21} {r.mean_batch:6.1f}"
        )
    return "\n".join(lines)
