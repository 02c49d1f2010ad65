"""`bargein bench --mode burst`: N calls arriving within a few seconds, the agent talking on every one.

Theory of operation
-------------------
The hold (`app/bench/hold.py`) ramps its calls in slowly and measures the steady state; a burst is the other
stress a deploy or a marketing campaign brings: every call's webhook, WebSocket upgrade, `start` and greeting
synthesis land within `--arrival-s` (5 s), on a server that shares its two cores with this load generator.

Each call is started at `i * arrival_s / calls` (Twilio and Plivo alternating), waits until the caller hears the
agent's greeting (a long one: `--hold-s` plus margin; the same text for every call, so the server's TTS cache
synthesises each of its sentences once: the report shows the cache's counters), then sends a quiet line
(-60 dBFS hiss, under the VAD's gate) for `--hold-s` and hangs up. Every `--probe-every`-th caller (a probe)
speaks over the agent `--probe-at-s` after first hearing it: a corpus speech clip, then the quiet line again.
What is measured, at the emulator (`app/edge/emulator.py`), per call:

- connected: the upgrade, `start` and the agent's first audio within CONNECT_TIMEOUT_S each (failures by cause);
- a probe's onset -> clear: the clip's speech onset on the send clock (as `app/bench/accuracy.py` places it) to
  the first clear the emulator received after it;
- underruns: the edge ran dry while the agent still had greeting to say: a played span that ended "drained"
  and was followed by more agent audio, or the last one when less than the whole greeting had arrived (a
  probe's spans count only up to its clear: what the agent says after a barge-in is another turn);
- false clears: any clear on a quiet caller, a probe's clears before its onset.

And what explains them: each probe's latency split at the server (onset -> the deciding frame read by the
server, -> the clear written, -> the clear at the edge; from the call record's barge-in, its wall-clock `at`
moved onto the monotonic clock, both system-wide), how late the load generator itself sent the probe's frames,
dialling -> the agent's first audio, the server's /stats over the arrivals (the first `arrival_s` + 1 s) and
over the run (CPU, RSS, frame lag, the event loop's stalls and the part of them its own code held), the
load generator's loop lateness, and the server log's warnings (a refused upgrade names its cap).

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
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.bench.accuracy import ConnectErrors
from app.bench.common import CpuMeter, LoopMonitor, ServerProcess, progress
from app.bench.hold import greeting_for, speech_seconds
from app.edge.emulator import CallRejected, EdgeEmulator, EmulatedCall, Provider
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
CLOCK_SLACK_S = 0.005  # the server's wall clock read against this process's monotonic one, at two moments


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
    answer_s: float | None = None  # from dialling (the webhook) to the agent's first audio at the edge
    probe_sent: list[float] = field(default_factory=list)  # a probe's clip: each frame's send time
    # A probe's barge-ins as the server recorded them (`at` moved to this clock), for the split of its latency.
    bargeins: list[dict[str, float]] = field(default_factory=list)


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
    answer_ms: tuple[float, ...] = ()  # connected calls: dialling to the agent's first audio at the edge
    # Each detected probe's onset -> clear split at the server: (onset -> the deciding frame read by the server,
    # that frame -> the clear written, the clear written -> received at the edge), ms.
    probe_split_ms: tuple[tuple[float, float, float], ...] = ()
    probe_send_late_ms: tuple[float, ...] = ()  # each detected probe: see _send_late
    # The server's own figures (one worker's /stats): over the arrivals (the first `arrival_s` + 1 s) and the run.
    server_arrivals: dict[str, dict[str, float]] = field(default_factory=dict)
    server_run: dict[str, dict[str, float]] = field(default_factory=dict)
    generator_late_ms: tuple[float, float] = (0.0, 0.0)  # the load generator's own loop: p99, max lateness
    server_warnings: tuple[str, ...] = ()  # WARNING and ERROR lines of the server's log

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
    splits: list[tuple[float, float, float]] = []
    send_late: list[float] = []
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
                first_sent = call.probe_sent[0] if call.probe_sent else None
                if split := _split(call.bargeins, onset, heard[0], first_sent):
                    splits.append(split)
                send_late.append(_send_late(call.probe_sent, onset, heard[0]))
        else:
            false_clears += len(call.clears)
        n = underruns_of(call.spans, call.received_samples, greeting_samples, until)
        underruns += n
        calls_with += n > 0
    connected = sum(1 for c in outcomes if c.error is None)
    answers = tuple(c.answer_s * 1000.0 for c in outcomes if c.error is None and c.answer_s is not None)
    return BurstResult(options, connected, failed, probes, detected, tuple(delays), underruns, calls_with,
                       false_clears, greeting_s, late_frames=late, answer_ms=answers,
                       probe_split_ms=tuple(splits), probe_send_late_ms=tuple(send_late))


def _send_late(sent: Sequence[float], onset: float, cleared: float) -> float:
    """How late (ms, against the clip's own 20 ms grid) the load generator sent the latest of the probe's frames
    between its onset and its clear: the part of a probe's latency the generator, not the server, added."""
    if not sent:
        return 0.0
    t = np.asarray(sent) - FRAME_S * np.arange(len(sent))
    late = (t - t.min()) * 1000.0
    window = (np.asarray(sent) >= onset) & (np.asarray(sent) <= cleared)
    return float(late[window].max()) if window.any() else 0.0


def _split(bargeins: Sequence[dict[str, float]], onset: float, cleared: float,
           first_sent: float | None = None) -> tuple[float, float, float] | None:
    """(onset -> deciding frame read, frame -> clear written, written -> at the edge) in ms, from the server's
    record of the barge-in whose clear was written last before the edge had it (within CLOCK_SLACK_S): `at` is
    when it was handled, `settled_ms` + `total_ms` after its deciding frame was read (a provisional stop settles
    later; `app/call/interruption.py`). None when the record has no such barge-in, or when the frame it gives
    comes before the probe's first frame was sent (`first_sent`): a path whose timings do not add up so."""
    best: tuple[float, float] | None = None
    for b in bargeins:
        frame = b["at"] - (b["settled_ms"] + b["total_ms"]) / 1000.0
        written = frame + b["clear_sent_ms"] / 1000.0
        if written <= cleared + CLOCK_SLACK_S and (best is None or written > best[1]):
            best = (frame, written)
    if best is None:
        return None
    frame, written = best
    if first_sent is not None and frame < first_sent - CLOCK_SLACK_S:
        return None
    return ((frame - onset) * 1000.0, (written - frame) * 1000.0, (cleared - written) * 1000.0)


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


async def _fetch_bargeins(server: ServerProcess, call: EmulatedCall, outcome: CallOutcome) -> None:
    """The probe's barge-ins from the server's call record, their wall-clock `at` on the monotonic clock."""
    with contextlib.suppress(Exception):
        record = await server.call_record(call.call_id)
        offset = time.time() - time.monotonic()  # both clocks are system-wide: one offset fits both processes
        outcome.bargeins = [
            {"at": float(b["at"]) - offset, "total_ms": float(b["total_ms"]),
             "clear_sent_ms": float(b["clear_sent_ms"]), "settled_ms": float(b.get("settled_ms") or 0.0)}
            for b in (record or {}).get("bargeins") or []
        ]


async def _one(call: EmulatedCall, outcome: CallOutcome, noise: I16, clip: tuple[Clip, I16] | None,
               options: BurstOptions) -> None:
    try:
        dialled = time.monotonic()
        try:
            await asyncio.wait_for(call.connect(), CONNECT_TIMEOUT_S)
        except ConnectErrors as exc:
            # The stage and status (a refused upgrade is a 403 from the server's caps), not the body or the URL.
            where = " ".join(str(a) for a in exc.args[:2]) if isinstance(exc, CallRejected) else ""
            outcome.error = f"connect: {type(exc).__name__}" + (f" ({where})" if where else "")
            return
        with contextlib.suppress(TimeoutError):
            await call.wait_until(lambda: call.played_samples >= int(TALKING_S * SAMPLE_RATE) or call.closed,
                                  CONNECT_TIMEOUT_S)
        if call.closed or call.played_samples < int(TALKING_S * SAMPLE_RATE):
            outcome.error = "the server ended the call" if call.closed else "the agent never started talking"
            return
        if call.first_audio_at is not None:
            outcome.answer_s = call.first_audio_at - dialled
        times: list[float] = []
        if clip is None:
            times += await _quiet(call, noise, options.hold_s)
        else:
            spec, audio = clip
            times += await _quiet(call, noise, options.probe_at_s)
            sent = await call.send_audio(audio)
            times += sent
            outcome.probe_sent = sent
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


async def run_burst(options: BurstOptions, speech: Sequence[tuple[Clip, I16]],
                    keep_log: Path | None = None) -> BurstResult:
    greeting = greeting_for(options.greeting_s)
    greeting_s = await speech_seconds(greeting)
    noise = white_noise(1.0, -60.0, seed=7)
    async with ScriptedLlmServer(["Sure, one moment."], token_delay_s=0.04) as llm:
        server = ServerProcess({"LLM_BASE_URL": llm.base_url, "AGENT_GREETING": greeting,
                                "WORKERS": str(options.workers)})
        await server.start()
        progress(f"burst: server pid {server.pid}")
        try:
            async with EdgeEmulator(server.url, keep_audio=False) as edge:
                outcomes = [CallOutcome(options.is_probe(i)) for i in range(options.calls)]
                calls = [edge.call(options.providers[i % len(options.providers)]) for i in range(options.calls)]
                interval = options.arrival_s / max(1, options.calls)
                meter = CpuMeter()
                await server.reset_stats()
                cpu0 = float((await server.stats())["cpu_s"])
                monitor = LoopMonitor()
                figures: dict[str, dict[str, dict[str, float]]] = {}

                async def arrivals_stats() -> None:
                    await asyncio.sleep(options.arrival_s + 1.0)
                    with contextlib.suppress(Exception):
                        figures["arrivals"] = _server_figures(await server.stats(), cpu0)

                async def start(i: int) -> None:
                    await asyncio.sleep(i * interval)
                    probe = speech[(i // max(1, options.probe_every)) % len(speech)] if outcomes[i].probe else None
                    await _one(calls[i], outcomes[i], noise, probe, options)

                watcher = asyncio.create_task(arrivals_stats())
                async with monitor:
                    await asyncio.gather(*(start(i) for i in range(options.calls)))
                measured = meter.read()
                for call, outcome in zip(calls, outcomes, strict=True):
                    if outcome.probe and outcome.error is None:
                        await _fetch_bargeins(server, call, outcome)
                await watcher
                with contextlib.suppress(Exception):
                    figures["run"] = _server_figures(await server.stats(), cpu0)
        finally:
            await server.stop()
            log = server.log_lines()
            warnings = [line for line in log if " WARNING " in line or " ERROR " in line]
            if keep_log is not None:
                await asyncio.to_thread(keep_log.write_text, "\n".join(log) + "\n", "utf-8")
            server.cleanup()
    result = summarize(options, outcomes, greeting_s)
    late = monitor.late_ms
    return BurstResult(**{**result.__dict__, "wall_s": measured["wall_s"], "server_warnings": tuple(warnings),
                          "machine_busy": measured["machine_busy"],
                          "server_arrivals": figures.get("arrivals", {}), "server_run": figures.get("run", {}),
                          "generator_late_ms": (float(np.percentile(late, 99)) if late else 0.0,
                                                max(late, default=0.0))})


def _q(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _server_figures(stats: dict[str, Any], cpu0: float) -> dict[str, dict[str, float]]:
    keys = ("frame_lag_ms", "loop_stall_ms", "loop_held_ms", "tts_cache")
    figures = {k: {n: float(v) for n, v in stats[k].items()} for k in keys if isinstance(stats.get(k), dict)}
    figures["cpu"] = {"s": float(stats["cpu_s"]) - cpu0, "rss_mb": float(stats["rss_bytes"]) / 1e6}
    return figures


def _cache(figures: dict[str, dict[str, float]]) -> str:
    c = figures.get("tts_cache")
    if not c:
        return "- (not cached)"
    return (f"{c['misses']:.0f} syntheses, {c['shared']:.0f} joined one running, {c['hits']:.0f} hits "
            f"({c['entries']:.0f} entries, {c['bytes'] / 1e6:.1f} MB)")


def _lags(figures: dict[str, dict[str, float]]) -> str:
    def one(name: str) -> str:
        d = figures.get(name, {})
        return "/".join(f"{d.get(q, float('nan')):.0f}" for q in ("p50", "p99", "max"))
    cpu = figures.get("cpu", {})
    return (f"CPU {cpu.get('s', float('nan')):.2f} s, RSS {cpu.get('rss_mb', float('nan')):.0f} MB; "
            f"frame lag {one('frame_lag_ms')}, "
            f"loop stalls {one('loop_stall_ms')}, held {one('loop_held_ms')} ms (p50/p99/max)")


def render(result: BurstResult) -> str:
    o = result.options
    failed = ", ".join(f"{k}: {v}" for k, v in sorted(result.failed.items())) or "none"
    lines = [
        f"burst: {o.calls} calls arriving within {o.arrival_s:g} s on {o.workers} worker(s), agent talking "
        f"(a {result.greeting_s:.0f} s greeting each), quiet callers, every {o.probe_every}th speaking "
        f"{o.probe_at_s:g} s in",
        f"  connected                    {result.connected} of {o.calls} (failed: {failed})",
        f"  dialling -> agent heard      p50 {_q(result.answer_ms, 50):.0f} ms  p95 {_q(result.answer_ms, 95):.0f} ms  "
        f"max {max(result.answer_ms, default=float('nan')):.0f} ms",
        f"  probes cleared               {result.detected} of {result.probes}",
        f"  onset -> clear (at the edge)  p50 {result.pct(50):.0f} ms  p95 {result.pct(95):.0f} ms  "
        f"max {max(result.onset_to_clear_ms, default=float('nan')):.0f} ms",
        f"  probes, each (ms)            {' '.join(f'{ms:.0f}' for ms in result.onset_to_clear_ms) or '-'}",
        f"  probes split ({len(result.probe_split_ms)} of {result.detected})   "
        + (" ".join(f"{a:.0f}+{b:.0f}+{c:.0f}" for a, b, c in result.probe_split_ms) or "-")
        + "  (onset -> deciding frame read + -> clear written + -> at the edge)",
        f"  probes' frames sent late     {' '.join(f'{ms:.0f}' for ms in result.probe_send_late_ms) or '-'} ms "
        "(the load generator, latest frame between onset and clear)",
        f"  underruns                    {result.underruns} (on {result.calls_with_underruns} calls)",
        f"  false clears                 {result.false_clears}",
        f"  caller frames sent > 5 ms late  {result.late_frames}; machine busy {result.machine_busy * 100:.0f}% "
        f"of the cores over {result.wall_s:.0f} s (load generator included)",
        f"  server, arrivals ({o.arrival_s + 1:g} s)    {_lags(result.server_arrivals)}",
        f"  server, whole run            {_lags(result.server_run)}",
        f"  TTS cache over the run       {_cache(result.server_run)}",
        f"  load generator's loop late   p99 {result.generator_late_ms[0]:.0f} ms, max "
        f"{result.generator_late_ms[1]:.0f} ms",
    ]
    shown = [w for w in result.server_warnings if "INSECURE DEVELOPMENT MODE" not in w]
    lines += [f"  server log: {w[:200]}" for w in shown[:5]]
    if len(shown) > 5:
        lines.append(f"  server log: ... {len(shown) - 5} more WARNING/ERROR lines")
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
    p.add_argument("--keep-log", type=Path, default=None, metavar="PATH",
                   help="keep the server's log (at WARNING) as PATH, the call count added to its name")
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
        keep = None if args.keep_log is None else args.keep_log.with_name(f"{args.keep_log.stem}-{calls}"
                                                                          f"{args.keep_log.suffix}")
        result = asyncio.run(run_burst(options, speech, keep))
        print(render(result), flush=True)
        print()
        ok = ok and all(result.passed.values())
    return 0 if ok else 1
