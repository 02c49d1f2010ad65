"""Offline evaluation of the echo guard: self-stops on echo-only calls, and double-talk detection.

Agent speech is espeak-ng TTS (8 kHz). Its echo comes back through `echo_path.echo_of` at each echo return
loss and delay (20 ms of drift). The existing detector (CallVad + batched Silero, on the fake arrival clock of
`evaluate.run_calls`) then hears

(a) echo-only calls: the raw echo, and the echo guard's cleaned output. Any SpeechStarted is a self-stop;
(b) double talk: a caller clip from the tuning pool (`/work/shared/corpus-pool`, never the report corpus)
    starting `--caller-at` seconds into the agent's speech, over the echo. Detection = a SpeechStarted
    within 1.5 s of the caller's speech onset; latency = that minus the onset. SpeechStarted before the
    onset counts as a self-stop.

The guard is causal and per frame, so running it over a call's audio first and the detector after is the
same as running both frame by frame.

    python -m app.offline.echo_eval [--limit N] [--caller-at S]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.bargein.echo import EchoConfig, EchoGuard
from app.bargein.silero import SileroBatcher, shared_model
from app.bargein.vad import FRAME, SAMPLE_RATE, CallVad, SpeechStarted, VadConfig
from app.offline.corpus import Clip, load_clip, read_manifest, white_noise
from app.offline.echo_path import echo_of, with_caller
from app.offline.evaluate import LINE_FLOOR_DBFS, run_calls
from providers.tts.espeak import EspeakTts

I16 = npt.NDArray[np.int16]
POOL = Path("/work/shared/corpus-pool")
ERLS_DB = (-6.0, -12.0, -18.0)
DELAYS_MS = (60.0, 150.0, 250.0)
DRIFT_MS = 20.0
LEAD_IN_S = 0.5
TAIL_S = 0.8
SEND_AHEAD_S = 0.2  # the outbox keeps about this much audio at the edge: played() learns of a chunk this early
CHUNK_S = 0.1
DETECT_WINDOW_S = 1.5

AGENT_TEXT = (
    "Thanks for calling the support line. I can see your order shipped on Monday, "
    "and it should arrive by Thursday afternoon. If you would like, I can also send you the tracking number "
    "by text message. Is there anything else I can help you with today?"
)


def agent_speech() -> I16:
    return asyncio.run(EspeakTts().synthesize(AGENT_TEXT)).pcm


def _timeline(agent: I16, extra_s: float = 0.0) -> I16:
    lead, tail = int(LEAD_IN_S * SAMPLE_RATE), int((TAIL_S + extra_s) * SAMPLE_RATE)
    return np.concatenate([np.zeros(lead, np.int16), agent, np.zeros(tail, np.int16)])


def _with_floor(pcm: I16) -> I16:
    floor = white_noise(len(pcm) / SAMPLE_RATE, LINE_FLOOR_DBFS, seed=1)
    out: I16 = np.clip(pcm.astype(np.int32) + floor[: len(pcm)], -32768, 32767).astype(np.int16)
    return out


def guarded(mic: I16, agent: I16, config: EchoConfig | None = None) -> tuple[I16, float]:
    """The guard's output for a call, the agent's audio fed in chunks as the outbox would send them.

    Returns the cleaned audio and the guard's mean cost in microseconds per active frame.
    """
    guard = EchoGuard(config)
    lead = int(LEAD_IN_S * SAMPLE_RATE)
    chunk = int(CHUNK_S * SAMPLE_RATE)
    out = np.empty(len(mic) // FRAME * FRAME, np.int16)
    next_chunk, spent, active = 0, 0.0, 0
    for k in range(len(mic) // FRAME):
        t = (k + 1) * FRAME / SAMPLE_RATE
        while next_chunk < len(agent) and (lead + next_chunk) / SAMPLE_RATE <= t + SEND_AHEAD_S:
            guard.played(agent[next_chunk : next_chunk + chunk], (lead + next_chunk) / SAMPLE_RATE)
            next_chunk += chunk
        t0 = time.perf_counter()
        cleaned, _ = guard.process(mic[k * FRAME : (k + 1) * FRAME], t)
        spent += time.perf_counter() - t0
        active += guard.active(t)
        out[k * FRAME : (k + 1) * FRAME] = cleaned
    return out, spent / max(active, 1) * 1e6


def pool_speech(limit: int) -> list[Clip]:
    """Tuning-pool speech clips, without those sharing a recording with the report corpus."""
    with open(POOL / "dev_overlap.csv", newline="", encoding="utf-8") as f:
        overlap = {row["path"] for row in csv.DictReader(f)}
    clips = [c for c in read_manifest(POOL) if c.kind == "speech" and c.path not in overlap]
    clips = [c for c in clips if c.speech_onset_s is not None and 1.0 <= c.duration_s <= 4.0]
    step = max(1, len(clips) // max(limit, 1))  # spread over speakers and styles, deterministically
    return clips[::step][:limit]


@dataclass
class Row:
    label: str
    calls: int = 0
    self_stops: int = 0  # SpeechStarted while only echo was present
    calls_stopped: int = 0
    detected: int = 0
    latencies_ms: list[float] | None = None

    def format(self) -> str:
        lat = self.latencies_ms or []
        det = f"{self.detected}/{self.calls}" if self.latencies_ms is not None else "-"
        p50 = f"{np.percentile(lat, 50):4.0f}" if lat else "   -"
        p95 = f"{np.percentile(lat, 95):4.0f}" if lat else "   -"
        return (
            f"{self.label:<34} self-stops {self.self_stops:>3} in {self.calls_stopped:>2}/{self.calls:<2} calls | "
            f"detected {det:>6} | latency p50 {p50} p95 {p95} ms"
        )


def _run(audio: Sequence[I16]) -> list[list[SpeechStarted]]:
    batcher = SileroBatcher(shared_model())
    vads = [CallVad(VadConfig(), batcher) for _ in audio]
    events = asyncio.run(run_calls(list(audio), vads))
    return [[e for e in evs if isinstance(e, SpeechStarted)] for evs in events]


def echo_only(agent: I16, costs: list[float]) -> list[Row]:
    full = _timeline(agent)
    raw, clean, labels = [], [], []
    for i, erl in enumerate(ERLS_DB):
        for j, delay in enumerate(DELAYS_MS):
            mic = _with_floor(echo_of(full, erl_db=erl, delay_ms=delay, drift_ms=DRIFT_MS, seed=10 * i + j))
            out, cost = guarded(mic, agent)
            costs.append(cost)
            raw.append(mic)
            clean.append(out)
            labels.append(erl)
    rows = []
    for name, audio in (("raw", raw), ("guard", clean)):
        starts = _run(audio)
        for erl in ERLS_DB:
            row = Row(f"echo only, ERL {erl:+.0f} dB, {name}")
            for lab, st in zip(labels, starts, strict=True):
                if lab == erl:
                    row.calls += 1
                    row.self_stops += len(st)
                    row.calls_stopped += bool(st)
            rows.append(row)
    return rows


def double_talk(agent: I16, clips: Sequence[Clip], caller_at_s: float, costs: list[float]) -> list[Row]:
    full = _timeline(agent, extra_s=4.0)
    offset = int((LEAD_IN_S + caller_at_s) * SAMPLE_RATE)
    raw, clean, meta = [], [], []
    for i, erl in enumerate(ERLS_DB):
        for n, clip in enumerate(clips):
            delay = DELAYS_MS[n % len(DELAYS_MS)]
            echo = echo_of(full, erl_db=erl, delay_ms=delay, drift_ms=DRIFT_MS, seed=100 * i + n)
            mic = _with_floor(with_caller(echo, load_clip(clip, POOL), offset))
            out, cost = guarded(mic, agent)
            costs.append(cost)
            raw.append(mic)
            clean.append(out)
            assert clip.speech_onset_s is not None
            meta.append((erl, offset / SAMPLE_RATE + clip.speech_onset_s))
    rows = []
    for name, audio in (("raw", raw), ("guard", clean)):
        starts = _run(audio)
        for erl in ERLS_DB:
            row = Row(f"double talk, ERL {erl:+.0f} dB, {name}", latencies_ms=[])
            for (lab, onset), st in zip(meta, starts, strict=True):
                if lab != erl:
                    continue
                row.calls += 1
                early = [e for e in st if e.at < onset]
                row.self_stops += len(early)
                row.calls_stopped += bool(early)
                hit = next((e for e in st if onset <= e.at <= onset + DETECT_WINDOW_S), None)
                if hit is not None:
                    row.detected += 1
                    assert row.latencies_ms is not None
                    row.latencies_ms.append((hit.at - onset) * 1000)
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.offline.echo_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=6, help="caller clips per ERL for double talk")
    parser.add_argument("--caller-at", type=float, default=3.0, help="caller starts this far into the agent's speech")
    args = parser.parse_args(argv)
    agent = agent_speech()
    costs: list[float] = []
    t0 = time.perf_counter()
    rows = echo_only(agent, costs)
    rows += double_talk(agent, pool_speech(args.limit), args.caller_at, costs)
    print(f"agent speech {len(agent) / SAMPLE_RATE:.1f} s; delays {DELAYS_MS} ms, drift {DRIFT_MS:g} ms")
    for row in rows:
        print(row.format())
    print(
        f"echo guard cost: {np.mean(costs):.1f} us per active 20 ms frame (mean over calls, this host); "
        f"run took {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
