"""`bargein bench`: the corpus through the provider-edge emulator against a real server, and N calls held open.

    bargein bench [--mode accuracy|hold|all|fuzz|detector] [--limit N] [--providers twilio,plivo] [--concurrency 1,20]
                  [--hold-calls 100] [--hold-seconds 30] [--hold-caller noise|quiet]
                  [--agent-turn llm|greeting] [--auth] [--quick] [--json out.json]
                  [--conditions NAME[,NAME]|all]
                  [--fuzz-frames 100000] [--fuzz-connections 6] [--fuzz-calls 10]
                  [--detector-calls 1,100] [--detector-seconds 20]

Three parts, in this order, each on its own so they do not compete for the CPU:

1. detector cost, in this process before any server starts (`app.offline.evaluate.measure_cost`);
2. accuracy (`app.bench.accuracy`): one server process; each corpus clip is one call, on each provider, at
   each concurrency. At 1 call only the speech clips run: one at a time, the 95 noise clips of 5 s would add
   about 12 minutes per provider (`--noise-at-1` adds them); at higher concurrency every clip runs;
3. hold (`app.bench.hold`): a fresh server process, N calls held open with the agent talking and the callers
   sending steady noise, measured over a window.

`--conditions` (`app.bench.conditions`) runs named conditions in accuracy mode instead of the plain clips:
echo of the agent's own audio on the caller leg, double talk, noise over echo, a quiet talker, short words,
synthetic stop words, a line-hiss step, the cloud-to-carrier network. `--limit N` caps the calls of each.
Without `--mode`, `--conditions` runs accuracy only.

`--mode fuzz` (not part of `all`) runs `app.bench.fuzz` instead: honest calls beside connections sending
hostile frames, and beside 1 MB / 100 KB media frames.

`--mode detector` (not part of `all`) runs `app.bench.detector_cost` alone, in this process, no server: the
detector's own CPU per call per 20 ms frame (echo guard, VAD, batched Silero) with the guard on, off, and
idle on a quiet call, at `--detector-calls` calls, each fed `--detector-seconds` of audio; 3 runs each.

The report goes to stdout, progress to stderr. Pass a target or not, the exit status is 0 when the benchmark
ran; 1 when it could not (the server did not start, or no call connected).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from app.bench import conditions as cond
from app.bench.accuracy import REPLY, AccuracyOptions, AccuracyRunner, Phase
from app.bench.accuracy import server_env as accuracy_env
from app.bench.common import Auth, ServerProcess, inherited_settings, progress
from app.bench.compare import add_compare_arguments, run_compare
from app.bench.detector_cost import measure_detector
from app.bench.detector_cost import render as render_detector
from app.bench.fuzz import FuzzOptions, FuzzResult, run_fuzz
from app.bench.hold import HoldOptions, HoldResult, run_hold
from app.bench.hold import server_env as hold_env
from app.bench.report import render
from app.edge.emulator import EdgeEmulator, IdleAudio, Provider
from app.edge.llm_server import ScriptedLlmServer
from app.offline.corpus import STEADY_CATEGORIES, Clip, corpus_root, load_clip, read_manifest
from app.offline.evaluate import measure_cost

I16 = npt.NDArray[np.int16]

PROVIDERS: tuple[Provider, ...] = ("twilio", "plivo")
PRIME_CLIP = "speech/isolated_word_01_fsdd-jackson.wav"  # the caller's word that starts the agent's reply
FUZZ_CALLS = 10  # --mode fuzz's honest calls by default
FUZZ_FRAMES = 100_000  # and its hostile frames: 10,000 per honest call, the density --limit keeps
FUZZ_FRAMES_PER_CALL = FUZZ_FRAMES // FUZZ_CALLS


@dataclass
class Report:
    """Everything measured; `app.bench.report.render` turns it into text."""

    args: dict[str, Any]
    plan: list[str]
    inherited: dict[str, str]
    cost: list[dict[str, float]] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    condition_phases: list[Phase] = field(default_factory=list)
    llm: dict[str, int] = field(default_factory=dict)
    hold: HoldResult | None = None
    fuzz: FuzzResult | None = None
    servers: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    failed: str | None = None


def sample(clips: Sequence[Clip], kind: str, limit: int) -> list[Clip]:
    """`limit` clips of one kind, spread across categories (round robin; for noise, steady ones first)."""
    rows = [c for c in clips if c.kind == kind]
    if limit <= 0 or limit >= len(rows):
        return rows
    by_category: dict[str, list[Clip]] = {}
    for clip in rows:
        by_category.setdefault(clip.category, []).append(clip)
    steady = [c for c in by_category if c in STEADY_CATEGORIES]
    other = [c for c in by_category if c not in STEADY_CATEGORIES]
    order: list[str] = []
    for i in range(max(len(steady), len(other))):
        order += steady[i : i + 1] + other[i : i + 1]
    picked: list[Clip] = []
    for r in range(max(len(v) for v in by_category.values())):
        for category in order:
            if r < len(by_category[category]) and len(picked) < limit:
                picked.append(by_category[category][r])
    return sorted(picked, key=rows.index)


def build_parser() -> argparse.ArgumentParser:
    """`bargein bench`'s options (every one with a help text: tests/test_cli.py checks)."""
    p = argparse.ArgumentParser(prog="bargein bench", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--mode", choices=("accuracy", "hold", "all", "fuzz", "detector", "stt", "words", "turns",
                                           "burst"),
                   default=None,
                   help="what to run: accuracy (corpus clips as calls), hold (N calls held open), all (both; the "
                        "default, or accuracy alone with --conditions), fuzz (hostile frames beside honest calls; "
                        "not part of all), detector (the detector's own cost per call per frame, in-process, "
                        "no server; not part of all), stt (the embedded recognizer: word error, cost per turn, "
                        "callers in real time; `--mode stt --help` for its own options), words (the interruption "
                        "kinds on the held-out spoken phrases) or turns (the turn gap, edge to edge, with its "
                        "breakdown); burst (N calls arriving within 5 s: connects, clears, underruns; "
                        "`--mode burst --help`)")
    p.add_argument("--conditions", default=None, metavar="NAME[,NAME]",
                   help="accuracy mode runs these conditions instead of the plain clips: "
                        f"{', '.join(cond.CONDITIONS)}, or all")
    p.add_argument(
        "--limit", type=int, default=0, metavar="N",
        help="a sample run (0, the default: everything): N clips per kind in accuracy mode; N honest calls and "
             f"{FUZZ_FRAMES_PER_CALL:,} fuzz frames per call in fuzz mode; the hold at its --quick size "
             "(10 calls x 3 s). An explicit --hold-*/--fuzz-* option wins",
    )
    p.add_argument("--providers", default="twilio,plivo", metavar="LIST",
                   help="providers to call, comma-separated (default: twilio,plivo)")
    p.add_argument("--concurrency", default="1,20", metavar="LIST",
                   help="accuracy-mode concurrencies, comma-separated (default: 1,20)")
    p.add_argument("--hold-calls", type=int, default=None, metavar="N",
                   help="calls held open (default 100; --quick or --limit 10)")
    p.add_argument("--hold-seconds", type=float, default=None, metavar="S",
                   help="hold window (default 30; --quick or --limit 3)")
    p.add_argument(
        "--hold-caller", choices=("noise", "quiet"), default="noise",
        help="what held callers send: steady corpus noise (default) or a quiet -60 dBFS line",
    )
    p.add_argument(
        "--agent-turn",
        choices=("llm", "greeting"),
        default="llm",
        help="what the caller interrupts: an LLM reply (default) or a long greeting",
    )
    p.add_argument("--noise-at-1", action="store_true", help="also run the noise clips at concurrency 1")
    p.add_argument("--idle-audio", choices=("silence", "hiss"), default="silence",
                   help="accuracy and conditions: what the caller's line carries between its own audio: digital "
                        "silence (the default) or a quiet line's hiss (-70 dBFS white noise)")
    p.add_argument("--auth", action="store_true", help="signed webhooks and streams (webhook first)")
    p.add_argument("--no-cost", action="store_true", help="skip the in-process detector cost")
    p.add_argument(
        "--quick", action="store_true",
        help="smoke run: noise clips (and --conditions' silent / hiss calls) cut to 2 s, hold 10 calls x 3 s, "
             "short cost runs"
    )
    p.add_argument("--json", metavar="PATH", help="also write every figure and every call as JSON")
    p.add_argument(
        "--compare", metavar="CHECKOUT",
        help="instead of the modes above: the hold on this code and on CHECKOUT's at once (see app/bench/compare.py)",
    )
    p.add_argument("--rounds", type=int, default=2, metavar="N",
                   help="--compare rounds, sides swapped each round (default 2)")
    add_compare_arguments(p)
    p.add_argument("--fuzz-frames", type=int, default=None, metavar="N",
                   help=f"--mode fuzz: hostile frames to send (default {FUZZ_FRAMES:,}; "
                        f"with --limit, {FUZZ_FRAMES_PER_CALL:,} per honest call)")
    p.add_argument("--fuzz-connections", type=int, default=6, metavar="N",
                   help="--mode fuzz: hostile connections at once (default 6)")
    p.add_argument("--fuzz-calls", type=int, default=None, metavar="N",
                   help=f"--mode fuzz: honest calls in the quiet run (default {FUZZ_CALLS}; with --limit N, "
                        "at most N)")
    p.add_argument("--fuzz-seed", type=int, default=1, metavar="N", help="--mode fuzz: the fuzzer's seed (default 1)")
    p.add_argument("--detector-calls", default="1,100", metavar="LIST",
                   help="--mode detector: calls in lock step, comma-separated (default: 1,100)")
    p.add_argument("--detector-seconds", type=float, default=None, metavar="S",
                   help="--mode detector: seconds of audio fed to each call (default 20; --quick 2)")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.conditions is not None:
        try:
            args.conditions = [c.name for c in cond.parse(args.conditions)]
        except KeyError as exc:
            p.error(f"--conditions: unknown {exc.args[0]}; choose from {', '.join(cond.CONDITIONS)} or all")
    if args.mode is None:
        args.mode = "accuracy" if args.conditions else "all"
    args.providers = [x.strip() for x in args.providers.split(",") if x.strip()]
    if not args.providers or set(args.providers) - set(PROVIDERS):
        p.error(f"--providers: choose from {', '.join(PROVIDERS)}")
    try:
        args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        p.error("--concurrency: comma-separated integers")
    if not args.concurrency or min(args.concurrency) < 1:
        p.error("--concurrency: at least one value, each >= 1")
    # --limit is a sample of every mode, not only of the clips: left alone, the hold would still hold 100 calls
    # for 30 s and the fuzz send 100,000 frames.
    small = args.quick or args.limit > 0
    if args.hold_calls is None:
        args.hold_calls = 10 if small else 100
    if args.hold_seconds is None:
        args.hold_seconds = 3.0 if small else 30.0
    if args.fuzz_calls is None:
        args.fuzz_calls = min(FUZZ_CALLS, args.limit) if args.limit > 0 else FUZZ_CALLS
    if args.fuzz_frames is None:
        args.fuzz_frames = FUZZ_FRAMES_PER_CALL * args.fuzz_calls if args.limit > 0 else FUZZ_FRAMES
    if args.rounds < 1:
        p.error("--rounds: at least 1")
    try:
        args.detector_calls = [int(x) for x in args.detector_calls.split(",") if x.strip()]
    except ValueError:
        p.error("--detector-calls: comma-separated integers")
    if not args.detector_calls or min(args.detector_calls) < 1:
        p.error("--detector-calls: at least one value, each >= 1")
    if args.detector_seconds is None:
        args.detector_seconds = 2.0 if args.quick else 20.0
    if args.detector_seconds < 0.1:
        p.error("--detector-seconds: at least 0.1")
    return args


def detector_cost(quick: bool) -> list[dict[str, float]]:
    rows = []
    for calls, seconds in ((1, 10.0), (100, 4.0)):
        cost = measure_cost(calls, 0.4 if quick else seconds)
        rows.append(
            {
                "calls": float(cost.calls),
                "frames": float(cost.frames),
                "cpu_us": cost.cpu_us - cost.harness_cpu_us,
                "wall_us": cost.wall_us - cost.harness_wall_us,
                "harness_cpu_us": cost.harness_cpu_us,
                "mean_batch": cost.mean_batch,
            }
        )
    return rows


async def run_accuracy(
    args: argparse.Namespace, report: Report, clips: list[Clip], llm: ScriptedLlmServer, auth: Auth | None
) -> None:
    opts = AccuracyOptions(agent_turn=args.agent_turn, noise_max_s=2.0 if args.quick else None)
    speech, noise = sample(clips, "speech", args.limit), sample(clips, "noise", args.limit)
    audio = {c.path: load_clip(c) for c in speech + noise}
    prime = load_clip(PRIME_CLIP) if opts.agent_turn == "llm" else None
    server = ServerProcess({"LLM_BASE_URL": llm.base_url, **accuracy_env(opts)}, auth)
    progress("accuracy: starting the server")
    await server.start()
    try:
        async with _edge(server, auth, args.idle_audio) as edge:
            runner = AccuracyRunner(server, edge, audio, prime, opts)
            for concurrency in args.concurrency:
                for provider in args.providers:
                    chosen = speech + noise if concurrency > 1 or args.noise_at_1 else speech
                    progress(f"  {provider} at {concurrency} call(s): {len(chosen)} clips")
                    phase = await runner.phase(provider, concurrency, chosen)
                    report.phases.append(phase)
                    progress(f"    done in {phase.meter['wall_s']:.0f} s")
    finally:
        report.servers.append(await _stop(server, "accuracy"))
    requests = llm.chat_requests
    report.llm = {
        "requests": len(requests),
        "completed": sum(r.completed for r in requests),
        "disconnected": sum(r.disconnected for r in requests),
    }


async def synth_stop_words() -> dict[str, I16]:
    """The stop-word stand-ins: espeak-ng in en-gb (the agent speaks en-us), slower and a few semitones lower."""
    from providers.tts.espeak import EspeakTts

    tts = EspeakTts(voice="en-gb", rate_wpm=150, end_pause=False)
    out: dict[str, I16] = {}
    for phrase in cond.STOP_PHRASES:
        pcm = (await tts.synthesize(phrase)).pcm.astype(np.float64)
        # Stretch by 1.2: played at 8 kHz it is 3 semitones lower than espeak's voice (and a little slower).
        pos = np.arange(0, len(pcm) - 1, 1 / 1.2)
        out[phrase.replace(" ", "_")] = np.clip(np.interp(pos, np.arange(len(pcm)), pcm), -32768, 32767).astype(
            np.int16
        )
    return out


async def labelled_speech() -> list[tuple[str, str, I16, str]]:
    """first_words' callers: the report set's recorded clips whose transcript is known (not the single digits:
    one word is a backchannel stand-in, resumed over), then the held-out phrases that stop the agent, spoken by
    a synthetic voice unlike the agent's; each with the embedded recognizer's text on the whole clip, outside
    any call: the ceiling the call path is measured against (a first word the recognizer mishears even there
    is the recognizer's miss, not the pre-roll's).

    Last, the report set's read sentences, whose transcripts we do not have, referenced by that same offline
    text (`selfref/`, reported apart): real voices, and a figure of the call path alone (pre-roll, cut,
    windowing), since a word the recognizer cannot hear on the clean clip is not in the reference either."""
    from app.bench.phrases import PHRASES
    from app.bench.stt import load_labelled, phone_leg, read_clips, synthesise_phrases
    from providers.stt.whisper import WhisperStt

    root = corpus_root()
    recorded = [(f"recorded/{name}", ref, pcm) for name, ref, pcm in load_labelled(root)
                if len(ref.split()) >= 2]
    texts = [text for text, kind in PHRASES if kind != "backchannel"]
    spoken = await synthesise_phrases(texts)
    items = recorded + [(f"synthetic/{t.replace(' ', '_')}", t, pcm) for t, pcm in zip(texts, spoken, strict=True)]
    unlabelled = [(f"selfref/{name}", pcm) for name, _, pcm in read_clips(root)]
    stt = WhisperStt(workers=1)
    try:
        offline = [(await stt.transcribe(phone_leg(pcm), "mulaw")).text for _, _, pcm in items]
        heard = [(await stt.transcribe(phone_leg(pcm), "mulaw")).text for _, pcm in unlabelled]
    finally:
        await stt.aclose()
    out = [(name, ref, pcm, text) for (name, ref, pcm), text in zip(items, offline, strict=True)]
    return out + [(name, text, pcm, text) for (name, pcm), text in zip(unlabelled, heard, strict=True)
                  if len(text.split()) >= 2]


async def run_conditions(
    args: argparse.Namespace, report: Report, clips: list[Clip], llm: ScriptedLlmServer, auth: Auth | None
) -> None:
    opts = AccuracyOptions(agent_turn=args.agent_turn, noise_max_s=2.0 if args.quick else None,
                           observe_s=cond.RESUME_WINDOW_S + 0.2)
    chosen = [cond.CONDITIONS[n] for n in args.conditions]
    speech, noise = sample(clips, "speech", args.limit), sample(clips, "noise", args.limit)
    words = [c for c in clips if c.category == "isolated_word"][: args.limit or None]
    step_speech = sample(clips, "speech", args.limit or cond.CONDITIONS["line_step_speech"].calls)
    audio = {c.path: load_clip(c) for c in {*speech, *noise, *words, *step_speech}}
    stop_words = await synth_stop_words() if any(c.caller == "stop_word" for c in chosen) else {}
    labelled = await labelled_speech() if any(c.caller == "labelled" for c in chosen) else []
    prime = load_clip(PRIME_CLIP) if opts.agent_turn == "llm" else None
    server = ServerProcess({"LLM_BASE_URL": llm.base_url, **accuracy_env(opts)}, auth)
    progress("conditions: starting the server")
    await server.start()
    try:
        async with _edge(server, auth, args.idle_audio) as edge:
            runner = AccuracyRunner(server, edge, audio, prime, opts)
            for c in chosen:
                # Stop words are heard by the recognizer after the agent resumed over them: stay long enough to
                # see their words stop it; and a noise's caller turn long enough to see the agent go on after it
                # (a turn without words: app/call/going_on.py).
                runner.options = (replace(opts, observe_s=cond.STOP_OBSERVE_S)
                                  if c.caller in ("stop_word", "labelled", "noise") else opts)
                sp = {"short_word": words, "line_step_speech": step_speech}.get(c.caller, speech)
                items = cond.items(c, sp, noise, audio, stop_words, args.limit, labelled=labelled)
                for concurrency in args.concurrency:
                    for provider in args.providers:
                        progress(f"  {c.name}: {provider} at {concurrency} call(s): {len(items)} calls")
                        phase = await runner.phase_items(provider, concurrency, items, c.name)
                        report.condition_phases.append(phase)
    finally:
        report.servers.append(await _stop(server, "conditions"))


async def run_hold_mode(
    args: argparse.Namespace, report: Report, clips: list[Clip], llm: ScriptedLlmServer, auth: Auth | None
) -> None:
    opts = HoldOptions.from_args(args)
    server = ServerProcess({"LLM_BASE_URL": llm.base_url, **hold_env(opts)}, auth)
    progress(f"hold: starting the server; {opts.calls} calls, {opts.seconds:.0f} s window")
    await server.start()
    try:
        async with _edge(server, auth) as edge:
            report.hold = await run_hold(server, edge, clips, opts)
    finally:
        report.servers.append(await _stop(server, "hold"))


async def run_fuzz_mode(
    args: argparse.Namespace, report: Report, clips: list[Clip], llm: ScriptedLlmServer, auth: Auth | None
) -> None:
    opts = FuzzOptions.from_args(args)
    speech = sample(clips, "speech", opts.calls)
    audio = {c.path: load_clip(c) for c in speech}
    server = ServerProcess({"LLM_BASE_URL": llm.base_url, **accuracy_env(AccuracyOptions())}, auth)
    progress("fuzz: starting the server")
    await server.start()
    try:
        report.fuzz = await run_fuzz(server, speech, audio, load_clip(PRIME_CLIP), opts)
    finally:
        report.servers.append(await _stop(server, "fuzz"))


def _edge(server: ServerProcess, auth: Auth | None, idle_audio: IdleAudio = "silence") -> EdgeEmulator:
    if auth is None:
        return EdgeEmulator(server.url, keep_audio=False, idle_audio=idle_audio)
    return EdgeEmulator(
        server.url, keep_audio=False, idle_audio=idle_audio, twilio_auth_token=auth.twilio_token,
        plivo_auth_token=auth.plivo_token,
    )


async def _stop(server: ServerProcess, role: str) -> dict[str, Any]:
    counts = server.log_counts()
    tail = server.log_tail(5) if counts["error"] or counts["traceback"] else ""
    code = await server.stop()
    server.cleanup()
    return {"role": role, "started_in_s": server.started_in_s, "exit": code, **counts, "log_tail": tail}


async def run(args: argparse.Namespace, cost: list[dict[str, float]], t0: float) -> Report:
    auth = Auth(secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(16)) if args.auth else None
    clips = read_manifest()
    n_speech, n_noise = len(sample(clips, "speech", args.limit)), len(sample(clips, "noise", args.limit))
    plan = [f"machine: {_machine()}"]
    if args.mode in ("accuracy", "all") and args.conditions:
        plan.append(f"accuracy conditions: {', '.join(args.conditions)} on {', '.join(args.providers)} at "
                    f"{', '.join(map(str, args.concurrency))} call(s)" + (f", at most {args.limit} calls each"
                                                                          if args.limit else ""))
        plan += [f"  {n}: {cond.CONDITIONS[n].summary}" for n in args.conditions]
    elif args.mode in ("accuracy", "all"):
        at = ", ".join(
            f"{c} call{'s' if c > 1 else ''}: {n_speech} speech"
            + (f" + {n_noise} noise" if c > 1 or args.noise_at_1 else "")
            for c in args.concurrency
        )
        plan.append(f"accuracy: {at} clips on each of {', '.join(args.providers)} (one call per clip)")
        plan.append(
            "  the caller interrupts "
            + (
                "an LLM reply (greeting off; one caller word starts the reply; "
                f"the loopback LLM streams {len(REPLY.split())} words, 40 ms apart)"
                if args.agent_turn == "llm"
                else "a long greeting (no LLM stream is open: 'LLM closed' is only the turn's cancellation)"
            )
        )
    if args.mode in ("accuracy", "all"):
        plan.append("  between its own audio the caller's line carries "
                    + ("a quiet line's hiss (-70 dBFS white noise)" if args.idle_audio == "hiss"
                       else "digital silence (every sample 0)"))
        if args.quick:
            plan.append("  --quick: noise clips cut to 2 s")
    if args.mode in ("hold", "all"):
        plan.append(
            f"hold: {args.hold_calls} calls on {', '.join(args.providers)} (alternating) x "
            f"{args.hold_seconds:g} s, agent talking, callers sending "
            + (f"steady noise ({', '.join(STEADY_CATEGORIES)})" if args.hold_caller == "noise"
               else "a quiet line (-60 dBFS hiss)")
        )
    if args.mode == "fuzz":
        plan.append(
            f"fuzz: {args.fuzz_calls} honest calls (corpus speech over an LLM reply) quiet, then beside "
            f"{args.fuzz_frames:,} hostile frames on {args.fuzz_connections} connections, then beside a 1 MB and "
            "twenty 100 KB media frames"
        )
    plan.append(
        "server: `python -m app.cli serve` in its own process (uvicorn, websockets-sansio, uvloop where installed), "
        + ("auth on (signed webhook first)" if auth else "insecure dev mode (no auth)")
    )
    report = Report(args=vars(args), plan=plan, inherited=inherited_settings(), cost=cost)
    try:
        async with ScriptedLlmServer([REPLY], token_delay_s=AccuracyOptions().token_delay_s) as llm:
            if args.mode in ("accuracy", "all") and args.conditions:
                await run_conditions(args, report, clips, llm, auth)
            elif args.mode in ("accuracy", "all"):
                await run_accuracy(args, report, clips, llm, auth)
            if args.mode in ("hold", "all"):
                await run_hold_mode(args, report, clips, llm, auth)
            if args.mode == "fuzz":
                await run_fuzz_mode(args, report, clips, llm, auth)
    except RuntimeError as exc:
        report.failed = str(exc)
    report.wall_s = time.monotonic() - t0
    return report


def _machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, {platform.system()}"


def to_json(report: Report) -> dict[str, Any]:
    data = asdict(report)
    if report.hold is not None:
        data["hold"] = asdict(report.hold)
    return cast(dict[str, Any], json.loads(json.dumps(data, default=str)))


def run_detector_mode(args: argparse.Namespace) -> int:
    """`--mode detector`: the table to stdout, and with --json every figure."""
    t0 = time.monotonic()
    load_before = os.getloadavg()
    progress(f"detector cost (in-process): {', '.join(map(str, args.detector_calls))} call(s) x "
             f"{args.detector_seconds:g} s, 3 runs each")
    rows = measure_detector(args.detector_calls, args.detector_seconds, progress=progress)
    load_after = os.getloadavg()
    text = render_detector(rows, args.detector_seconds)
    load = (f"load average (1, 5, 15 min) before {', '.join(f'{x:.2f}' for x in load_before)}, "
            f"after {', '.join(f'{x:.2f}' for x in load_after)}")
    print(f"machine: {_machine()}\n{load}\n{text}\nwall time: {time.monotonic() - t0:.0f} s", flush=True)
    if args.json:
        data = {"args": vars(args), "machine": _machine(), "load_before": load_before, "load_after": load_after,
                "detector": [asdict(r) for r in rows], "wall_s": time.monotonic() - t0}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, default=str)
        progress(f"JSON written to {args.json}")
    return 0


def main(argv: list[str]) -> int:
    # The recognizer's and the words' benches have options of their own: everything after `--mode stt` is theirs.
    for i, arg in enumerate(argv):
        mode = argv[i + 1] if arg == "--mode" and i + 1 < len(argv) else arg.removeprefix("--mode=")
        if mode in ("stt", "words", "turns", "burst") and (arg == "--mode" or arg.startswith("--mode=")):
            rest = argv[:i] + argv[i + (2 if arg == "--mode" else 1):]
            if mode == "stt":
                from app.bench.stt import main as stt_main

                return stt_main(rest)
            if mode == "burst":
                from app.bench.burst import main as burst_main

                return burst_main(rest)
            if mode == "turns":
                from app.bench.turns import main as turns_main

                return turns_main(rest)
            from app.bench.words import main as words_main

            return words_main(rest)
    args = parse_args(argv)
    if args.compare:
        return run_compare(args)
    if args.mode == "detector":
        return run_detector_mode(args)
    t0 = time.monotonic()
    cost: list[dict[str, float]] = []
    if not args.no_cost and args.mode != "fuzz":
        # measure_cost runs its own event loops, and runs alone: no server, no load generator
        progress("detector cost (in-process)")
        cost = detector_cost(args.quick)
    try:
        report = asyncio.run(run(args, cost, t0))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    text, summary = render(report)
    print(text, flush=True)
    if args.json:
        data = to_json(report)
        data["summary"] = summary
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        progress(f"JSON written to {args.json}")
    if report.failed:
        return 1
    runs = [r for p in report.phases + report.condition_phases for r in p.runs]
    connected = [r for r in runs if not (r.error or "").startswith("connect")]
    if (report.phases or report.condition_phases) and not connected:
        return 1
    return 0
