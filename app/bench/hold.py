"""Hold mode of `bargein bench`: N calls open at once, the agent talking, every caller sending steady noise.

Calls are started `ramp_interval_s` apart; each waits until the caller has heard agent audio (a long greeting)
and then loops a steady-noise clip (rain, wind, engine, vacuum cleaner, train: things that must not stop the
agent). When every call is up and the server's CPU rate has settled (the greetings are synthesised at the
start of each call), the server's frame-lag statistics are reset and the window of `seconds` is measured:

- server CPU per call-second: the /stats `cpu_s` delta over (calls up x window);
- RSS per call: (RSS at the end of the window - RSS after one warm-up call, with no call open) / calls up;
- inbound-frame lag (a frame's arrival on the socket to its VAD decision) p50/p99/p99.9/max, exact, from
  the server's ring buffer;
- the load generator's own CPU and the machine's, and caller frames the generator sent late: both tell
  whether the generator or the server is the bottleneck on a shared 2-core machine;
- clears received in the window (noise must not stop the agent) and calls whose agent was still talking
  at its end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from app.bench.accuracy import ConnectErrors, lateness_ms
from app.bench.common import CpuMeter, GcWatch, LoopMonitor, ServerProcess, progress
from app.call.turn import split_sentences
from app.edge.emulator import EdgeEmulator, EmulatedCall, Provider
from app.offline.corpus import STEADY_CATEGORIES, Clip, load_clip, white_noise
from providers.tts.espeak import EspeakTts

I16 = npt.NDArray[np.int16]
SAMPLE_RATE = 8000
WORDS_PER_S = 175 / 60  # espeak's default rate
_SENTENCES = (
    "Thank you for holding, this is a long announcement that keeps the agent talking.",
    "Our opening hours are from eight in the morning until eight at night, every day of the week.",
    "Orders placed before noon leave our warehouse on the same day and usually arrive the next morning.",
    "If you would like to change a delivery, please have your order number ready.",
    "You can interrupt me at any time, and I will stop talking at once.",
)


def greeting_for(seconds: float) -> str:
    """A greeting that takes at least `seconds` to speak."""
    words_needed = seconds * WORDS_PER_S * 1.15
    parts: list[str] = []
    while sum(len(p.split()) for p in parts) < words_needed:
        parts.append(_SENTENCES[len(parts) % len(_SENTENCES)])
    return " ".join(parts)


@dataclass(frozen=True)
class HoldOptions:
    calls: int = 100
    seconds: float = 30.0
    ramp_interval_s: float = 0.05
    settle_s: float = 3.0
    max_settle_s: float = 10.0
    providers: tuple[Provider, ...] = ("twilio", "plivo")
    # "noise": callers send the corpus's steady noises (above the energy gate: every window runs the model);
    # "quiet": callers listen on a hissy line (-60 dBFS white noise, below the gate), the common case.
    caller: str = "noise"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> HoldOptions:
        """From `bargein bench`'s --hold-* options (both the hold mode and --compare use them)."""
        return cls(
            calls=args.hold_calls,
            seconds=args.hold_seconds,
            providers=tuple(args.providers),
            settle_s=1.0 if args.quick else 3.0,
            caller=args.hold_caller,
        )

    @property
    def talk_s(self) -> float:
        return self.calls * self.ramp_interval_s + self.max_settle_s + self.seconds + 8.0


def server_env(options: HoldOptions) -> dict[str, str]:
    return {"AGENT_GREETING": greeting_for(options.talk_s)}


@dataclass
class _HeldCall:
    call: EmulatedCall
    noise: I16
    up: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None
    late: list[npt.NDArray[np.float64]] = field(default_factory=list)
    sent_at: list[npt.NDArray[np.float64]] = field(default_factory=list)


@dataclass
class HoldResult:
    calls_requested: int
    calls_up: int
    errors: dict[str, int]
    window_s: float
    ramp_s: float
    settle_s: float
    server_cpu_s: float
    cpu_ms_per_call_s: float | None
    rss_idle: int
    rss_hold: int
    rss_per_call: float | None
    greeting_s: float  # the agent audio each call's turn synthesises (the server keeps it for the turn)
    frame_lag_ms: dict[str, float]
    clears_in_window: int
    talking_at_end: int
    frames_sent: int
    late_frames: int
    max_late_ms: float
    meter: dict[str, float]
    gc_pauses: int  # the load generator's gen-1/2 collections in the window
    gc_max_ms: float
    loop_late_max_ms: float  # the load generator's event loop: longest oversleep of a 5 ms timer
    loop_late_over_5ms: int
    stats_before: dict[str, Any]
    stats_after: dict[str, Any]
    underruns: int = 0


async def speech_seconds(text: str) -> float:
    """How long the server's TTS takes to say `text`, sentence by sentence as an agent turn synthesises it."""
    tts = EspeakTts()
    durations: dict[str, float] = {}
    try:
        for sentence in split_sentences(text):
            if sentence not in durations:
                durations[sentence] = (await tts.synthesize(sentence)).duration_ms / 1000.0
    finally:
        await tts.aclose()
    return sum(durations[s] for s in split_sentences(text))


async def run_hold(server: ServerProcess, edge: EdgeEmulator, clips: list[Clip], options: HoldOptions) -> HoldResult:
    steady = [c for c in clips if c.category in STEADY_CATEGORIES] or clips
    if options.caller == "quiet":
        noises = [white_noise(5.0, -60.0, seed=i) for i in range(4)]
    else:
        noises = [load_clip(c) for c in steady]
    greeting_s = await speech_seconds(greeting_for(options.talk_s))

    # One warm-up call first, so what every server allocates once (model sessions, buffers) is not charged
    # to the held calls.
    warm = _HeldCall(edge.call(options.providers[0]), noises[0][:SAMPLE_RATE])
    await _hold_one(warm, asyncio.Event(), warmup=True)
    await asyncio.sleep(0.5)
    idle = await server.stats()

    stop = asyncio.Event()
    held = [
        _HeldCall(edge.call(options.providers[i % len(options.providers)]), noises[i % len(noises)])
        for i in range(options.calls)
    ]
    t_ramp = time.monotonic()

    async def start(i: int, h: _HeldCall) -> None:
        await asyncio.sleep(i * options.ramp_interval_s)
        await _hold_one(h, stop)

    tasks = [asyncio.create_task(start(i, h)) for i, h in enumerate(held)]
    try:
        deadline = options.calls * options.ramp_interval_s + 60.0
        waiting = [asyncio.create_task(h.up.wait()) for h in held]
        _, pending = await asyncio.wait(waiting, timeout=deadline)
        for task in pending:
            task.cancel()
        ramp_s = time.monotonic() - t_ramp
        up = [h for h in held if h.up.is_set() and h.error is None]
        progress(f"    {len(up)}/{options.calls} calls up after {ramp_s:.1f} s; settling")
        settle_s = await _settle(server, options)

        with GcWatch() as gc_watch:
            # GcWatch's full collection stalls this loop (tens of ms with 100 calls' logs): let the delayed
            # caller frames go out before the window opens.
            await asyncio.sleep(0.5)
            before = await server.stats()
            await server.reset_stats()
            meter = CpuMeter()
            t0 = time.monotonic()
            async with LoopMonitor() as loop_watch:
                await asyncio.sleep(options.seconds)
            t1 = time.monotonic()
            after = await server.stats()
            measured = meter.read()
        up = [h for h in held if h.up.is_set() and h.error is None and not h.call.closed]
        talking = sum(1 for h in up if (spans := h.call.played_spans) and spans[-1].ended_by == "playing")
        clears = sum(1 for h in held for t in h.call.clears if t0 <= t <= t1)
        # The edge ran dry while the agent's turn still had audio to come: the pacing lead was too short.
        underruns = sum(
            1 for h in up for span in h.call.played_spans if span.ended_by == "drained" and t0 <= span.end <= t1
        )
    finally:
        stop.set()
        await asyncio.gather(*(h.call.hangup() for h in held), return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)

    late = [lat[(at >= t0) & (at <= t1)] for h in held for lat, at in zip(h.late, h.sent_at, strict=True)]
    late_all = np.concatenate(late) if late else np.zeros(0)
    errors: dict[str, int] = {}
    for h in held:
        if h.error is not None:
            errors[h.error] = errors.get(h.error, 0) + 1
        elif not h.up.is_set():
            errors["not up in time"] = errors.get("not up in time", 0) + 1
    window = t1 - t0
    cpu = float(after["cpu_s"]) - float(before["cpu_s"])
    n = len(up)
    rss_hold = int(after["rss_bytes"])
    return HoldResult(
        calls_requested=options.calls,
        calls_up=n,
        errors=errors,
        window_s=window,
        ramp_s=ramp_s,
        settle_s=settle_s,
        server_cpu_s=cpu,
        cpu_ms_per_call_s=cpu * 1000.0 / (n * window) if n else None,
        rss_idle=int(idle["rss_bytes"]),
        rss_hold=rss_hold,
        rss_per_call=(rss_hold - int(idle["rss_bytes"])) / n if n else None,
        greeting_s=greeting_s,
        frame_lag_ms={k: float(v) for k, v in after["frame_lag_ms"].items()},
        clears_in_window=clears,
        talking_at_end=talking,
        frames_sent=int(late_all.size),
        late_frames=int((late_all > 5.0).sum()),
        max_late_ms=float(late_all.max()) if late_all.size else 0.0,
        meter=measured,
        gc_pauses=len(gc_watch.pauses_ms),
        gc_max_ms=gc_watch.max_ms,
        loop_late_max_ms=loop_watch.max_ms,
        loop_late_over_5ms=loop_watch.over(5.0),
        stats_before=before,
        stats_after=after,
        underruns=underruns,
    )


async def _settle(server: ServerProcess, options: HoldOptions) -> float:
    """Wait `settle_s`, then until the server's CPU rate is steady (start-up work such as synthesising the
    greetings is over): two consecutive 1 s rates within 15% (or 2% of a core), at most `max_settle_s`."""
    t0 = time.monotonic()
    await asyncio.sleep(options.settle_s)
    last_cpu, last_t, last_rate = float((await server.stats())["cpu_s"]), time.monotonic(), -1.0
    while time.monotonic() - t0 < options.max_settle_s:
        await asyncio.sleep(1.0)
        cpu, t = float((await server.stats())["cpu_s"]), time.monotonic()
        rate = (cpu - last_cpu) / (t - last_t)
        if last_rate >= 0 and abs(rate - last_rate) <= max(0.15 * last_rate, 0.02):
            break
        last_cpu, last_t, last_rate = cpu, t, rate
    return time.monotonic() - t0


async def _hold_one(h: _HeldCall, stop: asyncio.Event, warmup: bool = False) -> None:
    """Connect, wait for the agent's voice, then send noise until `stop` (or once, for the warm-up call)."""
    call = h.call
    try:
        try:
            await asyncio.wait_for(call.connect(), 20)
        except ConnectErrors as exc:
            h.error = f"connect: {type(exc).__name__}"
            return
        with contextlib.suppress(TimeoutError):
            await call.wait_until(lambda: call.played_samples >= int(0.3 * SAMPLE_RATE) or call.closed, 30.0)
        if call.closed or call.played_samples < int(0.3 * SAMPLE_RATE):
            h.error = "the server ended the call" if call.closed else "the agent never started talking"
            return
        h.up.set()
        while not stop.is_set() and not call.closed:
            times = await call.send_audio(h.noise)
            if times:
                h.late.append(lateness_ms(times))
                h.sent_at.append(np.asarray(times, dtype=np.float64))
            if warmup:
                break
        if call.closed and call.closed_by == "server" and not stop.is_set():
            h.error = "the server ended the call"
    except Exception as exc:  # one broken call is a result, not the end of the benchmark
        h.error = f"{type(exc).__name__}"
    finally:
        h.up.set()
        if warmup or stop.is_set() or h.error is not None:
            with contextlib.suppress(Exception):
                await call.close()
