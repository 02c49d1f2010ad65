"""`bargein bench --mode burst`: N calls arriving within a few seconds, the agent talking on every one.

Theory of operation
-------------------
The hold (`app/bench/hold.py`) ramps its calls in slowly and measures the steady state; a burst is the other
stress a deploy or a marketing campaign brings: every call's webhook, WebSocket upgrade, `start` and greeting
synthesis land within `--arrival-s` (5 s), on a server that shares its two cores with this load generator.

Each call is started at `i * arrival_s / calls` (Twilio and Plivo alternating), waits until the caller hears the
agent's greeting (a long one: `--hold-s` plus margin, synthesised by every call for itself, as a greeting is
today), then sends a quiet line (-60 dBFS hiss, under the VAD's gate) for `--hold-s` and hangs up. Every
`--probe-every`-th caller (a probe) speaks over the agent `--probe-at-s` after first hearing it: a corpus speech
clip, then the quiet line again. What is measured, at the emulator (`app/edge/emulator.py`), per call:

- connected: the upgrade, `start` and the agent's first audio within CONNECT_TIMEOUT_S each (failures by cause);
- a probe's onset -> clear: the clip's speech onset on the send clock (as `app/bench/accuracy.py` places it) to
  the first clear the emulator received after it;
- underruns: the edge ran dry while the agent still had greeting to say: a played span that ended "drained"
  and was followed by more agent audio, or the last one when less than the whole greeting had arrived (a
  probe's spans count only up to its clear: what the agent says after a barge-in is another turn);
- false clears: any clear on a quiet caller, a probe's clears before its onset.

Targets (issue 14): every call connects, onset -> clear p95 <= 300 ms, no underrun, no false clear; both for
100 calls on one worker and for 200 calls on `--workers 2` (the default runs both and prints both).

`summarize` is the pure part (tested on literal call outcomes); `run_burst` does the I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from app.bench.accuracy import ConnectErrors
from app.bench.common import CpuMeter, ServerProcess, progress
from app.bench.hold import greeting_for, speech_seconds
from app.edge.emulator import EdgeEmulator, EmulatedCall, Provider
from app.edge.llm_server import ScriptedLlmServer
from app.edge.playout import PlayedSpan
from app.offline.corpus import Clip, load_clip, read_manifest, white_noise

I16 = npt.NDArray[np.int16]
SAMPLE_RATE = 8000
FRAME_S = 0.02
CONNECT_TIMEOUT_S = 30.0  # upgrade + start, then again for the agent's first audio: a burst is slow, not dead
CLEAR_WAIT_S = 3.0  # a probe's clear after its onset, at most
TALKING_S = 0.3  # the caller has heard this much of the agent: the call is up
P95_TARGET_MS = 300.0


@dataclass(frozen=True)
class BurstOptions:
    calls: int = 100
    workers: int = 1
    arrival_s: float = 5.0
    hold_s: float = 10.0  # each call's quiet line (or probe) after it first hears the agent
    probe_every: int = 10
    probe_at_s: float = 3.0
    providers: tuple[Provider, ...] = ("twilio", "plivo")

    @property
    def greeting_s(self) -> float:
        """Speech the greeting must last: the hold, the wait for the first audio under load, and margin."""
        return self.hold_s + 12.0

    def is_probe(self, i: int) -> bool:
        return self.probe_every > 0 and i % self.probe_every == self.probe_every - 1


@dataclass
class CallOutcome:
    """One call as the emulator saw it; times on the load generator's monotonic clock."""

    probe: bool
    error: str | None = None
    onset: float | None = None  # a probe's speech onset on the send clock
    clears: list[float] = field(default_factory=list)
    spans: list[PlayedSpan] = field(default_factory=list)
    received_samples: int = 0  # agent audio the edge received (heard or queued)
    late_frames: int = 0  # caller frames the load generator sent > 5 ms late


@dataclass(frozen=True)
class BurstResult:
    options: BurstOptions
    connected: int
    failed: dict[str, int]
    probes: int
    detected: int  # probes with a clear within CLEAR_WAIT_S of the onset
    onset_to_clear_ms: tuple[float, ...]
    underruns: int
    calls_with_underruns: int
    false_clears: int
    greeting_s: float
    wall_s: float = 0.0
    machine_busy: float = 0.0
    late_frames: int = 0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.onset_to_clear_ms, q)) if self.onset_to_clear_ms else float("nan")

    @property
    def passed(self) -> dict[str, bool]:
        return {
            "all connect": self.connected == self.options.calls,
            f"onset->clear p95 <= {P95_TARGET_MS:.0f} ms": self.detected == self.probes > 0
            and self.pct(95) <= P95_TARGET_MS,
            "no underrun": self.underruns == 0,
            "no false clear": self.false_clears == 0,
        }


def underruns_of(spans: Sequence[PlayedSpan], received_samples: int, greeting_samples: int,
                 until: float | None) -> int:
    """Spans the edge ran dry in while the agent's turn still had audio to come (see the module docstring)."""
    spans = [s for s in spans if until is None or s.start < until]
    count = 0
    for k, span in enumerate(spans):
        if span.ended_by != "drained":
            continue
        last = k == len(spans) - 1
        if not last or (until is None and received_samples < greeting_samples):
            count += 1
    return count


def summarize(options: BurstOptions, outcomes: Sequence[CallOutcome], greeting_s: float) -> BurstResult:
    """The burst's figures from each call's outcome. Pure: no I/O, no clock."""
    failed: dict[str, int] = {}
    delays: list[float] = []
    probes = detected = underruns = calls_with = false_clears = late = 0
    greeting_samples = int(greeting_s * SAMPLE_RATE * 0.98)  # espeak's lengths vary a little between runs
    for call in outcomes:
        if call.error is not None:
            failed[call.error] = failed.get(call.error, 0) + 1
            continue
        late += call.late_frames
        until: float | None = None
        if call.probe:
            probes += 1
            onset = call.onset
            heard = [t for t in call.clears if onset is not None and onset <= t <= onset + CLEAR_WAIT_S]
            false_clears += sum(1 for t in call.clears if onset is None or t < onset)
            if heard and onset is not None:
                detected += 1
                delays.append((heard[0] - onset) * 1000.0)
                until = heard[0]
        else:
            false_clears += len(call.clears)
        n = underruns_of(call.spans, call.received_samples, greeting_samples, until)
        underruns += n
        calls_with += n > 0
    connected = sum(1 for c in outcomes if c.error is None)
    return BurstResult(options, connected, failed, probes, detected, tuple(delays), underruns, calls_with,
                       false_clears, greeting_s, late_frames=late)


async def _quiet(call: EmulatedCall, noise: I16, seconds: float) -> list[float]:
    """The quiet line for `seconds`, in one-second pieces so a hang-up ends it promptly."""
    times: list[float] = []
    end = time.monotonic() + seconds
    while not call.closed and (left := end - time.monotonic()) > FRAME_S:
        piece = noise[: max(1, int(min(1.0, left) * SAMPLE_RATE))]
        times += await call.send_audio(piece)
    return times


def _late(times: Sequence[float]) -> int:
    if not times:
        return 0
    t = np.asarray(times) - FRAME_S * np.arange(len(times))
    return int(((t - t.min()) * 1000.0 > 5.0).sum())


async def _one(call: EmulatedCall, outcome: CallOutcome, noise: I16, clip: tuple[Clip, I16] | None,
               options: BurstOptions) -> None:
    try:
        try:
            await asyncio.wait_for(call.connect(), CONNECT_TIMEOUT_S)
        except ConnectErrors as exc:
            outcome.error = f"connect: {type(exc).__name__}"
            return
        with contextlib.suppress(TimeoutError):
            await call.wait_until(lambda: call.played_samples >= int(TALKING_S * SAMPLE_RATE) or call.closed,
                                  CONNECT_TIMEOUT_S)
        if call.closed or call.played_samples < int(TALKING_S * SAMPLE_RATE):
            outcome.error = "the server ended the call" if call.closed else "the agent never started talking"
            return
        times: list[float] = []
        if clip is None:
            times += await _quiet(call, noise, options.hold_s)
        else:
            spec, audio = clip
            times += await _quiet(call, noise, options.probe_at_s)
            sent = await call.send_audio(audio)
            times += sent
            k = int((spec.speech_onset_s or 0.0) / FRAME_S)
            if sent and k < len(sent):
                outcome.onset = sent[k] - FRAME_S + ((spec.speech_onset_s or 0.0) - k * FRAME_S)
            rest = options.hold_s - options.probe_at_s - len(audio) / SAMPLE_RATE
            times += await _quiet(call, noise, max(rest, 1.0))
        if call.closed:
            outcome.error = "the server ended the call"
        outcome.late_frames = _late(times)
    except Exception as exc:  # one broken call is a result, not the end of the benchmark
        outcome.error = type(exc).__name__
    finally:
        outcome.clears = list(call.clears)
        outcome.spans = list(call.played_spans)
        outcome.received_samples = call.received_samples
        with contextlib.suppress(Exception):
            await call.hangup()
        with contextlib.suppress(Exception):
            await call.close()


async def run_burst(options: BurstOptions, speech: Sequence[tuple[Clip, I16]]) -> BurstResult:
    greeting = greeting_for(options.greeting_s)
    greeting_s = await speech_seconds(greeting)
    noise = white_noise(1.0, -60.0, seed=7)
    async with ScriptedLlmServer(["Sure, one moment."], token_delay_s=0.04) as llm:
        server = ServerProcess({"LLM_BASE_URL": llm.base_url, "AGENT_GREETING": greeting,
                                "WORKERS": str(options.workers)})
        await server.start()
        try:
            async with EdgeEmulator(server.url, keep_audio=False) as edge:
                outcomes = [CallOutcome(options.is_probe(i)) for i in range(options.calls)]
                calls = [edge.call(options.providers[i % len(options.providers)]) for i in range(options.calls)]
                interval = options.arrival_s / max(1, options.calls)
                meter = CpuMeter()

                async def start(i: int) -> None:
                    await asyncio.sleep(i * interval)
                    probe = speech[(i // max(1, options.probe_every)) % len(speech)] if outcomes[i].probe else None
                    await _one(calls[i], outcomes[i], noise, probe, options)

                await asyncio.gather(*(start(i) for i in range(options.calls)))
                measured = meter.read()
        finally:
            await server.stop()
            server.cleanup()
    result = summarize(options, outcomes, greeting_s)
    return BurstResult(**{**result.__dict__, "wall_s": measured["wall_s"],
                          "machine_busy": measured["machine_busy"]})


def render(result: BurstResult) -> str:
    o = result.options
    failed = ", ".join(f"{k}: {v}" for k, v in sorted(result.failed.items())) or "none"
    lines = [
        f"burst: {o.calls} calls arriving within {o.arrival_s:g} s on {o.workers} worker(s), agent talking "
        f"(a {result.greeting_s:.0f} s greeting each), quiet callers, every {o.probe_every}th speaking "
        f"{o.probe_at_s:g} s in",
        f"  connected                    {result.connected} of {o.calls} (failed: {failed})",
        f"  probes cleared               {result.detected} of {result.probes}",
        f"  onset -> clear (at the edge)  p50 {result.pct(50):.0f} ms  p95 {result.pct(95):.0f} ms  "
        f"max {max(result.onset_to_clear_ms, default=float('nan')):.0f} ms",
        f"  underruns                    {result.underruns} (on {result.calls_with_underruns} calls)",
        f"  false clears                 {result.false_clears}",
        f"  caller frames sent > 5 ms late  {result.late_frames}; machine busy {result.machine_busy * 100:.0f}% "
        f"of the cores over {result.wall_s:.0f} s (load generator included)",
    ]
    for name, ok in result.passed.items():
        lines.append(f"  target: {name:<28} {'PASS' if ok else 'MISS'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bargein bench --mode burst", description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=None, metavar="N",
                   help="calls in the burst (default: 100 on one worker, then 200 on two)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="server workers (WORKERS); with --calls, one run of that size (default 1)")
    p.add_argument("--arrival-s", type=float, default=5.0, help="the calls arrive within this (default 5)")
    p.add_argument("--hold-s", type=float, default=10.0,
                   help="each call's quiet line after it hears the agent (default 10)")
    p.add_argument("--probe-every", type=int, default=10, help="every Nth caller speaks over the agent (default 10)")
    p.add_argument("--probe-at-s", type=float, default=3.0, help="a probe speaks this long after first hearing "
                   "the agent (default 3)")
    return p


def variants(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(calls, workers) to run: both of the issue's unless a size or a worker count is given."""
    if args.calls is None and args.workers is None:
        return [(100, 1), (200, 2)]
    workers = args.workers or 1
    return [(args.calls or 100 * workers, workers)]


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.hold_s <= args.probe_at_s + 1.0:
        raise SystemExit("--hold-s must be over --probe-at-s + 1 (the probe's clip and the line after it)")
    clips = [c for c in read_manifest() if c.kind == "speech" and c.speech_onset_s is not None]
    speech = [(c, load_clip(c)) for c in clips[:20]]
    if not speech:
        raise SystemExit("no speech clips with an onset in the corpus")
    ok = True
    for calls, workers in variants(args):
        options = BurstOptions(calls=calls, workers=workers, arrival_s=args.arrival_s, hold_s=args.hold_s,
                               probe_every=args.probe_every, probe_at_s=args.probe_at_s)
        progress(f"burst: {calls} calls on {workers} worker(s)")
        result = asyncio.run(run_burst(options, speech))
        print(render(result), flush=True)
        print()
        ok = ok and all(result.passed.values())
    return 0 if ok else 1
