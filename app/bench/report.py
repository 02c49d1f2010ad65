"""The text report of `bargein bench`, and the targets it is checked against (the issue's numbers)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.bench.accuracy import ClipRun, Phase
from app.bench.common import MB, fmt, fmt_pct, pct, table
from app.bench.fuzz import render as fuzz_section
from app.bench.fuzz import summary as fuzz_summary
from app.bench.fuzz import targets as fuzz_targets
from app.bench.stats import Count
from app.offline.corpus import STEADY_CATEGORIES

if TYPE_CHECKING:
    from app.bench.run import Report

TIMINGS = ("clear_sent_ms", "tts_stopped_ms", "llm_closed_ms", "total_ms")


def _speech(runs: Iterable[ClipRun]) -> list[ClipRun]:
    return [r for r in runs if r.kind == "speech"]


def _noise(runs: Iterable[ClipRun]) -> list[ClipRun]:
    return [r for r in runs if r.kind == "noise"]


def _ok(runs: Iterable[ClipRun]) -> list[ClipRun]:
    return [r for r in runs if r.error is None]


def _values(runs: Iterable[ClipRun], name: str) -> list[float]:
    return [v for r in runs if (v := getattr(r, name)) is not None]


def _events(runs: Iterable[ClipRun]) -> list[dict[str, Any]]:
    return [e for r in runs for e in r.events]


def _timing(events: list[dict[str, Any]], name: str) -> list[float]:
    """A barge-in timing over the events that have it: a resumed barge-in closed nothing (None)."""
    return [float(e[name]) for e in events if e.get(name) is not None]


def phase_summary(p: Phase) -> dict[str, Any]:
    speech, noise = _ok(_speech(p.runs)), _ok(_noise(p.runs))
    o2c, o2s = _values(speech, "onset_to_clear_ms"), _values(speech, "onset_to_stopped_ms")
    events = _events(_ok(p.runs))
    calls = len(p.runs)
    return {
        "provider": p.provider,
        "concurrency": p.concurrency,
        "calls": calls,
        "failed": sum(r.error is not None for r in p.runs),
        "speech": len(speech),
        "detected": sum(r.detected for r in speech),
        "onset_to_clear_ms": {"p50": pct(o2c, 50), "p95": pct(o2c, 95), "max": max(o2c, default=None)},
        "onset_to_stopped_ms": {"p50": pct(o2s, 50), "p95": pct(o2s, 95), "max": max(o2s, default=None)},
        "audio_after_clear": sum(r.audio_after_clear for r in speech),
        "resumed_after_false_stop": sum(r.audio_after_clear for r in noise),
        "edge_clear_ms": {
            "p50": pct(_values(speech, "edge_clear_ms"), 50),
            "p99": pct(_values(speech, "edge_clear_ms"), 99),
        },
        "noise": len(noise),
        "false_stops": sum(r.clears > 0 for r in noise),
        "steady": sum(r.category in STEADY_CATEGORIES for r in noise),
        "steady_stops": sum(r.clears > 0 and r.category in STEADY_CATEGORIES for r in noise),
        "ran_dry": sum(r.ran_dry for r in noise),
        "not_talking_at_start": sum(not r.talking_at_start for r in _ok(p.runs)),
        "pre_clears": sum(r.pre_clears for r in p.runs),
        "violations": sum(r.violations for r in p.runs),
        "events": len(events),
        "llm_open": sum(bool(r.llm_open) for r in p.runs),
        "llm_known": sum(r.llm_open is not None for r in p.runs),
        "timings": {
            name: {
                "p50": pct(_timing(events, name), 50),
                "p95": pct(_timing(events, name), 95),
                "p99": pct(_timing(events, name), 99),
                "max": max(_timing(events, name), default=None),
            }
            for name in TIMINGS
        },
        "reply_ms_p50": pct(_values(p.runs, "reply_ms"), 50),
        "frames": sum(r.frames for r in p.runs),
        "late_frames": sum(r.late_frames for r in p.runs),
        "max_late_ms": max((r.max_late_ms for r in p.runs), default=0.0),
        "gc_max_ms": p.gc_max_ms,
        "wall_s": p.meter["wall_s"],
        "active_max": p.active_max,
        "frame_lag_ms": p.frame_lag_ms,
        "server_cpu_s": p.server_cpu_s,
        "cpu_s_per_call": p.server_cpu_s / calls if calls else None,
        "cpu_ms_per_call_s": 1000 * p.server_cpu_s / p.call_seconds if p.call_seconds else None,
        "rss_max_mb": p.rss_max / MB,
        "rss_per_call_mb": (p.rss_max - p.rss_start) / MB / p.concurrency,
        "bench_cpu_core": p.meter["bench_cpu_s"] / p.meter["wall_s"] if p.meter["wall_s"] else None,
        "machine_busy": p.meter["machine_busy"],
        "errors": sorted({r.error for r in p.runs if r.error}),
    }


def _label(s: dict[str, Any]) -> str:
    return f"{s['provider']} x{s['concurrency']}"


def _ms(d: dict[str, Any], *keys: str) -> list[str]:
    return [fmt(d[k], 0 if (d[k] or 0) >= 100 else 1) for k in keys]


def render(report: Report) -> tuple[str, dict[str, Any]]:
    out: list[str] = ["bargein bench", "=" * 13, *report.plan]
    if report.inherited:
        out.append("inherited server settings: " + ", ".join(f"{k}={v}" for k, v in sorted(report.inherited.items())))
    if report.cost:
        out += [
            "",
            "Detector cost (in-process, before the server starts)",
            table(
                ["calls", "frames/call", "CPU us per call per 20 ms frame", "wall us", "harness us", "mean batch"],
                [
                    [
                        f"{c['calls']:.0f}",
                        f"{c['frames']:.0f}",
                        f"{c['cpu_us']:.1f}",
                        f"{c['wall_us']:.1f}",
                        f"{c['harness_cpu_us']:.1f}",
                        f"{c['mean_batch']:.1f}",
                    ]
                    for c in report.cost
                ],
            ),
        ]
    summaries = [phase_summary(p) for p in report.phases]
    if summaries:
        out += _accuracy(report, summaries)
    conditions: list[dict[str, Any]] = []
    if report.condition_phases:
        lines, conditions = render_conditions(report.condition_phases)
        out += lines
    if report.hold is not None:
        out += _hold(report)
    if report.fuzz is not None:
        out += fuzz_section(report.fuzz)
    if report.servers:
        out += [
            "",
            "Server processes",
            table(
                ["role", "ready in", "exit", "log warnings", "errors", "tracebacks"],
                [
                    [
                        s["role"],
                        f"{s['started_in_s']:.1f} s",
                        str(s["exit"]),
                        str(s["warning"]),
                        str(s["error"]),
                        str(s["traceback"]),
                    ]
                    for s in report.servers
                ],
            ),
        ]
        out += [f"  {s['role']} log tail:\n{s['log_tail']}" for s in report.servers if s["log_tail"]]
    targets = _targets(report, summaries)
    out += ["", "Targets", table(["target", "measured", "result"], targets)]
    if report.failed:
        out += ["", f"BENCHMARK FAILED: {report.failed}"]
    out += ["", f"wall time: {report.wall_s:.0f} s ({report.wall_s / 60:.1f} min)"]
    return "\n".join(out), {
        "phases": summaries,
        "targets": [dict(zip(("target", "measured", "result"), t, strict=True)) for t in targets],
        **({"fuzz": fuzz_summary(report.fuzz)} if report.fuzz is not None else {}),
        **({"conditions": conditions} if conditions else {}),
    }


def _accuracy(report: Report, summaries: list[dict[str, Any]]) -> list[str]:
    out = [
        "",
        "Accuracy: speech (onset = manifest speech_onset_s on the emulator's send clock; ms)",
        table(
            [
                "phase",
                "calls",
                "failed",
                "detected",
                "onset->clear p50",
                "p95",
                "max",
                "onset->audio stopped p50",
                "p95",
                "edge frame->clear p50",
                "p99",
            ],
            [
                [
                    _label(s),
                    str(s["calls"]),
                    str(s["failed"]),
                    fmt_pct(s["detected"], s["speech"]),
                    *_ms(s["onset_to_clear_ms"], "p50", "p95", "max"),
                    *_ms(s["onset_to_stopped_ms"], "p50", "p95"),
                    *_ms(s["edge_clear_ms"], "p50", "p99"),
                ]
                for s in summaries
            ],
        ),
    ]
    out.append(
        "  onset->audio stopped: end of the last agent audio the emulator played (the emulator stops playout\n"
        "  on the clear, so it equals onset->clear unless audio came back); edge frame->clear: last caller frame\n"
        "  sent -> clear received (both socket hops + the server)"
    )
    noisy = [s for s in summaries if s["noise"]]
    if noisy:
        note = (
            "  agent ran dry: its audio ended before the clip did (the clip was not fully tested);"
            " agent answered: after a false stop the\n  agent took the noise for a turn and replied"
        )
        out += [
            "",
            "Accuracy: noise (a false stop = any clear during a noise clip)",
            table(
                ["phase", "noise calls", "false stops", "steady-noise stops", "agent ran dry", "agent answered"],
                [
                    [
                        _label(s),
                        str(s["noise"]),
                        fmt_pct(s["false_stops"], s["noise"]),
                        f"{s['steady_stops']} of {s['steady']}",
                        str(s["ran_dry"]),
                        str(s["resumed_after_false_stop"]),
                    ]
                    for s in noisy
                ],
            ),
            note,
        ]
        phases = [p for p in report.phases if _noise(p.runs)]
        categories = list(dict.fromkeys(r.category for p in phases for r in _noise(p.runs)))
        rows = []
        for cat in categories:
            cells = []
            for p in phases:
                runs = [r for r in _ok(_noise(p.runs)) if r.category == cat]
                cells.append(f"{sum(r.clears > 0 for r in runs)}/{len(runs)}")
            rows.append([cat + (" (steady)" if cat in STEADY_CATEGORIES else ""), *cells])
        out += [
            "",
            "  false stops by category",
            table(["category", *(f"{p.provider} x{p.concurrency}" for p in phases)], rows, indent="  "),
        ]
    out += [
        "",
        "Barge-in event timings (server's record, ms from the arrival of the triggering frame)",
        table(
            [
                "phase",
                "events",
                "clear sent p50",
                "p99",
                "TTS stopped p50",
                "p99",
                "LLM closed p50",
                "p99",
                "total p50",
                "p99",
                "LLM open at cut",
            ],
            [
                [
                    _label(s),
                    str(s["events"]),
                    *(
                        v
                        for name in TIMINGS
                        for v in (fmt(s["timings"][name]["p50"], 2), fmt(s["timings"][name]["p99"], 2))
                    ),
                    f"{s['llm_open']}/{s['llm_known']}" if s["llm_known"] else "-",
                ]
                for s in summaries
            ],
        ),
    ]
    if report.llm:
        out.append(
            f"  loopback LLM: {report.llm['requests']} requests, {report.llm['disconnected']} closed by the "
            f"server before the end, {report.llm['completed']} streamed in full"
        )
    out += [
        "",
        "Server per phase (CPU and RSS from /stats; frame lag = a caller frame's arrival -> its VAD decision)",
        table(
            [
                "phase",
                "wall s",
                "max active",
                "frame lag p99.9 ms",
                "max ms",
                "CPU s",
                "CPU per call s",
                "CPU ms per call-s",
                "RSS max MB",
                "RSS per call MB",
            ],
            [
                [
                    _label(s),
                    f"{s['wall_s']:.0f}",
                    str(s["active_max"]),
                    fmt(s["frame_lag_ms"].get("p99_9"), 2),
                    fmt(s["frame_lag_ms"].get("max"), 2),
                    f"{s['server_cpu_s']:.2f}",
                    fmt(s["cpu_s_per_call"], 3),
                    fmt(s["cpu_ms_per_call_s"], 2),
                    f"{s['rss_max_mb']:.0f}",
                    f"{s['rss_per_call_mb']:.2f}",
                ]
                for s in summaries
            ],
        ),
        "  RSS per call = (highest RSS in the phase - RSS at its start) / concurrency: the first phase at a\n"
        "  concurrency pays the allocator's growth, later ones reuse it; the hold mode gives the per-call figure.",
        "",
        "Load generator per phase (this process: emulator + loopback LLM)",
        table(
            ["phase", "CPU", "machine busy", "caller frames > 5 ms late", "max late ms", "longest GC pause ms"],
            [
                [
                    _label(s),
                    f"{100 * (s['bench_cpu_core'] or 0):.0f}% of a core",
                    f"{100 * s['machine_busy']:.0f}%",
                    fmt_pct(s["late_frames"], s["frames"]),
                    f"{s['max_late_ms']:.1f}",
                    f"{s['gc_max_ms']:.1f}",
                ]
                for s in summaries
            ],
        ),
    ]
    checks = []
    for s in summaries:
        notes = []
        if s["not_talking_at_start"]:
            notes.append(f"{s['not_talking_at_start']} clips started with the agent silent")
        if s["pre_clears"]:
            notes.append(f"{s['pre_clears']} clears before a clip started")
        if s["audio_after_clear"]:
            notes.append(f"{s['audio_after_clear']} speech calls with agent audio after the clear")
        if s["violations"]:
            notes.append(f"{s['violations']} protocol violations")
        if s["errors"]:
            notes.append("errors: " + "; ".join(s["errors"][:3]))
        if notes:
            checks.append(f"  {_label(s)}: " + ", ".join(notes))
    if checks:
        out += ["", "Anomalies", *checks]
    replies = [s["reply_ms_p50"] for s in summaries if s["reply_ms_p50"] is not None]
    if replies:
        out.append(
            f"  (agent reply after the caller's word: p50 {min(replies):.0f}-{max(replies):.0f} ms "
            "from the word's last frame to the first agent audio: 700 ms turn-end silence + LLM + TTS)"
        )
    return out


def _hold(report: Report) -> list[str]:
    h = report.hold
    assert h is not None
    lag = h.frame_lag_ms
    cores = h.meter["cores"]
    rows = [
        [
            "calls up",
            f"{h.calls_up} of {h.calls_requested} (ramp {h.ramp_s:.1f} s, then settled {h.settle_s:.1f} s)"
            + (f"; failed: {h.errors}" if h.errors else ""),
        ],
        ["window", f"{h.window_s:.1f} s"],
        ["server CPU", f"{h.server_cpu_s:.2f} s = {100 * h.server_cpu_s / h.window_s:.0f}% of a core"
         f" (event loop: {h.stats_after.get('event_loop', '?')})"],
        ["server CPU per call-second", fmt(h.cpu_ms_per_call_s, 2, " ms")],
        ["RSS idle (after a warm-up call) / at hold", f"{h.rss_idle / MB:.0f} MB / {h.rss_hold / MB:.0f} MB"],
        ["RSS per call", fmt(None if h.rss_per_call is None else h.rss_per_call / MB, 2, " MB")],
        [
            "  of which queued agent audio",
            f"up to {h.greeting_s * 8000 / MB:.2f} MB: a {h.greeting_s:.0f} s greeting queued as mu-law (8 KB/s)",
        ],
        ["agent audio underruns (edge ran dry mid-turn)", str(h.underruns)],
        ["Silero windows per model run (mean)", _mean_batch(h.stats_before, h.stats_after)],
        [
            "inbound-frame lag (arrival -> VAD decision)",
            f"p50 {fmt(lag.get('p50'), 2)}  p99 {fmt(lag.get('p99'), 2)}  p99.9 {fmt(lag.get('p99_9'), 2)}  "
            f"max {fmt(lag.get('max'), 2)} ms over {lag.get('count', 0):.0f} frames",
        ],
        ["clears received in the window", f"{h.clears_in_window} (what the callers send must not stop the agent)"],
        ["agent still talking at the end", f"{h.talking_at_end} of {h.calls_up}"],
        [
            "load generator CPU",
            f"{h.meter['bench_cpu_s']:.2f} s = {100 * h.meter['bench_cpu_s'] / h.meter['wall_s']:.0f}% of a core",
        ],
        ["machine busy", f"{100 * h.meter['machine_busy']:.0f}% of {cores:.0f} cores"],
        ["caller frames sent late (> 5 ms)", f"{fmt_pct(h.late_frames, h.frames_sent)}, max {h.max_late_ms:.1f} ms"],
        ["load generator GC pauses (gen 1-2)", f"{h.gc_pauses}, longest {h.gc_max_ms:.1f} ms"],
        [
            "load generator loop stalls (5 ms timer late)",
            f"{h.loop_late_over_5ms} over 5 ms, longest {h.loop_late_max_ms:.1f} ms",
        ],
    ]
    return [
        "",
        f"Hold: {h.calls_requested} calls open, agent talking, callers sending steady noise",
        table(["figure", "value"], rows, left=2),
    ]


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def _targets(report: Report, summaries: list[dict[str, Any]]) -> list[list[str]]:
    rows: list[list[str]] = []
    phases = report.phases
    if phases:
        failed = sum(r.error is not None for p in phases for r in p.runs)
        total = sum(len(p.runs) for p in phases)
        rows.append(
            [
                "every accuracy call ran (failures are left out below)",
                f"{failed} of {total} failed",
                _verdict(failed == 0),
            ]
        )

    def events_at(pred: Any) -> list[dict[str, Any]]:
        return _events(_ok(r for p in phases if pred(p) for r in p.runs))

    for conc, limit in ((1, 2.0), (20, 5.0)):
        values = [e["clear_sent_ms"] for e in events_at(lambda p, c=conc: p.concurrency == c)]
        v = pct(values, 99)
        rows.append(
            [
                f"clear sent p99 <= {limit:g} ms at {conc} call(s)",
                f"{fmt(v, 2)} ms (n={len(values)})",
                _verdict(None if v is None else v <= limit),
            ]
        )
    # From the decision that ended the agent's turn (a resumed barge-in closes nothing and is left out).
    every = [e for e in events_at(lambda p: True) if e.get("outcome", "stopped") == "stopped"]
    for name, label in (("llm_closed_ms", "LLM connection closed"), ("tts_stopped_ms", "TTS stopped")):
        v = pct(_timing(every, name), 95)
        rows.append(
            [f"{label} p95 <= 10 ms", f"{fmt(v, 2)} ms (n={len(every)})", _verdict(None if v is None else v <= 10.0)]
        )
    speech = _ok(r for p in phases for r in _speech(p.runs))
    o2c = _values(speech, "onset_to_clear_ms")
    v = pct(o2c, 95)
    rows.append(
        [
            "onset->clear p95 < 300 ms (corpus speech, all phases)",
            f"{fmt(v, 0)} ms (n={len(o2c)})",
            _verdict(None if v is None else v < 300.0),
        ]
    )
    det = sum(r.detected for r in speech)
    rows.append(
        ["detection >= 98%", fmt_pct(det, len(speech)), _verdict(None if not speech else det / len(speech) >= 0.98)]
    )
    noise = _ok(r for p in phases for r in _noise(p.runs))
    steady = [r for r in noise if r.category in STEADY_CATEGORIES]
    stops = sum(r.clears > 0 for r in steady)
    rows.append(
        ["no stop on steady noise", f"{stops} of {len(steady)} clips", _verdict(None if not steady else stops == 0)]
    )
    fs = sum(r.clears > 0 for r in noise)
    rows.append(
        [
            "false stops on all noise < 8%",
            fmt_pct(fs, len(noise)),
            _verdict(None if not noise else fs / len(noise) < 0.08),
        ]
    )
    if report.cost:
        rows.append(
            [
                "detector cost at 1 / 100 calls (printed)",
                " / ".join(f"{c['cpu_us']:.1f}" for c in report.cost) + " us",
                "n/a",
            ]
        )
    h = report.hold
    if h is not None:
        p999 = h.frame_lag_ms.get("p99_9")
        rows.append(
            [
                f"inbound-frame lag p99.9 < 20 ms at {h.calls_requested} calls",
                f"{fmt(p999, 2)} ms ({h.calls_up} up)",
                _verdict(None if p999 is None else (p999 < 20.0 and h.calls_up == h.calls_requested)),
            ]
        )
        rows.append(
            [
                "CPU per call-second < 4 ms (aim)",
                fmt(h.cpu_ms_per_call_s, 2, " ms"),
                _verdict(None if h.cpu_ms_per_call_s is None else h.cpu_ms_per_call_s < 4.0),
            ]
        )
        per = None if h.rss_per_call is None else h.rss_per_call / MB
        rows.append(["RSS per call < 2 MB (aim)", fmt(per, 2, " MB"), _verdict(None if per is None else per < 2.0)])
    if report.fuzz is not None:
        rows += fuzz_targets(report.fuzz)
    full = report.args.get("mode") == "all" and not report.args.get("limit") and not report.args.get("quick")
    rows.append(
        [
            "full run of both modes within 15 min",
            f"{report.wall_s / 60:.1f} min",
            _verdict(report.wall_s <= 900 if full else None),
        ]
    )
    return rows


def _mean_batch(before: dict[str, Any], after: dict[str, Any]) -> str:
    b, a = before.get("silero_batches") or {}, after.get("silero_batches") or {}
    runs = float(a.get("runs", 0)) - float(b.get("runs", 0))
    windows = float(a.get("windows", 0)) - float(b.get("windows", 0))
    if runs <= 0:
        return "-"
    model = float(a.get("model_cpu_s", 0)) - float(b.get("model_cpu_s", 0))
    return (f"{windows / runs:.2f} ({windows:.0f} windows in {runs:.0f} runs; model CPU {model:.2f} s, "
            f"{model / windows * 1e6:.0f} us per window)")


# --- --conditions ----------------------------------------------------------------------------------------


def condition_summary(p: Phase) -> dict[str, Any]:
    """One condition on one provider at one concurrency: counts with 95% Wilson intervals (JSON-ready)."""
    ok = _ok(p.runs)
    speech, quiet = _speech(ok), _noise(ok)
    o2c = _values(speech, "onset_to_clear_ms")
    resume = _values(ok, "resume_ms")
    talked = _values(ok, "talked_on_ms")
    false_clear = [r for r in quiet if r.all_clears > 0]
    echo = [r for r in ok if r.erl_db is not None]
    words = [r for r in ok if r.turn_ended is not None]
    labelled = [r for r in ok if r.first_words is not None]
    cut_err = [abs(v) for v in _values(ok, "heard_error_ms")]

    def by(rows: list[ClipRun], key: str, hit: Any) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[ClipRun]] = {}
        for r in rows:
            groups.setdefault(str(getattr(r, key)), []).append(r)
        return {g: Count(sum(bool(hit(r)) for r in rs), len(rs)).to_json() for g, rs in groups.items()}

    return {
        "condition": p.condition,
        "provider": p.provider,
        "concurrency": p.concurrency,
        "calls": len(p.runs),
        "failed": sum(r.error is not None for r in p.runs),
        "errors": sorted({r.error for r in p.runs if r.error})[:5],
        "stand_in": next((r.stand_in for r in p.runs if r.stand_in), None),
        "detection": Count(sum(r.detected for r in speech), len(speech)).to_json(),
        # Apart by category: a short word over the agent is a backchannel stand-in to the policy, and on a line
        # where the echo guard has locked (confirm before any clear) it is meant to cause no clear at all.
        "detection_by_category": by(speech, "category", lambda r: r.detected),
        # Not detected, but cleared between the clip's start and its labelled onset (ClipRun.early_clear_ms).
        "early_clears": Count(sum(r.early_clear_ms is not None for r in speech), len(speech)).to_json(),
        "early_clear_ms": {"p50": pct(_values(speech, "early_clear_ms"), 50),
                           "min": min(_values(speech, "early_clear_ms"), default=None)},
        "onset_to_clear_ms": {"p50": pct(o2c, 50), "p95": pct(o2c, 95), "n": len(o2c)},
        "yielded": Count(sum(bool(r.yielded) for r in speech), len(speech)).to_json(),
        "false_clears": Count(len(false_clear), len(quiet)).to_json(),
        "lost_turns": Count(sum(bool(r.lost_turn) for r in quiet), len(quiet)).to_json(),
        "lost_of_false_clears": Count(sum(bool(r.lost_turn) for r in false_clear), len(false_clear)).to_json(),
        # ... of which the agent went on with the rest once the caller's turn was heard to hold no words
        "lost_went_on_later": Count(sum(bool(r.lost_turn and r.went_on_later) for r in quiet),
                                    sum(bool(r.lost_turn) for r in quiet)).to_json(),
        "self_stops": Count(sum(r.self_stops > 0 for r in echo), len(echo)).to_json(),
        "self_stops_by_erl_db": by(echo, "erl_db", lambda r: r.self_stops > 0),
        "false_clears_by_category": by(quiet, "category", lambda r: r.all_clears > 0),
        "turn_ended": Count(sum(bool(r.turn_ended) for r in words), len(words)).to_json(),
        "resumed_within_400ms": Count(sum(bool(r.resumed_fast) for r in words), len(words)).to_json(),
        "kept_talking": Count(sum(r.all_clears == 0 for r in words), len(words)).to_json(),
        "stayed_stopped": Count(sum(bool(r.stayed_stopped) for r in words), len(words)).to_json(),
        "first_words": Count(sum(bool(r.first_words) for r in labelled), len(labelled)).to_json(),
        "first_words_by_category": by(labelled, "category", lambda r: r.first_words),
        "first_words_offline": Count(sum(bool(r.first_words_offline) for r in labelled), len(labelled)).to_json(),
        "first_words_of_offline": Count(sum(bool(r.first_words) for r in labelled if r.first_words_offline),
                                        sum(bool(r.first_words_offline) for r in labelled)).to_json(),
        # The bar: the cut within 40 ms of audio of what the edge played, at p95.
        "heard_error_abs_ms": {"p50": pct(cut_err, 50), "p95": pct(cut_err, 95), "max": max(cut_err, default=None),
                               "n": len(cut_err)},
        "heard_within_40ms": Count(sum(v <= 40.0 for v in cut_err), len(cut_err)).to_json(),
        "talked_on_ms": {"p50": pct(talked, 50), "max": max(talked, default=None), "n": len(talked)},
        "resume_ms": {"p50": pct(resume, 50), "max": max(resume, default=None), "n": len(resume)},
        "record_resumed_known": sum(r.record_resumed is not None for r in ok),
        "clears": sum(r.all_clears for r in ok),
        "record_outcomes": _tally(o for r in ok for o in r.outcomes),
        "new_agent_turn": sum(bool(r.new_agent_turn) for r in ok),
        # Each lost turn's clip and what the recognizer made of the caller turn(s) it was lost to.
        "lost_to": [f"{Path(r.clip).name}: " + (" | ".join(repr(w) for w in r.caller_said) or "no caller turn")
                    for r in quiet if r.lost_turn],
        "violations": sum(r.violations for r in p.runs),
    }


def _tally(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def _count(d: dict[str, Any]) -> str:
    return str(Count(d["k"], d["n"]))


def render_conditions(phases: list[Phase]) -> tuple[list[str], list[dict[str, Any]]]:
    """The --conditions section: one table per condition (its metrics only), then per-category and per-ERL rows."""
    from app.bench.conditions import CONDITIONS  # the registry; imported here to keep report's imports light

    summaries = [condition_summary(p) for p in phases]
    out = ["", "Conditions (counts k/n with 95% Wilson intervals; false clear = any clear with no caller speech;",
           "  lost turn = a clear after which no agent audio of the same turn came back within 1 s)"]
    columns: dict[str, tuple[str, Any]] = {
        "detection": ("detected", lambda s: _count(s["detection"])),
        "yielded": ("yielded (turn ended)", lambda s: _count(s["yielded"])),
        "onset_to_clear": ("onset->clear p50/p95 ms",
                           lambda s: "/".join(_ms(s["onset_to_clear_ms"], "p50", "p95"))),
        "false_clears": ("false clears", lambda s: _count(s["false_clears"])),
        "lost_turns": ("lost turns (of them, went on later)",
                       lambda s: f"{_count(s['lost_turns'])} ({s['lost_went_on_later']['k']})"),
        "self_stops": ("self-stops", lambda s: _count(s["self_stops"])),
        "turn_ended": ("turn ended / kept talking / resumed <400 ms",
                       lambda s: " / ".join(_count(s[k]) for k in ("turn_ended", "kept_talking",
                                                                    "resumed_within_400ms"))),
        "first_words": ("first word heard in the call (of detected) / on the whole clip offline / in the call "
                        "where offline heard it",
                        lambda s: " / ".join(_count(s[k]) for k in ("first_words", "first_words_offline",
                                                                     "first_words_of_offline"))),
        "heard_cut": ("cut vs played |ms| p50/p95/max (n) / within 40 ms",
                      lambda s: "/".join(_ms(s["heard_error_abs_ms"], "p50", "p95", "max"))
                                + f" ({s['heard_error_abs_ms']['n']}) / {_count(s['heard_within_40ms'])}"),
        "stayed_stopped": ("stopped and stayed stopped / talked on after it p50,max ms",
                           lambda s: f"{_count(s['stayed_stopped'])} / "
                                     + ",".join(_ms(s["talked_on_ms"], "p50", "max"))),
    }
    for name in dict.fromkeys(s["condition"] for s in summaries):
        rows = [s for s in summaries if s["condition"] == name]
        cond = CONDITIONS.get(name)
        metrics = [m for m in (cond.metrics if cond else ()) if m in columns]
        out += ["", f"{name}: {cond.summary if cond else ''}"]
        if rows[0]["stand_in"]:
            out.append(f"  stand-in: {rows[0]['stand_in']}")
        out.append(table(
            ["phase", "calls", "failed", *(columns[m][0] for m in metrics), "resume ms p50"],
            [[_label(s), str(s["calls"]), str(s["failed"]), *(columns[m][1](s) for m in metrics),
              fmt(s["resume_ms"]["p50"], 0)] for s in rows],
        ))
        for s in rows:
            extra = [f"ERL {k} dB: {_count(v)}" for k, v in s["self_stops_by_erl_db"].items()]
            if "false_clears" in metrics and len(s["false_clears_by_category"]) > 1:
                extra += [f"{k}: {_count(v)}" for k, v in s["false_clears_by_category"].items()]
            if "first_words" in metrics:
                extra += [f"{k}: {_count(v)}" for k, v in s["first_words_by_category"].items()]
            if "detection" in metrics and len(s["detection_by_category"]) > 1:
                extra += [f"detected {k}: {_count(v)}" for k, v in s["detection_by_category"].items()]
            if extra and ("self_stops" in metrics or "false_clears" in metrics or "first_words" in metrics
                          or "detection" in metrics):
                out.append(f"    {_label(s)}: " + "; ".join(extra))
            if "detection" in metrics and s["early_clears"]["k"]:
                out.append(f"    {_label(s)}: not detected but cleared after the clip began, before its labelled onset"
                           f" (the label is the first energetic speech; weak onsets come earlier): "
                           f"{_count(s['early_clears'])}, p50 {fmt(s['early_clear_ms']['p50'], 0)} ms after the "
                           f"clip's first frame (min {fmt(s['early_clear_ms']['min'], 0)})")
            if s["record_outcomes"]:
                out.append(f"    {_label(s)}: {s['clears']} clears; server record outcomes: "
                           + ", ".join(f"{k} {v}" for k, v in s["record_outcomes"].items()))
            if s.get("lost_to"):
                out.append(f"    {_label(s)}: lost turns (clip: the caller turns' words): " + "; ".join(s["lost_to"]))
            if s["errors"]:
                out.append(f"    {_label(s)} errors: " + "; ".join(s["errors"]))
    return out, summaries
