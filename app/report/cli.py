"""`bargein report FILE [-o call.html|call.png]`: the picture of a recorded call."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from app.record.format import SUFFIXES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a call recording (RECORD_DIR/<call id>.jsonl.zst, or .jsonl.gz)")
    parser.add_argument("-o", "--output", metavar="OUT", default=None,
                        help="where to write: .html (one self-contained, zoomable file) or .png (a screenshot "
                             "of it by headless Chromium); default FILE with .html")
    parser.add_argument("--browser", metavar="PATH", default=None,
                        help="the Chromium (or Chrome) binary for .png; default the first on PATH")


def default_output(file: str) -> Path:
    p = Path(file)
    name = next((p.name[: -len(x)] for x in SUFFIXES if p.name.endswith(x)), p.stem)
    return p.with_name(name + ".html")


def run(args: argparse.Namespace) -> int:
    # imported here: plotly costs a few hundred ms, which `bargein serve` should not pay
    from app.record.format import RecordingError
    from app.report.render import ReportError, write_report

    out = Path(args.output) if args.output else default_output(args.file)
    began = time.perf_counter()
    try:
        tl = write_report(args.file, out, browser=args.browser)
    except (RecordingError, ReportError) as exc:
        print(f"bargein report: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"bargein report: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - began:.1f} s): "
          f"{tl.duration_s:.1f} s call, {len(tl.bargeins)} barge-in{'' if len(tl.bargeins) == 1 else 's'}")
    return 0
