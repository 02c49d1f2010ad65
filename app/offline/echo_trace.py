"""Per-call trace of double talk on an echo line: when the clear goes out, and why it took that long.

Theory of operation
-------------------
`echo_eval --live-checks` counts candidates through the session's two checks, but it does not run the policy:
a candidate the second look calls noise is simply dropped there, where the session holds it (DOUBTED_PENDING)
and clears once it outlasts `doubt_max_ms`. This module runs each call the way `app/call/interruption.py` does
under the speakerphone preset: every caller frame through the echo guard and CallVad, each SpeechStarted into
`BargeInPolicy` as a `Candidate` (echo share read as the session reads it, when the guard is trusted), the second
look (`Verdict`) once the candidate's window is in, `Paused` / `Progress` / `TurnEnd` as the VAD reports them.
The first PAUSE or STOP is the clear; the call ends there (after a clear the agent's audio, and so its echo,
would stop, which a precomputed caller leg cannot show).

Each double-talk call then gets a reason for its latency (the clear minus the clip's speech onset):

- `vouched`: the guard vouched for the candidate, the clear went out as it was raised;
- `confirmed`: no vouching; the clear waited for the second look (speech);
- `doubted`: the second look said noise (or echo, of a vouched one): the clear waited for `doubt_max_ms`;
- `late-candidate`: the caller's first candidate was turned away (echo, short) and a later one cleared;
- `vad-late`: how long after the onset the cleared candidate's speech start lies (the guard attenuating the
  caller's first frames, or the first syllable too weak) is printed for every call;
- `missed`: no clear within the detection window.

Times are the fake arrival clock's (`echo_eval.arrivals`); the guard and the detector are the real ones, the
guard built as the speakerphone preset builds it (`coherence_always`). `--short-first GAP_S` opens the reply as
the bench's LLM reply does ("Sure.", a gap, the rest), which is what the bench's callers talk over; `--false N`
adds echo-only calls and N pool noise clips over the echo through the same policy (any clear is false).

    python -m app.offline.echo_trace [--limit N] [--caller-at S] [--erl DB ...] [--words] [--short-first GAP_S]
                                     [--false N] [--policy F=V ...] [--vad F=V ...] [--set F=V ...] [--verbose]

What it found (issue 12, the double-talk tail; pool, 60 sentences at -6 dB, caller clip 0.3 s into the reply):
with the plain reply p50 123 ms, p95 808 ms, 55/60; the slow calls are a first candidate the second look calls
echo (re-armed; the next one is vouched ~50-150 ms later), or the detector's first candidate coming 200 ms to
1.2 s after the onset. With the bench's reply (`--short-first 0.1`) p50 297, p95 606 ms, and most of it is the
latter: the caller's first word lands on the echo of "Sure." and Silero stays under its threshold (the raw
line, no guard, does the same). Live (bench recordings replayed through the guard), the multi-second tail is
the guard itself: before its filter converges, a caller a few dB under the echo reads as all echo and is
turned down 30 dB, for seconds; no candidate at all until the filter converges or the agent pauses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from app.bargein import impulse
from app.bargein.detector import (
    Action,
    BargeInPolicy,
    Candidate,
    Paused,
    PolicyConfig,
    Progress,
    TurnEnd,
    Verdict,
)
from app.bargein.echo import ECHO_REJECT_SHARE, EchoConfig, EchoGuard, GccBudget
from app.bargein.silero import SileroBatcher, shared_model
from app.bargein.vad import FRAME, SAMPLE_RATE, CallVad, SpeechPaused, SpeechStarted, SpeechStopped, VadConfig
from app.offline import echo_eval as ev
from app.offline.corpus import Clip, load_clip
from app.offline.echo_path import echo_of, with_caller


@dataclass
class Trace:
    """One call: the policy's steps (time, observation, action, reason) and the first clear."""

    steps: list[tuple[float, str, str, str]] = field(default_factory=list)
    candidates: list[tuple[float, float, float | None]] = field(default_factory=list)  # (start, raised, share)
    clear_at: float | None = None
    clear_start: float | None = None  # the cleared candidate's speech start
    clear_how: str = ""


async def _run(mics: Sequence[ev.I16], agent: ev.I16, policy: PolicyConfig, reject: float,
               config: EchoConfig | None, vad_config: VadConfig | None = None) -> list[Trace]:
    batcher = SileroBatcher(shared_model())
    guards = [EchoGuard(config, GccBudget()) for _ in mics]
    vads = [CallVad(vad_config or VadConfig(), batcher) for _ in mics]
    pols = [BargeInPolicy(policy) for _ in mics]
    pauses: list[list[SpeechPaused]] = [[] for _ in mics]
    for vad_, told in zip(vads, pauses, strict=True):
        vad_.on_pause = told.append
    traces = [Trace() for _ in mics]
    sent = [0] * len(mics)
    agent_end = ev.LEAD_IN_S + len(agent) / SAMPLE_RATE
    steps = max(len(m) for m in mics) // FRAME
    times = ev.arrivals(steps, ev.JITTER_SEED)

    def decide(i: int, event: Candidate | Verdict | Paused | Progress | TurnEnd) -> None:
        pol, tr = pols[i], traces[i]
        step = pol.feed(event)
        tr.steps.append((event.at, step.observation.value, step.action.value, step.reason))
        if step.action is Action.REARM:
            vads[i].rearm(event.at)
        if step.action in (Action.PAUSE, Action.STOP) and tr.clear_at is None:
            tr.clear_at, tr.clear_start = event.at, pol.speech_start
            tr.clear_how = f"{step.previous.value}/{step.observation.value}"

    def second_look(i: int, now: float) -> Verdict:
        guard, vad, start = guards[i], vads[i], pols[i].speech_start
        if guard.echo_share(start, now) > reject and (guard.delay is not None or guard.echo_evident(now)):
            return Verdict(now, "echo")
        pcm, probs = vad.candidate()
        scored = [p for p in probs[: impulse.window_probabilities()] if p == p]
        return Verdict(now, "speech" if impulse.is_speech(pcm[: impulse.window_samples()], scored) else "noise")

    for k in range(steps):
        t = float(times[k])
        live = [i for i, m in enumerate(mics) if (k + 1) * FRAME <= len(m) and traces[i].clear_at is None]
        if not live:
            break
        cleaned = ev.guarded_frames(guards, mics, agent, sent, live, k, t)
        results = await asyncio.gather(*(vads[i].feed(c, t) for i, c in zip(live, cleaned, strict=True)))
        for i, evs in zip(live, results, strict=True):
            guard, vad = guards[i], vads[i]
            for e in evs:
                if isinstance(e, SpeechStarted):
                    start = vad.speech_started_at
                    speech_start = t - e.sustained_ms / 1000.0 if start is None else start
                    possible = guard.echo_seen and guard.active(t)
                    share = guard.echo_share(speech_start, t) if possible and guard.trusted else None
                    traces[i].candidates.append((speech_start, t, share))
                    decide(i, Candidate(t, speech_start, agent_speaking=t < agent_end + 0.3,
                                        echo_possible=possible, echo_share=share))
                elif isinstance(e, SpeechStopped):
                    decide(i, TurnEnd(t))
            while pauses[i]:
                pause = pauses[i].pop(0)
                decide(i, Paused(pause.at, pause.speech_ms))
            pol = pols[i]
            if pol.awaiting_verdict and (vad.candidate_samples >= impulse.window_samples()
                                         or pol.needs_verdict(t, impulse.WINDOW_MS / 1000.0 + 0.1)):
                decide(i, second_look(i, t))
            if pol.timing and vad.speaking:
                decide(i, Progress(t, vad.speech_ms))
    return traces


def reason(tr: Trace, caller_start: float, onset: float) -> str:
    """Why the clear came when it did (module docstring)."""
    if tr.clear_at is None or tr.clear_at > onset + ev.DETECT_WINDOW_S:
        return "missed"
    if tr.clear_at < caller_start:
        return "self-stop"
    first_in = next((c for c in tr.candidates if c[1] >= caller_start - 1e-9 or c[0] >= caller_start), None)
    late = first_in is not None and first_in[0] != tr.clear_start
    how = {"idle/candidate_vouched": "vouched", "pending/speech": "confirmed"}.get(tr.clear_how, "doubted")
    return f"late-candidate+{how}" if late else how


Row = tuple[str, float, str, float | None, Trace]  # clip, ERL, reason, latency ms (None: none), trace


def run(agent: ev.I16, clips: Sequence[Clip], caller_at_s: float, erls: Sequence[float], policy: PolicyConfig,
        reject: float = ECHO_REJECT_SHARE, vad_config: VadConfig | None = None) -> list[Row]:
    """Double-talk calls (as echo_eval.checked_rows makes them) through the policy: (clip, erl, reason,
    latency ms, trace) per call."""
    full = ev._timeline(agent, extra_s=4.0)
    offset = int((ev.LEAD_IN_S + caller_at_s) * SAMPLE_RATE)
    mics: list[ev.I16] = []
    meta: list[tuple[str, float, float]] = []
    for i, erl in enumerate(ev.ERLS_DB):
        if erl not in erls:
            continue
        for n, clip in enumerate(clips):
            delay = ev.DELAYS_MS[n % len(ev.DELAYS_MS)]
            echo = echo_of(full, erl_db=erl, delay_ms=delay, drift_ms=ev.DRIFT_MS, seed=100 * i + n)
            mics.append(ev._with_floor(with_caller(echo, load_clip(clip, ev.POOL), offset)))
            assert clip.speech_onset_s is not None
            meta.append((clip.path, erl, offset / SAMPLE_RATE + clip.speech_onset_s))
    traces = asyncio.run(_run(mics, agent, policy, reject, ev.CONFIG, vad_config))
    out = []
    for (path, erl, onset), tr in zip(meta, traces, strict=True):
        why = reason(tr, offset / SAMPLE_RATE, onset)
        ms = None if tr.clear_at is None or why in ("missed", "self-stop") else (tr.clear_at - onset) * 1000
        out.append((path, erl, why, ms, tr))
    return out


def false_clears(agent: ev.I16, noise: Sequence[Clip], echo_seeds: int, noise_at_s: float,
                 policy: PolicyConfig, reject: float = ECHO_REJECT_SHARE,
                 vad_config: VadConfig | None = None) -> tuple[int, int, int, int]:
    """Echo-only calls (each ERL and delay, `echo_seeds` rooms) and pool noise over the echo at -6 dB from
    `noise_at_s` (as echo_eval.checked_rows makes them) through the policy: (echo-only calls with a clear, calls,
    noise calls with a clear, calls). Any clear there is false."""
    full = ev._timeline(agent, extra_s=1.0)
    mics: list[ev.I16] = []
    kinds: list[str] = []
    for i, erl in enumerate(ev.ERLS_DB):
        for j, delay in enumerate(ev.DELAYS_MS * echo_seeds):
            seed = 10 * i + j + 100 * (j // len(ev.DELAYS_MS))
            mics.append(ev._with_floor(echo_of(full, erl_db=erl, delay_ms=delay, drift_ms=ev.DRIFT_MS, seed=seed)))
            kinds.append("echo")
    offset = int((ev.LEAD_IN_S + noise_at_s) * SAMPLE_RATE)
    for n, clip in enumerate(noise):
        delay = ev.DELAYS_MS[n % len(ev.DELAYS_MS)]
        echo = echo_of(full, erl_db=-6.0, delay_ms=delay, drift_ms=ev.DRIFT_MS, seed=300 + n)
        mics.append(ev._with_floor(with_caller(echo, load_clip(clip, ev.POOL), offset)))
        kinds.append("noise")
    traces = asyncio.run(_run(mics, agent, policy, reject, ev.CONFIG, vad_config))
    echoed = [tr.clear_at is not None for k, tr in zip(kinds, traces, strict=True) if k == "echo"]
    noisy = [tr.clear_at is not None for k, tr in zip(kinds, traces, strict=True) if k == "noise"]
    return sum(echoed), len(echoed), sum(noisy), len(noisy)


def print_traces(rows: Sequence[Row], onset_of: dict[str, float],
                 verbose: bool = False) -> None:
    for path, erl, why, lat, tr in rows:
        onset = onset_of[path]
        vad = "" if tr.clear_start is None else f" start {(tr.clear_start - onset) * 1000:+5.0f}"
        lats = "   -" if lat is None else f"{lat:4.0f}"
        shares = " ".join("-" if s is None else f"{s:.2f}" for _, _, s in tr.candidates[-3:])
        print(f"{erl:+.0f} dB {lats} ms {why:<26}{vad} | cands {len(tr.candidates)} shares {shares} | {path}")
        if verbose and (lat is None or lat > 250):
            for c0, c1, sh in tr.candidates:
                print(f"      candidate start {(c0 - onset) * 1000:+5.0f} raised {(c1 - onset) * 1000:+5.0f} "
                      f"share {sh}")
            for at, obs, act, why_ in tr.steps:
                if obs != "nothing":
                    print(f"      {(at - onset) * 1000:+6.0f} ms {obs:<22} {act:<8} {why_}")
    every = [r[3] for r in rows if r[3] is not None]
    for erl in sorted({r[1] for r in rows}, reverse=True):
        sub = [r[3] for r in rows if r[1] == erl and r[3] is not None]
        n = sum(r[1] == erl for r in rows)
        if sub:
            print(f"ERL {erl:+.0f} dB: detected {len(sub)}/{n}, p50 {np.percentile(sub, 50):.0f} "
                  f"p95 {np.percentile(sub, 95):.0f} ms, within 250 ms {sum(x <= 250 for x in sub)}")
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[r[2]] = kinds.get(r[2], 0) + 1
    print("reasons:", ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())), f"| all p95 "
          f"{np.percentile(every, 95) if every else float('nan'):.0f} ms")


def main(argv: Sequence[str] | None = None) -> None:
    import argparse
    import dataclasses
    import time

    parser = argparse.ArgumentParser(prog="python -m app.offline.echo_trace", description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20, help="caller clips per ERL")
    parser.add_argument("--caller-at", type=float, default=0.3, help="caller starts this far into the reply")
    parser.add_argument("--erl", type=float, action="append", default=[], help="ERL(s) in dB (default -6)")
    parser.add_argument("--words", action="store_true", help="isolated words (FSDD digits), not sentences")
    parser.add_argument("--policy", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a PolicyConfig field (speakerphone: policy=confirm)")
    parser.add_argument("--short-first", type=float, default=0.0, metavar="GAP_S",
                        help="the reply opens as the bench's does: a short word ('Sure.'), GAP_S of silence, the rest")
    parser.add_argument("--vad", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a VadConfig field (e.g. onset_threshold=0.8)")
    parser.add_argument("--false", type=int, default=0, metavar="N",
                        help="also echo-only calls (4 rooms) and N pool noise clips over the echo: false clears")
    parser.add_argument("--noise-at", type=float, default=0.3, help="--false: noise starts this far into the reply")
    parser.add_argument("--verbose", action="store_true", help="every step of the calls over 250 ms")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override an EchoConfig field")
    args = parser.parse_args(argv)
    ev.CONFIG = ev._config(["coherence_always=true", *args.set])  # as the speakerphone preset builds the guard
    changes: dict[str, object] = {"policy": "confirm"}
    base = PolicyConfig()
    for item in args.policy:
        name, _, value = item.partition("=")
        kind = type(getattr(base, name))
        changes[name] = value if kind is str else kind(value)
    policy = dataclasses.replace(base, **changes)  # type: ignore[arg-type]
    vad_changes: dict[str, object] = {}
    for item in args.vad:
        name, _, value = item.partition("=")
        kind = type(getattr(VadConfig(), name))
        vad_changes[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    vad_config = dataclasses.replace(VadConfig(), **vad_changes)  # type: ignore[arg-type]
    clips = ev.pool_words(args.limit) if args.words else ev.pool_speech(args.limit)
    t0 = time.perf_counter()
    agent = ev.agent_speech()
    if args.short_first:
        import asyncio as aio

        from providers.tts.espeak import EspeakTts
        sure = aio.run(EspeakTts().synthesize("Sure.")).pcm
        agent = np.concatenate([sure, np.zeros(round(args.short_first * SAMPLE_RATE), np.int16), agent])
    rows = run(agent, clips, args.caller_at, args.erl or [-6.0], policy,
               vad_config=vad_config)
    print_traces(rows, {c.path: args.caller_at + ev.LEAD_IN_S + (c.speech_onset_s or 0.0) for c in clips},
                 args.verbose)
    if args.false:
        e, en, n, nn = false_clears(agent, ev.pool_noise(args.false), 4, args.noise_at, policy, vad_config=vad_config)
        print(f"false clears: echo only {e}/{en} calls, noise over echo {n}/{nn} calls")
    print(f"run took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
