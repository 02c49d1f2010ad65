"""`bargein bench --compare OTHER`: the hold mode on two servers at once, this code and the code in OTHER.

Server CPU per call-second moves by up to a quarter between runs of the same code on a shared machine, far
more than most changes to the hot path are worth. Two servers held side by side, under one load generator,
see the same machine at the same moment, so the ratio of their figures is what a change is judged by. Each
round holds `--hold-calls` calls on each server; the next round swaps which server starts first, so neither
side gets a systematic head start. Both servers run in this Python environment: OTHER is a checkout (or a
`git worktree`) whose `app/` and `providers/` are put first on the server's PYTHONPATH.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
from dataclasses import dataclass
from pathlib import Path

from app.bench.common import ServerProcess, progress
from app.bench.hold import HoldOptions, HoldResult, run_hold, server_env
from app.edge.emulator import EdgeEmulator
from app.edge.llm_server import ScriptedLlmServer
from app.offline.corpus import Clip, read_manifest


@dataclass(frozen=True)
class Side:
    label: str  # "this" or "other"
    root: Path  # the folder holding app/ and providers/

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


async def _round(sides: list[Side], clips: list[Clip], options: HoldOptions) -> dict[str, HoldResult]:
    async with ScriptedLlmServer(["Hello."], token_delay_s=0.04) as llm:
        servers = [
            ServerProcess({"LLM_BASE_URL": llm.base_url, "PYTHONPATH": str(side.root), **server_env(options)})
            for side in sides
        ]
        try:
            for server in servers:
                await server.start()
            async with (
                EdgeEmulator(servers[0].url, keep_audio=False) as edge0,
                EdgeEmulator(servers[1].url, keep_audio=False) as edge1,
            ):
                results = await asyncio.gather(
                    run_hold(servers[0], edge0, clips, options), run_hold(servers[1], edge1, clips, options)
                )
        finally:
            for server in servers:
                await server.stop()
                server.cleanup()
    return {side.label: result for side, result in zip(sides, results, strict=True)}


def _line(label: str, r: HoldResult) -> str:
    batches = r.stats_after.get("silero_batches", {})
    cpu = f"{r.cpu_ms_per_call_s:.2f}" if r.cpu_ms_per_call_s is not None else "-"
    return (
        f"  {label:<6} {r.calls_up:>4}/{r.calls_requested:<4} {cpu:>9} ms"
        f"  {r.frame_lag_ms.get('p99_9', float('nan')):>6.2f} ms  {float(batches.get('mean_batch', 0.0)):>5.2f}"
    )


def run_compare(args: argparse.Namespace) -> int:
    sides = [Side("this", this_root()), Side("other", check_root(args.compare))]
    options = HoldOptions.from_args(args)
    clips = read_manifest()
    print("bargein bench --compare: the hold on two servers at once, under one load generator")
    for side in sides:
        print(f"  {side.label}: {side.root} ({side.describe()})")
    print(f"  {options.calls} calls on each x {options.seconds:g} s, callers sending {options.caller}, "
          f"{args.rounds} round(s), sides swapped each round\n")
    ratios: list[float] = []
    for k in range(args.rounds):
        order = sides if k % 2 == 0 else sides[::-1]
        progress(f"compare: round {k + 1} of {args.rounds}")
        results = asyncio.run(_round(order, clips, options))
        print(f"round {k + 1} (started first: {order[0].label})")
        print("  side   calls     CPU per call-s  lag p99.9  Silero mean batch")
        for side in sides:
            print(_line(side.label, results[side.label]))
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
    return 0
