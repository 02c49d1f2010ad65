"""Fuzz mode of `bargein bench`: honest calls beside connections that send hostile frames (app.edge.fuzz).

Three phases against one server process, with /healthz polled every 20 ms throughout:

a. quiet: N honest calls (corpus speech clips over the agent's LLM reply, as in the accuracy mode; two at a
   time, providers alternating), onset->clear measured at the edge emulator;
b. fuzzed: the same calls, cycled for as long as `frames` fuzz frames take to send: they go out on
   `connections` sockets in a process of their own (app.edge.hostile), as fast as the server takes
   them, each socket reconnecting when the server closes it. Every honest call, once it is talking, also gets
   a few frames aimed at it from another socket (a `start` with its call id, media and marks for its stream).
   A call counts as fuzzed if the fuzz was still running when it ended;
c. big frames: for each provider, one honest call while one connection sends a 1 MB media frame and twenty
   100 KB ones (silence with a loud tail), starting as the agent starts talking.

Crashes: the server process died, /healthz failed or answered other than 200, or any 5xx. The event-loop
stall is the server's own (/stats `loop_stall_ms`, reset at the start of each phase); RSS is compared
between the end of the quiet run and the end of the fuzz, once the fuzz sockets are closed and a short settle
has passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import numpy as np
import psutil

from app.audio import pcm16_to_ulaw
from app.background import BackgroundTask
from app.bench.accuracy import I16, AccuracyOptions, AccuracyRunner, ClipRun
from app.bench.common import MB, ServerProcess, fmt, pct, progress, table
from app.edge import wire
from app.edge.emulator import EdgeEmulator, EmulatedCall, Provider
from app.edge.fuzz import WS_MAX_MESSAGE, Hostile, Target, aimed, media_of_size
from app.edge.hostile import (
    PROVIDERS,
    FuzzTally,
    HealthPoller,
    connection_specs,
    hammer_process,
    hostile_connection,
    invalid_frame_counts,
)
from app.offline.corpus import Clip

BIG_FRAME = 1024 * 1024
MEDIUM_FRAME = 100 * 1024
MEDIUM_FRAMES = 20


@dataclass(frozen=True)
class FuzzOptions:
    frames: int = 100_000
    connections: int = 6
    calls: int = 10  # honest calls in the quiet run (and at least this many clips to cycle in the fuzzed one)
    seed: int = 1
    max_message: int = WS_MAX_MESSAGE
    aimed_frames: int = 12  # frames aimed at each honest call in the fuzzed phase
    settle_s: float = 3.0
    medium_interval_s: float = 0.075
    health_interval_s: float = 0.02
    providers: tuple[Provider, ...] = PROVIDERS

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FuzzOptions:
        cap = os.environ.get("WS_MAX_MESSAGE_BYTES") or os.environ.get("ws_max_message_bytes")
        return cls(
            frames=args.fuzz_frames,
            connections=args.fuzz_connections,
            calls=args.fuzz_calls,
            seed=args.fuzz_seed,
            max_message=int(cap) if cap else WS_MAX_MESSAGE,
            settle_s=1.0 if args.quick else 3.0,
            providers=tuple(args.providers),
        )


# --- the benchmark -----------------------------------------------------------------------------------------


@dataclass
class FuzzPhase:
    name: str
    runs: list[ClipRun]
    health: dict[str, Any]
    loop_stall_ms: dict[str, float]
    wall_s: float
    loop_held_ms: dict[str, float] = field(default_factory=dict)
    big_frames: dict[str, Any] = field(default_factory=dict)

    def onset_to_clear(self) -> list[float]:
        return [r.onset_to_clear_ms for r in self.runs if r.error is None and r.onset_to_clear_ms is not None]


@dataclass
class FuzzResult:
    options: dict[str, Any]
    quiet: FuzzPhase
    fuzzed: FuzzPhase
    big: FuzzPhase
    tally: FuzzTally
    aimed: FuzzTally
    honest_checked: int
    honest_intact: int
    honest_problems: list[str]
    rss_before: int
    rss_after: int
    server_alive: bool
    server_invalid: dict[str, float] = field(default_factory=dict)  # /metrics invalid frames in the fuzzed phase
    log: dict[str, int] = field(default_factory=dict)
    log_samples: list[str] = field(default_factory=list)

    @property
    def crashes(self) -> int:
        """Server death, failed or non-200 /healthz, 5xx anywhere."""
        fivexx = sum(v for k, v in self.tally.refusals.items() if k.startswith("HTTP 5"))
        fivexx += sum(v for k, v in self.aimed.refusals.items() if k.startswith("HTTP 5"))
        health = sum(int(p.health["failed"]) for p in (self.quiet, self.fuzzed, self.big))
        return health + fivexx + (0 if self.server_alive else 1)


def _alive(server: ServerProcess) -> bool:
    try:
        return bool(psutil.Process(server.pid).status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, AssertionError):
        return False


def _loud_tail(audio: dict[str, I16]) -> bytes:
    """Half a second of corpus speech as mu-law: the loud end of the big frames."""
    pcm = max(audio.values(), key=lambda x: float(np.abs(x.astype(np.int32)).mean()))
    start = int(np.argmax(np.abs(pcm) > 4000))
    return pcm16_to_ulaw(pcm[start : start + 4000])


class _Aimer(BackgroundTask):
    """Watches the emulator's calls; once one is talking, sends it `n` frames from another socket."""

    def __init__(self, base_url: str, edge: EdgeEmulator, n: int, seed: int, max_message: int) -> None:
        self.base_url, self.edge, self.n, self.seed, self.max_message = base_url, edge, n, seed, max_message
        self.tally = FuzzTally()
        self.targets: list[tuple[str, str, Provider]] = []
        self._seen: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            for call in list(self.edge.calls):
                if call.call_id not in self._seen and call.played_samples > 0 and not call.closed:
                    self._seen.add(call.call_id)
                    self.targets.append((call.call_id, call.stream_id, call.provider))
                    frames = aimed(call.provider, self.seed + len(self._seen), self.n,
                                   Target(call.call_id, call.stream_id), max_message=self.max_message)
                    self._tasks.append(asyncio.create_task(
                        hostile_connection(self.base_url, call.provider, frames, self.tally, interval_s=0.01)))
            await asyncio.sleep(0.02)


class _BigSender:
    """Once an emulated call is talking, one hostile connection starts a stream of its own and sends a 1 MB
    media frame, then twenty of 100 KB, `interval_s` apart (on a new socket whenever the server closes one)."""

    def __init__(self, base_url: str, edge: EdgeEmulator, provider: Provider, tail: bytes, interval_s: float) -> None:
        self.base_url, self.edge, self.provider, self.tail, self.interval_s = base_url, edge, provider, tail, interval_s
        self.tally = FuzzTally()
        self.started = False

    async def run(self, wait_s: float = 30.0) -> None:
        if not await _first_talking(self.edge, wait_s):
            return
        self.started = True
        leg = EmulatedCall(self.provider, self.base_url)  # only for its ids and the start message
        start = wire.start_message(leg)
        start["sequenceNumber"] = "1" if self.provider == "twilio" else 1
        frames = [Hostile("opening", json.dumps(start, separators=(",", ":")))]
        if self.provider == "twilio":
            frames.insert(0, Hostile("opening", json.dumps(wire.twilio_connected(), separators=(",", ":"))))
        for size in [BIG_FRAME] + [MEDIUM_FRAME] * MEDIUM_FRAMES:
            frames.append(Hostile("big_media", media_of_size(self.provider, leg.stream_id, size, self.tail), True))
        await hostile_connection(self.base_url, self.provider, frames, self.tally, interval_s=self.interval_s)


class _RecordingEdge(EdgeEmulator):
    """An edge emulator that remembers the last call each task made (the accuracy runner makes its own)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_call: dict[asyncio.Task[Any] | None, EmulatedCall] = {}

    def call(self, provider: Provider, **overrides: Any) -> EmulatedCall:
        made = super().call(provider, **overrides)
        self.last_call[asyncio.current_task()] = made
        return made


@dataclass
class _HonestRun:
    run: ClipRun
    call: EmulatedCall | None
    began: float
    ended: float

    def within(self, t0: float, t1: float) -> bool:
        """Its barge-in happened while hostile frames flowed: from 100 ms before the speech onset to the clear
        (a call that got no clear: any part of it)."""
        clears = self.call.clears[self.run.pre_clears :] if self.call is not None else []
        if clears and self.run.onset_to_clear_ms is not None:
            onset = clears[0] - self.run.onset_to_clear_ms / 1000.0
            return onset - 0.1 >= t0 and clears[0] <= t1
        return self.began <= t1 and self.ended >= t0


async def _honest_calls(
    runner: AccuracyRunner,
    edge: _RecordingEdge,
    clips: Sequence[Clip],
    providers: Sequence[Provider],
    *,
    until: asyncio.Future[Any] | None,
    workers: int = 2,
) -> list[_HonestRun]:
    """The clips as calls, `workers` at a time, providers alternating: once each, or cycled until `until`."""
    runs: list[_HonestRun] = []
    next_index = 0

    async def worker(w: int) -> None:
        nonlocal next_index
        await asyncio.sleep(w * 0.25)
        while True:
            i = next_index
            if (i >= len(clips)) if until is None else (until.done() or i >= 500):
                return
            next_index += 1
            began = time.monotonic()
            run = await runner.run_clip(providers[i % len(providers)], clips[i % len(clips)])
            call = edge.last_call.pop(asyncio.current_task(), None)
            runs.append(_HonestRun(run, call, began, time.monotonic()))

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return runs


async def _first_talking(edge: EdgeEmulator, timeout_s: float) -> bool:
    """Wait until one of the emulator's calls has heard agent audio; False if none did in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        if any(c.played_samples > 0 for c in edge.calls):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)


async def _phase_stats(server: ServerProcess) -> tuple[dict[str, float], dict[str, float]]:
    """The server's loop stalls since the phase began: (lateness, the part of it spent on the CPU)."""
    stats = await server.stats()
    return tuple(  # type: ignore[return-value]
        {k: float(v) for k, v in (stats.get(key) or {}).items()} for key in ("loop_stall_ms", "loop_held_ms")
    )


async def run_fuzz(
    server: ServerProcess,
    clips: Sequence[Clip],
    audio: dict[str, I16],
    prime: I16,
    options: FuzzOptions,
) -> FuzzResult:
    auth = server.auth
    tokens: dict[str, Any] = {} if auth is None else {
        "twilio_auth_token": auth.twilio_token, "plivo_auth_token": auth.plivo_token}
    edge = _RecordingEdge(server.url, keep_audio=False, **tokens)
    async with edge:
        return await _run_phases(server, edge, clips, audio, prime, options)


async def _run_phases(
    server: ServerProcess,
    edge: _RecordingEdge,
    clips: Sequence[Clip],
    audio: dict[str, I16],
    prime: I16,
    options: FuzzOptions,
) -> FuzzResult:
    runner = AccuracyRunner(server, edge, audio, prime, AccuracyOptions())
    providers = options.providers

    # a. quiet
    progress(f"  quiet: {len(clips)} honest calls")
    await server.reset_stats()
    t0 = time.monotonic()
    async with HealthPoller(server.url, options.health_interval_s) as health:
        honest = await _honest_calls(runner, edge, clips, providers, until=None)
    stall, held = await _phase_stats(server)
    quiet = FuzzPhase("quiet", [h.run for h in honest], health.summary(), stall, time.monotonic() - t0,
                      loop_held_ms=held)
    await asyncio.sleep(options.settle_s)
    rss_before = int((await server.stats())["rss_bytes"])

    # b. fuzzed
    specs = connection_specs(options.frames, options.connections, options.seed)
    progress(f"  fuzzed: {options.frames} frames on {len(specs)} connections, honest calls cycling beside them")
    await server.reset_stats()
    invalid_before = await _invalid_frames(server)
    t0 = time.monotonic()

    async def launch() -> FuzzTally:
        await _first_talking(edge, 30.0)  # so the first honest calls' barge-ins already meet the fuzz
        return await hammer_process(server.url, options.frames, options.connections, options.seed,
                                    options.max_message)

    async with HealthPoller(server.url, options.health_interval_s) as health:
        fuzz = asyncio.ensure_future(launch())
        async with _Aimer(server.url, edge, options.aimed_frames, options.seed * 7919, options.max_message) as aimer:
            honest = await _honest_calls(runner, edge, clips, providers, until=fuzz)
        tally = await fuzz
    runs = [h.run for h in honest if h.within(tally.started_at, tally.ended_at)]
    invalid_after = await _invalid_frames(server)
    server_invalid = {k: v - invalid_before.get(k, 0.0) for k, v in invalid_after.items()}
    stall, held = await _phase_stats(server)
    fuzzed = FuzzPhase("fuzzed", runs, health.summary(), stall, time.monotonic() - t0, loop_held_ms=held)
    progress(f"    {tally.frames} frames in {tally.wall_s:.1f} s; {len(runs)} of {len(honest)} honest calls"
             " barged in while they flowed")
    checked, intact, problems = await _check_records(server, aimer.targets)
    await asyncio.sleep(options.settle_s)
    rss_after = int((await server.stats())["rss_bytes"])

    # c. big frames
    progress("  big frames: a 1 MB and twenty 100 KB media frames beside an honest call, per provider")
    tail = _loud_tail(audio)
    await server.reset_stats()
    t0 = time.monotonic()
    big_runs: list[ClipRun] = []
    big_tally = FuzzTally()
    async with HealthPoller(server.url, options.health_interval_s) as health:
        for i, provider in enumerate(providers):
            sender = _BigSender(server.url, edge, provider, tail, options.medium_interval_s)
            task = asyncio.create_task(sender.run())
            big_runs.append(await runner.run_clip(provider, clips[i % len(clips)]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(task, 60)
            big_tally.merge(sender.tally)
    stall, held = await _phase_stats(server)
    big = FuzzPhase("big", big_runs, health.summary(), stall, time.monotonic() - t0,
                    big_frames=asdict(big_tally), loop_held_ms=held)

    return FuzzResult(
        options=asdict(options),
        quiet=quiet,
        fuzzed=fuzzed,
        big=big,
        tally=tally,
        aimed=aimer.tally,
        honest_checked=checked,
        honest_intact=intact,
        honest_problems=problems,
        rss_before=rss_before,
        rss_after=rss_after,
        server_alive=_alive(server),
        server_invalid=server_invalid,
        log=_log_findings(server.log_lines()),
        log_samples=[repr(line[:200])[1:-1] for line in server.log_lines()
                     if _level(line) in ("ERROR", "CRITICAL") or line.startswith("Traceback")][:5],
    )


async def _invalid_frames(server: ServerProcess) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {server.auth.admin_token}"} if server.auth else {}
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=10, headers=headers) as client:
        response = await client.get("/metrics")
        response.raise_for_status()
        return invalid_frame_counts(response.text)


async def _check_records(server: ServerProcess, targets: list[tuple[str, str, Provider]]) -> tuple[int, int, list[str]]:
    """Each honest call that frames were aimed at: its record names only its own stream and ended cleanly."""
    problems: list[str] = []
    intact = 0
    for call_id, stream_id, provider in targets:
        record = await server.call_record(call_id)
        if record is None:
            problems.append(f"{provider} call: no record")
            continue
        bad = []
        if record.get("stream_ids") != [stream_id]:
            bad.append(f"streams {len(record.get('stream_ids') or [])}")
        if record.get("provider") != provider:
            bad.append(f"provider {record.get('provider')!r}")
        if record.get("invalid_frames"):
            bad.append(f"{record['invalid_frames']} invalid frames charged to it")
        if record.get("active") or record.get("end_reason") not in ("stop", "socket closed"):
            bad.append(f"end {record.get('end_reason')!r}")
        if bad:
            problems.append(f"{provider} call: " + ", ".join(bad))
        else:
            intact += 1
    return len(targets), intact, problems


def _level(line: str) -> str:
    """The level of a server log line: "2026-01-01 00:00:00,000 LEVEL name: ..." or uvicorn's "LEVEL:  ..."."""
    if line[:4].isdigit():
        parts = line.split(" ", 3)
        return parts[2] if len(parts) > 2 else ""
    return line.partition(":")[0]


def _log_findings(lines: Iterable[str]) -> dict[str, int]:
    """What the hostile frames did to the server's log: errors, tracebacks, lines not written by the logger
    (a newline in a message forges a line), escape sequences, and failed writes."""
    found = {"lines": 0, "warnings": 0, "errors": 0, "tracebacks": 0, "logging_errors": 0, "forged_lines": 0,
             "escape_chars": 0}
    in_traceback = False
    for line in lines:
        found["lines"] += 1
        if "\x1b" in line or "\x9b" in line:
            found["escape_chars"] += 1
        if line.startswith("--- Logging error ---"):
            found["logging_errors"] += 1
        if line.startswith("Traceback"):
            found["tracebacks"] += 1
            in_traceback = True
            continue
        stamped = len(line) > 20 and line[:4].isdigit() and line[4] == "-" and line[10] == " "
        if stamped or line.startswith(("INFO:", "WARNING:", "ERROR:", "CRITICAL:")):
            in_traceback = False
            level = _level(line)
            if level in ("ERROR", "CRITICAL"):
                found["errors"] += 1
            elif level == "WARNING":
                found["warnings"] += 1
        elif not in_traceback and not line.startswith(("--- Logging error ---", "Call stack:", "Message:",
                                                       "Arguments:", "  ")):
            found["forged_lines"] += 1
    return found


# --- the report --------------------------------------------------------------------------------------------


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def _p(values: list[float], q: float) -> float | None:
    return pct(values, q)


def summary(r: FuzzResult) -> dict[str, Any]:
    quiet, fuzzed = r.quiet.onset_to_clear(), r.fuzzed.onset_to_clear()
    q95, f95 = _p(quiet, 95), _p(fuzzed, 95)
    big = r.big.onset_to_clear()
    growth = (r.rss_after - r.rss_before) / r.rss_before if r.rss_before else None
    return {
        "frames": r.tally.frames,
        "frames_requested": r.options["frames"],
        "crashes": r.crashes,
        "quiet_p50": _p(quiet, 50), "quiet_p95": q95, "quiet_n": len(quiet),
        "fuzzed_p50": _p(fuzzed, 50), "fuzzed_p95": f95, "fuzzed_n": len(fuzzed),
        "p95_delta": None if q95 is None or f95 is None else f95 - q95,
        "stall_max_ms": r.fuzzed.loop_stall_ms.get("max"),
        "held_max_ms": r.fuzzed.loop_held_ms.get("max"),
        "rss_growth": growth,
        "big_health_max_ms": r.big.health["max_ms"],
        "big_health_failed": r.big.health["failed"],
        "big_onset_to_clear_max": max(big, default=None),
        "big_calls": len(r.big.runs),
        "big_detected": len(big),
    }


def render(r: FuzzResult) -> list[str]:
    s = summary(r)
    t = r.tally
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(t.kinds.items(), key=lambda kv: -kv[1]))
    rows = [
        ["fuzz frames sent", f"{t.frames:,} of {r.options['frames']:,} ({t.bytes / MB:.0f} MB, {t.above_cap} above "
                             f"the {r.options['max_message'] // 1024} KB cap) in {t.wall_s:.1f} s"
                             f" = {t.frames / max(t.wall_s, 1e-9):,.0f} a second"],
        ["  by kind", kinds],
        ["fuzz connections", f"{t.connections} accepted, {t.refused} refused {t.refusals or ''}, "
                             f"{t.closed_by_server} closed by the server {t.close_codes or ''}"],
        ["  server counted invalid (/metrics)", f"{sum(r.server_invalid.values()):,.0f} "
                                               + str({k: int(v) for k, v in sorted(r.server_invalid.items())})],
        ["  a close was due and did not come", f"{sum(t.unclosed.values())} {t.unclosed or ''}"],
        ["  frames lost / server replies", f"{t.lost} / {t.replies}"],
        ["aimed at honest calls", f"{r.aimed.frames} frames on {r.aimed.connections} connections "
                                  f"({r.aimed.closed_by_server} closed by the server {r.aimed.close_codes or ''})"],
        ["honest records intact", f"{r.honest_intact} of {r.honest_checked}"
                                  + (f": {'; '.join(r.honest_problems[:4])}" if r.honest_problems else "")],
        ["crashes", f"{r.crashes} (server {'alive' if r.server_alive else 'DEAD'}; healthz failed "
                    f"{r.quiet.health['failed']} / {r.fuzzed.health['failed']} / {r.big.health['failed']} "
                    f"in quiet / fuzzed / big)"],
        ["server log", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in r.log.items())],
        ["RSS before / after", f"{r.rss_before / MB:.0f} MB / {r.rss_after / MB:.0f} MB"
                               + (f" ({100 * s['rss_growth']:+.1f}%)" if s["rss_growth"] is not None else "")],
    ]
    phases = [
        [
            p.name,
            str(len(p.runs)),
            str(sum(x.error is not None for x in p.runs)),
            f"{len(p.onset_to_clear())}",
            fmt(_p(p.onset_to_clear(), 50), 0),
            fmt(_p(p.onset_to_clear(), 95), 0),
            fmt(max(p.onset_to_clear(), default=None), 0),
            fmt(p.loop_stall_ms.get("p99"), 1),
            fmt(p.loop_stall_ms.get("max"), 1),
            fmt(p.loop_held_ms.get("max"), 1),
            f"{p.health['polls']}",
            fmt(p.health["p99_ms"], 1),
            fmt(p.health["max_ms"], 1),
            f"{p.wall_s:.0f}",
        ]
        for p in (r.quiet, r.fuzzed, r.big)
    ]
    errors = sorted({x.error for p in (r.quiet, r.fuzzed, r.big) for x in p.runs if x.error})
    out = [
        "",
        "Fuzz: hostile frames beside live calls (app.edge.fuzz; honest calls = corpus speech over an LLM reply)",
        table(["figure", "value"], rows, left=2),
        "",
        table(["phase", "honest calls", "failed", "cleared", "onset->clear p50", "p95", "max",
               "loop stall p99 ms", "max", "on CPU max", "healthz polls", "p99 ms", "max", "wall s"], phases),
        "  loop stall: how late the server's event loop woke a 10 ms timer (/stats); on CPU: the part of that"
        " lateness the loop thread spent running (the rest it waited for a core); healthz: GET /healthz"
        f" every {1000 * r.options['health_interval_s']:.0f} ms, latency at this process",
    ]
    if errors:
        out.append("  honest call errors: " + "; ".join(errors[:4]))
    if r.log_samples:
        out += ["  server log errors (first 5):", *(f"    {line}" for line in r.log_samples)]
    bf = r.big.big_frames
    if bf:
        out.append(f"  big frames: {bf['frames']} sent ({bf['bytes'] / MB:.1f} MB) on {bf['connections']} connections, "
                   f"{bf['closed_by_server']} closed by the server {bf['close_codes'] or ''}")
    return out


def targets(r: FuzzResult) -> list[list[str]]:
    s = summary(r)
    delta, stall, growth = s["p95_delta"], s["stall_max_ms"], s["rss_growth"]
    big_max = s["big_onset_to_clear_max"]
    return [
        [f"{s['frames']:,} fuzzed and hostile frames beside live calls: 0 crashes", f"{s['crashes']} crashes",
         _verdict(s["crashes"] == 0 and s["frames"] >= s["frames_requested"])],
        ["  honest onset->clear p95 within 50 ms of a quiet run",
         f"quiet {fmt(s['quiet_p95'], 0)} ms (n={s['quiet_n']}), fuzzed {fmt(s['fuzzed_p95'], 0)} ms "
         f"(n={s['fuzzed_n']}): {fmt(delta, 0)} ms",
         _verdict(None if delta is None else delta <= 50.0 and s["fuzzed_n"] > 0)],
        ["  honest calls beside hostile frames: records intact", f"{r.honest_intact} of {r.honest_checked}",
         _verdict(None if not r.honest_checked else r.honest_intact == r.honest_checked)],
        ["  no event-loop stall over 20 ms (worst)",
         fmt(stall, 1, " ms") + f" (of it on the CPU: {fmt(s['held_max_ms'], 1, ' ms')})",
         _verdict(None if stall is None else stall <= 20.0)],
        ["  RSS back within 10% after the run",
         f"{r.rss_before / MB:.0f} -> {r.rss_after / MB:.0f} MB"
         + ("" if growth is None else f" ({100 * growth:+.1f}%)"),
         _verdict(None if growth is None else growth <= 0.10)],
        ["1 MB + twenty 100 KB frames: /healthz within 200 ms throughout",
         f"worst {s['big_health_max_ms']:.0f} ms, {s['big_health_failed']} failed",
         _verdict(s["big_health_max_ms"] <= 200.0 and s["big_health_failed"] == 0)],
        ["  honest clear within 400 ms of speech onset",
         f"worst {fmt(big_max, 0)} ms ({s['big_detected']} of {s['big_calls']} cleared)",
         _verdict(None if not s["big_calls"] else big_max is not None and big_max <= 400.0
                  and s["big_detected"] == s["big_calls"])],
    ]
