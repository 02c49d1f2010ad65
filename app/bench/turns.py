"""`bargein bench --mode turns`: the turn gap and talk-over, edge to edge, on the embedded defaults.

A call per clip, one at a time, on each provider, for each turn-taking policy (`--policies`: TURN_POLICY with
settings of its own, one server each): the agent says "Hello.", then the caller (a read sentence from the
corpus) speaks and falls silent. Two conditions (`--conditions`):

- `plain`: the sentence as read;
- `paused`: the same sentence with 600-1000 ms of silence inserted mid-sentence, at its quietest 60 ms between
  35% and 75% of its speech (a word gap: the first part stops mid-sentence, most often mid-clause). This stands
  in for a caller who stops to think in the middle of a sentence (the issue's "0.8 s pause inside one sentence").

The gap runs from the caller's final end of speech on the send clock (the frame holding the clip's last sample
above -40 dBFS) to the first agent audio the edge receives after it, behind the emulator's network (40 +/- 15
ms each way) unless `--no-network`. Talk-over: agent audio reached the edge after the greeting and before the
caller's final end of speech (Wilson 95% interval).

The breakdown is read from the calls' recordings (RECORD_DIR, one per call), per answered turn: the silence
from the caller's last speech to the turn's end (the VAD's turn-end silence, or under `progressive` the
deadline the words set), the recognizer, the wait an unfinished clause adds (strict), the LLM's first token,
the first piece's synthesis, the server's gap (last speech to the answer's first audio queued) and, from the
edge, what the network and the playback pacing add. Under `progressive` the recognizer, and part of the LLM
and synthesis, run inside the silence: the line says how much. The held replies' fates (spoken, or cancelled
because the caller went on: the restart rate) are counted from the server's log.

`--end-model off,smart_turn,prosody` runs every policy without and with the end-of-turn model (TURN_END_MODEL,
app/call/end_of_turn.py). With it, the server's log gives each ask's verdict and cost: the verdicts per
condition, the inference's wall time (queue wait apart) and its CPU (the worker thread's own time, which
contention does not inflate), and from the CPU the turn ends one core carries: per second, and at once within
the time from the ask to the strict silence (TURN_END_SILENCE_MS - TURN_SPECULATE_SILENCE_MS), after which a
late verdict no longer counts.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np

from app.bench.common import ServerProcess
from app.bench.stats import wilson
from app.call.events import (
    AudioQueued,
    CallEvent,
    LlmClosed,
    LlmOpened,
    LlmToken,
    Transcribed,
    TtsFinished,
    TtsStarted,
    TurnEnded,
    TurnStarted,
    from_dict,
)
from app.edge.emulator import EdgeEmulator
from app.edge.llm_server import ScriptedLlmServer
from app.edge.network import Network
from app.offline.corpus import corpus_root, dev_overlap, load_clip, read_manifest
from app.record.format import RecordingError, read_recording
from app.settings import Settings
from providers.llm.scripted import scripted_reply
from providers.mulaw import Pcm16

LOUD = 10 ** (-40 / 20) * 32768  # -40 dBFS: the clip's speech has ended after its last sample above this
AUDIO_EVENTS = ("media", "playAudio")


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


FRAME = 160  # 20 ms at 8 kHz
# Where the mid-sentence pause goes: a word gap between these fractions of the clip's speech, so there are
# words on both sides of it and the first part stops mid-sentence.
SPLIT_RANGE = (0.35, 0.75)
MIN_SPLIT_SPEECH_S = 1.2  # shorter speech has no middle to pause in
PAUSE_MS = (600.0, 1000.0)  # the inserted pause, spread evenly over the clips (the "0.8 s pause")


def pause_point(pcm: Pcm16) -> int | None:
    """The sample to insert a mid-sentence pause at: the middle of the quietest 60 ms (a word gap) within
    SPLIT_RANGE of the clip's speech; None when the speech is shorter than MIN_SPLIT_SPEECH_S."""
    n = len(pcm) // FRAME
    if n < 3:
        return None
    frames = pcm[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    energy = (frames * frames).mean(axis=1)
    loud = np.flatnonzero(energy > LOUD * LOUD)
    if len(loud) == 0 or (loud[-1] - loud[0]) * FRAME < MIN_SPLIT_SPEECH_S * 8000:
        return None
    first, last = int(loud[0]), int(loud[-1])
    lo = first + int((last - first) * SPLIT_RANGE[0])
    hi = first + int((last - first) * SPLIT_RANGE[1])
    smooth = np.convolve(energy, np.ones(3) / 3, mode="same")  # three frames: a gap, not a stop consonant
    best = lo + int(np.argmin(smooth[lo:hi]))
    return best * FRAME + FRAME // 2


def with_pause(pcm: Pcm16, pause_ms: float) -> tuple[Pcm16, int] | None:
    """The clip with `pause_ms` of silence inserted at its `pause_point`, and where the pause starts."""
    at = pause_point(pcm)
    if at is None:
        return None
    gap = np.zeros(round(pause_ms * 8), dtype=np.int16)
    return np.concatenate([pcm[:at], gap, pcm[at:]]).astype(np.int16), at


def pause_ms_for(index: int) -> float:
    """The pause inserted in the `index`-th clip: spread evenly over PAUSE_MS (deterministic, no draw)."""
    lo, hi = PAUSE_MS
    return lo + (hi - lo) * ((index * 0.618034) % 1.0)


Condition = Literal["plain", "paused"]
CONDITIONS: tuple[Condition, ...] = ("plain", "paused")


@dataclass
class CallResult:
    """One call as the edge saw it."""

    policy: str
    provider: str
    condition: Condition
    clip: str
    call_id: str
    gap_ms: float | None  # the caller's (final) end of speech to the first agent audio after it
    talked_over: bool  # agent audio reached the edge after the greeting and before the caller's end of speech
    pause_ms: float = 0.0


async def one_call(edge: EdgeEmulator, provider: Literal["twilio", "plivo"], pcm: Pcm16,
                   silence_s: float) -> tuple[str, float | None, bool]:
    """One call: the greeting, the caller's audio, the answer. Returns (call id, gap ms or None, talked over)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > LOUD)
    async with edge.call(provider) as call:
        await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 15)
        greeting_done = max((t for t, kind in call.received_events if kind in AUDIO_EVENTS), default=0.0)
        sent = await call.send_audio(pcm)
        speech_end = sent[min(int(loud[-1]) // FRAME, len(sent) - 1)] + 0.02
        await call.send_silence(silence_s)
        audio = [t for t, kind in call.received_events if kind in AUDIO_EVENTS and t > greeting_done]
        after = [t for t in audio if t > speech_end]
    over = any(t < speech_end for t in audio)
    return call.call_id, ((after[0] - speech_end) * 1000.0 if after else None), over


@dataclass
class TurnParts:
    """One answered caller turn's gap, taken apart from the call's recording (server clock, ms)."""

    call_id: str
    silence_ms: float  # the caller's last speech to the turn's end (the VAD's silence, or the policy's deadline)
    stt_ms: float  # the recognizer: request to words (under progressive: during the pause)
    wait_ms: float  # the turn's end (or its words, if later) to the answer's start: an unfinished clause's wait
    llm_ms: float  # the LLM request to its first token
    clause_ms: float  # the first token to the first piece (clause or sentence) handed to synthesis
    tts_ms: float  # the first piece's synthesis
    server_ms: float  # the caller's last speech to the answer's first audio handed to the outbox
    before_end_ms: float  # of the answer's LLM + synthesis, how much was done before the turn's end


def turn_parts(events: list[CallEvent], call_id: str, progressive: bool, heard_early: bool = False) -> TurnParts | None:
    """The last answered caller turn of a call's events (the one the edge's gap is about), taken apart.
    `heard_early`: strict with TURN_HEAR_EARLY, whose turns go on record when they end (their words were heard
    at the pause: the recognizer is inside the silence, and a turn whose words came later ended later)."""
    answered: tuple[TurnEnded, TurnStarted] | None = None
    last_user: TurnEnded | None = None
    for e in events:
        if isinstance(e, TurnEnded) and e.role == "user":
            last_user = e
        elif isinstance(e, TurnStarted) and e.role == "agent" and last_user is not None:
            answered, last_user = (last_user, e), None
    if answered is None:
        return None
    user, agent = answered
    if user.speech_end_t is None:
        return None
    tid = agent.turn_id
    heard = next((e for e in events if isinstance(e, Transcribed) and e.turn_id == user.turn_id), None)
    audio = next((e for e in events if isinstance(e, AudioQueued) and e.turn_id == tid), None)
    opened = next((e for e in events if isinstance(e, LlmOpened) and e.turn_id == tid), None)
    closed = next((e for e in events if isinstance(e, LlmClosed) and e.turn_id == tid), None)
    tts_on = next((e for e in events if isinstance(e, TtsStarted) and e.turn_id == tid), None)
    tts_off = next((e for e in events if isinstance(e, TtsFinished) and e.turn_id == tid), None)
    token = next((e for e in events if isinstance(e, LlmToken) and e.turn_id == tid), None)
    if audio is None or heard is None or token is None or closed is None or closed.first_token_at is None:
        return None
    # A recording's `t` counts from the stream's start, while the times events carry as fields (the end of
    # speech, the first token) are the call's clock: the first token is both, which gives the offset.
    offset = closed.first_token_at - token.t
    speech_end = user.speech_end_t - offset
    # strict: the turn is on record once its words are in, so it ended (the VAD's silence) a recognizer's time
    # before; progressive: it ended when the policy said so, its words long in.
    end = user.t if progressive or heard_early else user.t - heard.stt_ms / 1000.0
    wait_ms = 0.0 if progressive else max(0.0, agent.t - user.t) * 1000.0
    llm_ms = (token.t - opened.t) * 1000.0 if opened is not None else math.nan
    tts_ms = (tts_off.t - tts_on.t) * 1000.0 if tts_on is not None and tts_off is not None else math.nan
    ready = tts_off.t if tts_off is not None else audio.t
    started = opened.t if opened is not None else agent.t
    clause_ms = (tts_on.t - token.t) * 1000.0 if tts_on is not None else math.nan
    return TurnParts(
        call_id, (end - speech_end) * 1000.0, heard.stt_ms, wait_ms, llm_ms, clause_ms, tts_ms,
        (audio.t - speech_end) * 1000.0, max(0.0, min(ready, end) - started) * 1000.0,
    )


def read_parts(record_dir: Path, progressive: bool, heard_early: bool = False) -> dict[str, TurnParts]:
    parts: dict[str, TurnParts] = {}
    for path in record_dir.rglob("*.jsonl*"):
        try:
            rec = read_recording(path)
        except RecordingError:
            continue
        call_id = str(rec.header.get("call_id") or (rec.record or {}).get("call_id") or path.name.split(".")[0])
        events = [e for e in map(from_dict, rec.lines) if e is not None]
        got = turn_parts(events, call_id, progressive, heard_early)
        if got is not None:
            parts[call_id] = got
    return parts


# The session logs each held reply's fate (app/call/session.py), with the call id in the line's context.
_DRAFT_LINE = re.compile(r"call=(\S+) .*turn draft (cancelled|spoken)")
# ... and each end-of-turn model verdict, with its cost.
_MODEL_LINE = re.compile(r"call=(\S+) .*end-of-turn model: p=(\S+) in ([\d.]+) ms \(cpu ([\d.]+) ms, "
                         r"queued ([\d.]+) ms\) -> (\w+)")


@dataclass
class ModelAsk:
    """One end-of-turn model verdict from the server's log."""

    call_id: str
    p_complete: float | None
    infer_ms: float
    cpu_ms: float
    wait_ms: float
    verdict: str  # complete, incomplete or unsure (TURN_MODEL_* thresholds)


def model_asks(log: str) -> list[ModelAsk]:
    return [ModelAsk(m.group(1), None if m.group(2) == "none" else float(m.group(2)), float(m.group(3)),
                     float(m.group(4)), float(m.group(5)), m.group(6)) for m in _MODEL_LINE.finditer(log)]


def count_drafts(log: str, results: list[CallResult]) -> Drafts:
    """Per condition: held replies (cancelled, spoken), from the server's log."""
    condition_of = {r.call_id: r.condition for r in results}
    counts: dict[Condition, list[int]] = {c: [0, 0] for c in CONDITIONS}
    for match in _DRAFT_LINE.finditer(log):
        condition = condition_of.get(match.group(1))
        if condition is not None:
            counts[condition][0 if match.group(2) == "cancelled" else 1] += 1
    return {c: (n[0], n[1]) for c, n in counts.items()}


Drafts = dict[Condition, tuple[int, int]]  # per condition: held replies (cancelled, spoken)


async def run_policy(policy: str, clips: list[tuple[str, Pcm16]], providers: Sequence[str],
                     conditions: Sequence[Condition], network: bool, env: dict[str, str],
                     silence_s: float) -> tuple[list[CallResult], dict[str, TurnParts], Drafts, list[ModelAsk]]:
    """Every clip on every provider in every condition, on one server with TURN_POLICY=`policy`."""
    with tempfile.TemporaryDirectory(prefix="bargein-turns-") as record_dir:
        server = ServerProcess({"AGENT_GREETING": "Hello.", "TURN_POLICY": policy, "RECORD_DIR": record_dir,
                                "RECORD_REDACT": "audio", "LOG_LEVEL": "INFO"} | env)
        await server.start()
        results: list[CallResult] = []
        try:
            for condition in conditions:
                for provider in providers:
                    edge_network = Network.cloud_to_carrier() if network else None
                    async with EdgeEmulator(server.url, keep_audio=False, network=edge_network) as edge:
                        for i, (name, pcm) in enumerate(clips):
                            pause = 0.0
                            audio = pcm
                            if condition == "paused":
                                pause = pause_ms_for(i)
                                paused = with_pause(pcm, pause)
                                if paused is None:
                                    continue
                                audio = paused[0]
                            call_id, gap, over = await one_call(
                                edge, cast(Literal["twilio", "plivo"], provider), audio, silence_s)
                            results.append(CallResult(policy, provider, condition, name, call_id, gap, over, pause))
        finally:
            await server.stop()
            log = server.log_path.read_text("utf-8", "replace")
            drafts = count_drafts(log, results)
            asks = model_asks(log)
            server.cleanup()
        merged = Settings.model_fields["turn_hear_early"].default if "TURN_HEAR_EARLY" not in env \
            else env["TURN_HEAR_EARLY"].strip().lower() in ("1", "true", "yes", "on")
        heard_early = policy == "strict" and merged and env.get("TURN_END_MODEL", "off") == "off"
        return results, read_parts(Path(record_dir), policy == "progressive", heard_early), drafts, asks


def _mean(values: list[float]) -> float:
    kept = [v for v in values if v == v]
    return float(np.mean(kept)) if kept else float("nan")


def report_model(asks: list[ModelAsk], results: list[CallResult], budget_ms: float) -> None:
    """The end-of-turn model's verdicts per condition and its cost (from the server's log)."""
    condition_of = {r.call_id: r.condition for r in results}
    for condition in CONDITIONS:
        mine = [a for a in asks if condition_of.get(a.call_id) == condition]
        if mine:
            kinds = {k: sum(a.verdict == k for a in mine) for k in sorted({a.verdict for a in mine})}
            calls = len({a.call_id for a in mine})
            print(f"  end-of-turn model, {condition}: {len(mine)} verdicts in {calls} calls "
                  f"({', '.join(f'{k} {n}' for k, n in kinds.items())})")
    ran = [a for a in asks if a.p_complete is not None]  # a refused or failed ask cost nothing to speak of
    if not ran:
        print("  end-of-turn model: no inference in the log")
        return
    cpu = [a.cpu_ms for a in ran]
    wall = [a.infer_ms for a in ran]
    per_call = len(asks) / max(1, len({a.call_id for a in asks}))
    med = _pct(cpu, 50)
    print(f"  end-of-turn model cost: CPU p50 {med:.0f} ms, p95 {_pct(cpu, 95):.0f} ms per inference "
          f"({per_call:.1f} per call); wall p50 {_pct(wall, 50):.0f} ms, p95 {_pct(wall, 95):.0f} ms; "
          f"queued p95 {_pct([a.wait_ms for a in ran], 95):.0f} ms; {len(asks) - len(ran)} without an answer")
    print(f"  one core carries {1000.0 / med:.1f} turn ends a second, {int(budget_ms // med)} at once within the "
          f"{budget_ms:.0f} ms from the ask to the strict silence")


def report(policy: str, results: list[CallResult], parts: dict[str, TurnParts],
           drafts: Drafts, providers: Sequence[str], network: bool) -> None:
    where = "network 40 +/- 15 ms each way" if network else "loopback"
    for condition in CONDITIONS:
        rows = [r for r in results if r.condition == condition]
        if not rows:
            continue
        n = len(rows)
        over = sum(r.talked_over for r in rows)
        lo, hi = wilson(over, n)
        gaps = [r.gap_ms for r in rows if r.gap_ms is not None]
        what = ("read sentences" if condition == "plain" else
                f"read sentences with a {PAUSE_MS[0]:.0f}-{PAUSE_MS[1]:.0f} ms pause inserted mid-sentence")
        print(f"TURN_POLICY={policy}, {condition}: {n} calls ({', '.join(providers)}; {what}; {where})")
        print(f"  turn gap, edge to edge: p50 {_pct(gaps, 50):.0f} ms, p95 {_pct(gaps, 95):.0f} ms, "
              f"max {max(gaps, default=float('nan')):.0f} ms ({len(gaps)}/{n} answered)")
        for provider in providers:
            pg = [r.gap_ms for r in rows if r.provider == provider and r.gap_ms is not None]
            po = sum(r.talked_over for r in rows if r.provider == provider)
            pn = sum(1 for r in rows if r.provider == provider)
            print(f"    {provider}: p50 {_pct(pg, 50):.0f} ms, p95 {_pct(pg, 95):.0f} ms, talk-over {po}/{pn}")
        print(f"  talk-over (agent audio before the caller's final end of speech): {over}/{n} "
              f"({over / n:.1%}, 95% CI {lo:.1%}-{hi:.1%})"
              + (f": {', '.join(sorted({r.clip for r in rows if r.talked_over}))}" if over else ""))
        cancelled, spoken = drafts.get(condition, (0, 0))
        if policy.startswith("progressive"):
            rlo, rhi = wilson(min(cancelled, n), n)
            print(f"  held replies: {spoken} spoken, {cancelled} cancelled because the caller went on "
                  f"(restart rate {cancelled / n:.1%} of turns, 95% CI {rlo:.1%}-{rhi:.1%})")
        # Over the calls without talk-over: in the others the first audio after the end of speech may be the
        # rest of an answer to part of the turn.
        answered = [parts[r.call_id] for r in rows if r.call_id in parts and r.gap_ms is not None
                    and not r.talked_over]
        edge = {r.call_id: r.gap_ms for r in rows if r.gap_ms is not None}
        if answered:
            net = [edge[p.call_id] - p.server_ms for p in answered if edge.get(p.call_id) is not None]
            print(f"  breakdown (means over {len(answered)} answered turns, from the call recordings): "
                  f"silence to the turn's end {_mean([p.silence_ms for p in answered]):.0f} ms, "
                  f"recognizer {_mean([p.stt_ms for p in answered]):.0f} ms, "
                  f"unfinished-clause wait {_mean([p.wait_ms for p in answered]):.0f} ms, "
                  f"LLM first token {_mean([p.llm_ms for p in answered]):.0f} ms, "
                  f"then its first clause {_mean([p.clause_ms for p in answered]):.0f} ms, "
                  f"first TTS audio {_mean([p.tts_ms for p in answered]):.0f} ms, "
                  f"server's gap {_mean([p.server_ms for p in answered]):.0f} ms, "
                  f"network + pacing {_mean(net):.0f} ms")
            if policy.startswith("progressive"):
                print(f"    (progressive: the recognizer, and {_mean([p.before_end_ms for p in answered]):.0f} ms "
                      f"of the LLM + synthesis, ran inside the silence)")


def _setting(env: dict[str, str], name: str) -> float:
    """A numeric server setting as the bench's environment sets it, else its default."""
    return float(env.get(name.upper(), Settings.model_fields[name].default))


async def measure(calls: int, providers: Sequence[str], network: bool, policies: Sequence[str],
                  conditions: Sequence[Condition], env: dict[str, str], silence_s: float, external_llm: bool,
                  end_models: Sequence[str] = ("off",), corpus: Path | None = None, skip: int = 0) -> int:
    if external_llm:
        # The scripted LLM's own replies and pace, served from here: with LLM_BASE_URL set the server registers
        # no demo tools, so progressive turn taking drafts its replies (it never drafts with tools: a
        # speculative reply must not run a booking).
        pace = Settings.model_fields["embedded_llm_token_delay_ms"].default / 1000.0
        async with ScriptedLlmServer(scripted_reply, token_delay_s=pace) as llm:
            return await measure(calls, providers, network, policies, conditions,
                                 env | {"LLM_BASE_URL": llm.base_url}, silence_s, False, end_models, corpus, skip)
    # The report set by default (BARGEIN_CORPUS); `corpus` the tuning pool, less its clips that share a recording
    # with the report set (dev_overlap.csv). `skip` leaves the first clips out: a held-out part.
    root = corpus or corpus_root()
    overlap = dev_overlap(root)
    rows = [c for c in read_manifest(root) if c.kind == "speech" and c.category == "read"
            and c.path not in overlap][skip:skip + calls]
    clips = [(c.name, load_clip(c, root)) for c in rows]
    for spec in policies:
        for model in end_models:
            # "progressive:TURN_COMPLETE_SILENCE_MS=1000,..." runs a policy with settings of its own
            policy, _, extra = spec.partition(":")
            overrides = dict(item.split("=", 1) for item in extra.split(",") if item)
            if model != "off" or len(end_models) > 1:
                overrides = {"TURN_END_MODEL": model} | overrides
            label = spec if len(end_models) == 1 else f"{spec} TURN_END_MODEL={model}"
            results, parts, drafts, asks = await run_policy(policy, clips, providers, conditions, network,
                                                            env | overrides, silence_s)
            report(label, results, parts, drafts, providers, network)
            if model != "off":
                report_model(asks, results, _setting(env | overrides, "turn_end_silence_ms")
                             - _setting(env | overrides, "turn_speculate_silence_ms"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bargein bench --mode turns", description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=10, help="read sentences (one call each) per provider")
    p.add_argument("--providers", default="twilio,plivo", help="comma-separated: twilio, plivo")
    p.add_argument("--no-network", action="store_true", help="loopback without the emulator's network delay")
    p.add_argument("--policies", default="strict;progressive",
                   help="semicolon-separated TURN_POLICY values, each optionally with settings of its own: "
                        "'strict;progressive:TURN_COMPLETE_SILENCE_MS=1000,TURN_SPECULATE_SILENCE_MS=300'")
    p.add_argument("--conditions", default="plain,paused",
                   help="plain (the sentence as read) and/or paused (a 600-1000 ms pause inserted mid-sentence)")
    p.add_argument("--silence", type=float, default=3.0, help="seconds of silence the caller sends after speaking")
    p.add_argument("--external-llm", action="store_true",
                   help="the scripted LLM served from the bench (LLM_BASE_URL): no demo tools, so drafts run")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="server setting (repeatable)")
    p.add_argument("--end-model", default="off",
                   help="comma-separated TURN_END_MODEL values to run each policy with: off, smart_turn, prosody")
    p.add_argument("--corpus", type=Path, default=None,
                   help="corpus directory (default: BARGEIN_CORPUS, the report set); tune on ../shared/corpus-pool")
    p.add_argument("--skip", type=int, default=0, help="leave out the first SKIP read sentences (a held-out part)")
    args = p.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    conditions = [cast(Condition, c) for c in args.conditions.split(",") if c in CONDITIONS]
    return asyncio.run(measure(args.calls, args.providers.split(","), not args.no_network,
                               args.policies.split(";"), conditions, env, args.silence, args.external_llm,
                               args.end_model.split(","), args.corpus, args.skip))


if __name__ == "__main__":
    raise SystemExit(main())
