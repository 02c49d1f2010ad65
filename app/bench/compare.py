"""`bargein bench --compare OTHER`: the hold mode on two servers at once, this code and the code in OTHER.

Server CPU per call-second moves by up to a quarter between runs of the same code on a shared machine, far
more than most changes to the hot path are worth. Two servers held side by side, under one load generator,
see the same machine at the same moment, so the ratio of their figures is what a change is judged by. Each
round holds `--hold-calls` calls on each server; the next round swaps which server starts first, so neither
side gets a systematic head start. Both servers run in this Python environment: OTHER is a checkout (or a
`git worktree`) whose `app/` and `providers/` are put first on the server's PYTHONPATH.

After each hold, both servers also take `--compare-bargeins` barge-in calls at once (corpus speech over the
agent's greeting, one call at a time per server), and the figure the hot path is judged by, decision -> clear
written (`clear_sent_ms`, from each server's call records), is compared at p50 and p99 over all rounds.

`--this-env KEY=VALUE` (repeatable) sets a variable for this side's server only: with `--compare .` it A/Bs a
setting on the same code, e.g. `--this-env RECORD_DIR=/tmp/rec` for the recorder's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.bench.accuracy import I16, AccuracyOptions, AccuracyRunner, ClipRun
from app.bench.common import ServerProcess, progress
from app.bench.hold import HoldOptions, HoldResult, run_hold, server_env
from app.edge.emulator import EdgeEmulator
from app.edge.llm_server import ScriptedLlmServer
from app.offline.corpus import Clip, load_clip, read_manifest


@dataclass(frozen=True)
class Side:
    label: str  # "this" or "other"
    root: Path  # the folder holding app/ and providers/
    env: tuple[tuple[str, str], ...] = ()  # this side's own server variables (--this-env)

    def describe(self) -> str:
        try:
            out = subprocess.run(
                ["git", "-C", str(self.root), "describe", "--always", "--dirty"],
                capture_output=True, text=True, timeout=10, check=True,
            )
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "not a git checkout"


def this_root() -> Path:
    import app

    return Path(app.__file__).resolve().parent.parent


def check_root(path: str) -> Path:
    root = Path(path).resolve()
    if not (root / "app" / "main.py").is_file() or not (root / "providers").is_dir():
        raise SystemExit(f"--compare {path}: no app/main.py and providers/ there (give a checkout's root)")
    return root


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--this-env", action="append", default=[], metavar="KEY=VALUE",
                   help="--compare: a variable for this side's server only (repeatable), e.g. RECORD_DIR=/tmp/r "
                        "with --compare . to A/B a setting on the same code")
    p.add_argument("--compare-bargeins", type=int, default=12, metavar="N",
                   help="--compare: barge-in calls per side per round after the hold, for clear-sent p50/p99 "
                        "(default 12; 0 skips them)")


def parse_env(items: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--this-env {item!r}: expected KEY=VALUE")
        pairs.append((key, value))
    return tuple(pairs)


@dataclass
class RoundResult:
    hold: HoldResult
    bargeins: list[ClipRun]

    @property
    def clear_sent_ms(self) -> list[float]:
        return [float(e["clear_sent_ms"]) for run in self.bargeins for e in run.events if "clear_sent_ms" in e]


async def _bargeins(
    server: ServerProcess, edge: EdgeEmulator, clips: list[Clip], audio: dict[str, I16]
) -> list[ClipRun]:
    if not clips:
        return []
    runner = AccuracyRunner(server, edge, audio, None, AccuracyOptions(agent_turn="greeting"))
    phase = await runner.phase("twilio", 1, clips)
    return phase.runs


async def _round(
    sides: list[Side], clips: list[Clip], options: HoldOptions, speech: list[Clip], audio: dict[str, I16]
) -> dict[str, RoundResult]:
    async with ScriptedLlmServer(["Hello."], token_delay_s=0.04) as llm:
        servers = [
            ServerProcess({"LLM_BASE_URL": llm.base_url, "PYTHONPATH": str(side.root), **server_env(options),
                           **dict(side.env)})
            for side in sides
        ]
        try:
            for server in servers:
                await server.start()
            async with (
                EdgeEmulator(servers[0].url, keep_audio=False) as edge0,
                EdgeEmulator(servers[1].url, keep_audio=False) as edge1,
            ):
                holds = await asyncio.gather(
                    run_hold(servers[0], edge0, clips, options), run_hold(servers[1], edge1, clips, options)
                )
                bargeins = await asyncio.gather(
                    _bargeins(servers[0], edge0, speech, audio), _bargeins(servers[1], edge1, speech, audio)
                )
        finally:
            for server in servers:
                await server.stop()
                server.cleanup()
    return {
        side.label: RoundResult(hold, runs) for side, hold, runs in zip(sides, holds, bargeins, strict=True)
    }


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _line(label: str, r: HoldResult) -> str:
    batches = r.stats_after.get("silero_batches", {})
    cpu = f"{r.cpu_ms_per_call_s:.2f}" if r.cpu_ms_per_call_s is not None else "-"
    return (
        f"  {label:<6} {r.calls_up:>4}/{r.calls_requested:<4} {cpu:>9} ms"
        f"  {r.frame_lag_ms.get('p99_9', float('nan')):>6.2f} ms  {float(batches.get('mean_batch', 0.0)):>5.2f}"
    )


def run_compare(args: argparse.Namespace) -> int:
    this = Side("this", this_root(), parse_env(getattr(args, "this_env", [])))
    sides = [this, Side("other", check_root(args.compare))]
    options = HoldOptions.from_args(args)
    clips = read_manifest()
    n_bargeins = max(0, getattr(args, "compare_bargeins", 0))
    speech = [c for c in clips if c.kind == "speech"][:n_bargeins]
    audio = {c.path: load_clip(c) for c in speech}
    clear_ms: dict[str, list[float]] = {"this": [], "other": []}
    print("bargein bench --compare: the hold on two servers at once, under one load generator")
    for side in sides:
        extra = "".join(f" {k}={v}" for k, v in side.env)
        print(f"  {side.label}: {side.root} ({side.describe()}){extra}")
    print(f"  {options.calls} calls on each x {options.seconds:g} s, callers sending {options.caller}, "
          f"{args.rounds} round(s), sides swapped each round\n")
    ratios: list[float] = []
    for k in range(args.rounds):
        order = sides if k % 2 == 0 else sides[::-1]
        progress(f"compare: round {k + 1} of {args.rounds}")
        rounds = asyncio.run(_round(order, clips, options, speech, audio))
        results = {label: r.hold for label, r in rounds.items()}
        print(f"round {k + 1} (started first: {order[0].label})")
        print("  side   calls     CPU per call-s  lag p99.9  Silero mean batch  barge-ins  clear-sent p50 / max")
        for side in sides:
            sent = rounds[side.label].clear_sent_ms
            clear_ms[side.label].extend(sent)
            print(f"{_line(side.label, results[side.label])}  {len(sent):>9}  "
                  f"{_pct(sent, 50):>6.2f} / {max(sent, default=float('nan')):.2f} ms")
        this_cpu, other_cpu = results["this"].cpu_ms_per_call_s, results["other"].cpu_ms_per_call_s
        if this_cpu and other_cpu:
            ratios.append(this_cpu / other_cpu)
            print(f"  this / other: {this_cpu / other_cpu:.3f}\n")
    if not ratios:
        print("no round produced a CPU figure on both sides")
        return 1
    mean = sum(ratios) / len(ratios)
    print(f"CPU per call-second, this / other, mean over {len(ratios)} round(s): {mean:.3f} "
          f"({(mean - 1) * 100:+.1f}%; rounds {', '.join(f'{r:.3f}' for r in ratios)})")
    if n_bargeins:
        this_ms, other_ms = clear_ms["this"], clear_ms["other"]
        print(f"decision -> clear written over all rounds (n = {len(this_ms)} / {len(other_ms)}): "
              f"p50 {_pct(this_ms, 50):.2f} / {_pct(other_ms, 50):.2f} ms, "
              f"p99 {_pct(this_ms, 99):.2f} / {_pct(other_ms, 99):.2f} ms "
              f"(this - other: p99 {_pct(this_ms, 99) - _pct(other_ms, 99):+.2f} ms)")
    return 0
