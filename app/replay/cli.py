"""`bargein replay FILE...`: replay recorded calls (and run scenarios) against this build; exit 1 on a difference.

In-process on a virtual clock by default: no server, no keys, no network, a 5-minute call in seconds, and the
same answer every time. With `--url`, over a real socket in real time against a running server (see
app/replay/live.py). Exit status: 0 every file as recorded (or as expected), 1 a difference, 2 a file that
cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # the replay machinery (numpy, onnxruntime, the app) loads only when a replay runs
    from app.replay.check import Verdict

BAR_WIDTH = 28


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="recordings (*.jsonl.zst as RECORD_DIR writes them, or *.jsonl.gz) and scenarios (*.toml)")
    parser.add_argument("--url", default=None, metavar="URL",
                        help="replay in real time over a real socket against the server at URL (it must use the "
                             "LLM_BASE_URL this command prints); default: in-process on a virtual clock")
    parser.add_argument("--llm-port", type=int, default=None, metavar="N",
                        help="with --url: the loopback port serving the recorded LLM replies (default 8766)")
    parser.add_argument("--admin-token", default=None, metavar="TOKEN",
                        help="with --url: ADMIN_TOKEN of the server under test, to read GET /calls/{id} "
                             "(default: ADMIN_TOKEN from the environment)")
    parser.add_argument("--update", action="store_true",
                        help="accept the new outcome: rewrite each recording with this replay's events "
                             "(baseline 'virtual': later replays must match it exactly)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary table and the differences")


def _progress(out: TextIO, done: int, total: int, name: str) -> None:
    if total < 2 or not out.isatty():
        return
    filled = BAR_WIDTH * done // total
    out.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} {name[:40]:<40}")
    out.flush()
    if done == total:
        out.write("\n")


def summary_table(verdicts: list[Verdict], errors: list[tuple[str, str]]) -> str:
    rows = [("file", "kind", "provider", "call s", "replay s", "result")]
    for v in verdicts:
        result = "ok" if v.passed else f"DIFF ({v.differences})"
        rows.append((v.path.name, v.kind, v.provider, f"{v.call_s:.1f}", f"{v.replay_s:.2f}", result))
    rows += [(name, "-", "-", "-", "-", "UNREADABLE") for name, _ in errors]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i in (0, 1, 2, 5) else cell.rjust(w) for i, (cell, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = sum(not v.passed for v in verdicts)
    lines.append(f"{len(verdicts) - failed} same, {failed} different, {len(errors)} unreadable")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.url:
        if args.update:
            print("--update works on the virtual clock only (a live replay is judged within a tolerance)",
                  file=sys.stderr)
            return 2
        from app.replay.live import run_live

        return run_live(args)
    from app.record.format import read_recording
    from app.replay.check import Unreadable, check_file, update

    verdicts: list[Verdict] = []
    errors: list[tuple[str, str]] = []
    total = len(args.files)
    for i, name in enumerate(args.files):
        _progress(sys.stderr, i, total, name)
        try:
            verdict = check_file(name)
        except Unreadable as exc:
            errors.append((name, str(exc)))
            print(f"{name}: cannot read: {exc}", file=sys.stderr)
            continue
        verdicts.append(verdict)
        if args.update and verdict.kind == "recording":
            update(verdict, read_recording(name))
            verdict.passed = True
            print(f"{name}: updated (baseline: this replay, virtual clock)")
        elif not verdict.passed or not args.quiet:
            print(verdict.text)
    _progress(sys.stderr, total, total, "")
    print(summary_table(verdicts, errors))
    if errors:
        return 2
    return 0 if all(v.passed for v in verdicts) else 1
