"""Offline barge-in evaluation on the corpus, and the detector's cost per call.

Clips are fed as a caller's leg would carry them: mu-law round trip, 20 ms frames, a fake arrival clock
(frame k of a call arrives at (k + 1) * 20 ms), after a lead-in of quiet line noise so Silero's state is
warm when the clip starts. Several calls run concurrently on one event loop, so the batcher is exercised
exactly as in the server. Nothing sleeps; a whole-corpus run takes seconds.

Scores: detection rate and decision latency on speech (SpeechStarted.at minus the clip's speech onset on
the same clock), and false stops on noise (any SpeechStarted during a noise clip), per category, in total
and on the five steady categories.

    python -m app.offline.evaluate [--limit N] [--threshold T] [--min-speech-ms MS] [--sweep] [--cost]

Line conditions for the adaptive noise floor (vad.py, noise_floor.py): `--quiet-db -40` (a quiet talker:
every speech clip scaled to that active level), `--noise engine` (a noisy line under the speech for the
whole call), `--noise-bed` (noise clips play from the start of the call, looped, after a 2.5 s lead-in of
themselves: steady noise alone on a line), `--step-noise white|pink` (hiss band-limited to 300-3400 Hz
stepping from -60 to -35 dBFS at 1.0 s under every call, plus hiss-only calls scored as noise). Fit on the
training pool, never on the report corpus: `--corpus ../shared/corpus-pool` (its dev_overlap.csv clips are
dropped). `--floor-sweep` tables snr_db x floor_window_ms with the model scored once.

`--second-phase` runs Silero's second phase (phases.py); `--phrases tuning|report` scores synthetic stop words
instead of the corpus (espeak-ng as the bench makes them: `tuning` = app/bench/tuning_phrases.py's stop phrases in
its voices, for tuning; `report` = the bench's own stop words, for reporting only), each call started at
PHRASE_OFFSETS different sample offsets, so the words fall at every position relative to Silero's windows.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.bargein.silero import F32, WINDOW, SileroBatcher, SileroModel, SileroStream, WindowScorer
from app.bargein.vad import FRAME, SAMPLE_RATE, CallVad, SpeechStarted, VadConfig, VadEvent
from app.offline.corpus import (
    STEADY_CATEGORIES,
    Clip,
    as_received,
    corpus_root,
    dev_overlap,
    load_clip,
    mix_at_snr,
    pink_noise,
    read_manifest,
    telephone_band,
    white_noise,
)

I16 = npt.NDArray[np.int16]
FRAME_S = FRAME / SAMPLE_RATE
LEAD_IN_S = 0.5
TAIL_S = 0.3
LINE_FLOOR_DBFS = -70.0  # a quiet but not digitally silent line under every call
BED_LEAD_IN_S = 2.5  # with a noise bed or a hiss step: the line is heard this long before the clip
STEP_AT_S = 1.0  # the hiss steps up here (1.5 s before the clip starts)
STEP_FROM_DBFS, STEP_TO_DBFS = -60.0, -35.0
STEP_CATEGORY = "hiss_step"  # the synthetic hiss-only calls of --step-noise
SYNTHETIC = "synthetic/"


@dataclass(frozen=True)
class Condition:
    """What the caller's line does to a clip before the server sees it (besides mu-law)."""

    phone_band: bool = False  # 300-3400 Hz channel (telephone_band)
    noise: str | None = None  # a noise category mixed under the speech clips, for the whole call
    snr_db: float = 10.0
    quiet_db: float | None = None  # speech clips scaled to this active level (dBFS): a quiet talker
    noise_bed: bool = False  # noise clips fill the call from its start (looped), after a long lead-in
    step_noise: str | None = None  # "white" / "pink": hiss stepping from -60 to -35 dBFS under every call
    shift: int = 0  # samples added to the lead-in: where the clip falls relative to Silero's windows (--offsets)
    # The quiet lead-in before a clip (LEAD_IN_S unless set; a noise bed or a hiss step keeps its own): a bench
    # call's caller speaks after seconds of the agent talking, and the second phase waits one floor window.
    lead_s: float | None = None

    @property
    def lead_in_s(self) -> float:
        base = BED_LEAD_IN_S if self.noise_bed or self.step_noise else (self.lead_s or LEAD_IN_S)
        return base + self.shift / SAMPLE_RATE

    def label(self) -> str:
        parts = ["phone-band" if self.phone_band else "as recorded"]
        if self.quiet_db is not None:
            parts.append(f"speech at {self.quiet_db:g} dBFS")
        if self.noise:
            parts.append(f"+ {self.noise} at {self.snr_db:g} dB SNR")
        if self.noise_bed:
            parts.append("+ noise clips as a bed from the call's start")
        if self.step_noise:
            parts.append(f"+ {self.step_noise} hiss {STEP_FROM_DBFS:g} -> {STEP_TO_DBFS:g} dBFS at {STEP_AT_S:g} s")
        return " ".join(parts)


def active_level(pcm: I16) -> float:
    """RMS of the louder half of the 20 ms frames (as mix_at_snr measures speech), as a linear amplitude."""
    x = pcm[: len(pcm) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME)
    energy = (x**2).mean(axis=1)
    return float(np.sqrt(energy[energy >= np.median(energy)].mean())) if len(energy) else 0.0


def hiss_step(n: int, kind: str, seed: int) -> I16:
    """Band-limited hiss that steps from STEP_FROM_DBFS to STEP_TO_DBFS at STEP_AT_S, n samples long."""
    make = white_noise if kind == "white" else pink_noise
    at = int(STEP_AT_S * SAMPLE_RATE)

    def part(seconds: float, level: float, seed: int) -> I16:
        # band-limit, then set the level: the levels are what the line carries, after the band limit
        x = telephone_band(make(seconds + 0.001, -20.0, seed=seed)).astype(np.float64)
        rms = float(np.sqrt(np.mean(x * x))) or 1.0
        return np.clip(np.round(x * (32768.0 * 10 ** (level / 20) / rms)), -32768, 32767).astype(np.int16)

    lo = part(STEP_AT_S, STEP_FROM_DBFS, seed)
    hi = part(max(0.0, (n - at) / SAMPLE_RATE), STEP_TO_DBFS, seed + 1)
    # each part is band-limited on its own and then joined: the step stays a step
    return np.concatenate([lo[:at], hi])[:n]


def step_clips(count: int, kinds: Sequence[str] = ("white", "pink"), seconds: float = 5.0) -> list[Clip]:
    """Hiss-only calls for --step-noise: no clip audio, only the condition's hiss step."""
    return [
        Clip(f"{SYNTHETIC}{STEP_CATEGORY}_{k}_{i:02d}.wav", "noise", STEP_CATEGORY, seconds, None, "synthetic")
        for k in kinds
        for i in range(count)
    ]


def read_clips(root: Path | None = None) -> list[Clip]:
    """The manifest without the clips its dev_overlap.csv lists (present in the training pool only)."""
    root = root or corpus_root()
    clips = read_manifest(root)
    dropped = dev_overlap(root)
    return [c for c in clips if c.path not in dropped]


def call_audio(clip: Clip, condition: Condition = Condition(), noise_clips: Sequence[Clip] = ()) -> I16:
    """Lead-in + the clip + a short tail on one call's timeline, through the condition and mu-law."""
    if clip.path.startswith(SYNTHETIC):
        pcm = np.zeros(int(clip.duration_s * SAMPLE_RATE), np.int16)
    else:
        pcm = load_clip(clip)
    if condition.quiet_db is not None and clip.kind == "speech":
        gain = 32768.0 * 10 ** (condition.quiet_db / 20) / (active_level(pcm) or 1.0)
        pcm = np.clip(np.round(pcm * gain), -32768, 32767).astype(np.int16)
    lead, tail = round(condition.lead_in_s * SAMPLE_RATE), int(TAIL_S * SAMPLE_RATE)
    if condition.noise_bed and clip.kind == "noise" and not clip.path.startswith(SYNTHETIC):
        y = np.resize(pcm, lead + len(pcm) + tail)
    else:
        y = np.concatenate([np.zeros(lead, np.int16), pcm, np.zeros(tail, np.int16)])
    if condition.step_noise:
        hiss = hiss_step(len(y), condition.step_noise, seed=zlib.crc32(clip.path.encode()) % 100_000)
        y = np.clip(y.astype(np.int32) + hiss, -32768, 32767).astype(np.int16)
    if condition.noise and clip.kind == "speech":
        source = next((c for c in noise_clips if c.category == condition.noise), None)
        if source is None:
            raise ValueError(f"no noise clip of category {condition.noise!r}")
        y = mix_at_snr(y, load_clip(source), condition.snr_db, reference=pcm)
    if condition.phone_band:
        y = telephone_band(y)
    floor = white_noise((len(y) + 1) / SAMPLE_RATE, LINE_FLOOR_DBFS, seed=1)  # +1: int() of the float rounds down
    y = np.clip(y.astype(np.int32) + floor[: len(y)], -32768, 32767).astype(np.int16)
    return as_received(y)


async def run_calls(audio: Sequence[I16], vads: Sequence[CallVad]) -> list[list[VadEvent]]:
    """Feed each call its audio in 20 ms frames, all calls in lock step on the fake clock."""
    events: list[list[VadEvent]] = [[] for _ in audio]
    steps = max(len(a) for a in audio) // FRAME
    for k in range(steps):
        now = (k + 1) * FRAME_S
        live = [i for i, a in enumerate(audio) if (k + 1) * FRAME <= len(a)]
        results = await asyncio.gather(
            *(vads[i].feed(audio[i][k * FRAME : (k + 1) * FRAME], now) for i in live)
        )
        for i, evs in zip(live, results, strict=True):
            events[i].extend(evs)
    return events


@dataclass(frozen=True)
class ClipOutcome:
    clip: Clip
    starts: tuple[SpeechStarted, ...]
    onset_at: float | None  # speech onset on the call clock

    @property
    def fired(self) -> bool:
        return bool(self.starts)

    @property
    def latency_ms(self) -> float | None:
        if self.onset_at is None or not self.starts:
            return None
        return (self.starts[0].at - self.onset_at) * 1000


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Report:
    config: VadConfig
    outcomes: list[ClipOutcome]
    batch_mean: float = 0.0
    condition: Condition = Condition()

    @property
    def speech(self) -> list[ClipOutcome]:
        return [o for o in self.outcomes if o.clip.kind == "speech"]

    @property
    def noise(self) -> list[ClipOutcome]:
        return [o for o in self.outcomes if o.clip.kind == "noise"]

    @property
    def detection_rate(self) -> float:
        s = self.speech
        return sum(o.fired for o in s) / len(s) if s else float("nan")

    @property
    def latencies_ms(self) -> list[float]:
        return [lat for o in self.speech if (lat := o.latency_ms) is not None]

    def latency(self, q: float) -> float:
        return _pct(self.latencies_ms, q)

    @property
    def false_stop_rate(self) -> float:
        n = self.noise
        return sum(o.fired for o in n) / len(n) if n else float("nan")

    @property
    def steady_stops(self) -> tuple[int, int]:
        steady = [o for o in self.noise if o.clip.category in STEADY_CATEGORIES]
        return sum(o.fired for o in steady), len(steady)

    def by_category(self) -> dict[str, tuple[int, int]]:
        table: dict[str, tuple[int, int]] = {}
        for o in self.noise:
            fired, total = table.get(o.clip.category, (0, 0))
            table[o.clip.category] = (fired + o.fired, total + 1)
        return dict(sorted(table.items()))

    def summary_row(self) -> str:
        c = self.config
        sf, st = self.steady_stops
        nf = sum(o.fired for o in self.noise)
        return (
            f"thr={c.silero_threshold:.2f} rel={c.silero_release:.2f} guard={c.min_speech_ms:>3.0f}ms "
            f"gate={c.energy_gate_dbfs:.0f} snr={c.snr_db:g} floor={c.floor_window_ms:.0f}ms "
            f"webrtc={'m' + str(c.webrtc_mode) if c.use_webrtc else 'off'} "
            f"onset={f'{c.onset_threshold:g}x{c.onset_windows}' if c.onset_threshold else 'off'} "
            f"phase2={f'on/{c.second_phase_warmup_ms:g}ms' if c.second_phase else 'off'} | "
            f"detect {self.detection_rate * 100:5.1f}% | lat p50 {self.latency(50):4.0f} "
            f"p95 {self.latency(95):4.0f} max {self.latency(100):4.0f} ms | "
            f"false stops {nf}/{len(self.noise)} ({self.false_stop_rate * 100:4.1f}%) steady {sf}/{st}"
        )

    def format(self) -> str:
        lines = [f"condition: {self.condition.label()}", self.summary_row(), ""]
        missed = [o.clip.name for o in self.speech if not o.fired]
        lines.append(f"speech: {len(self.speech)} clips, missed: {', '.join(missed) or 'none'}")
        lines.append("noise false stops by category:")
        for cat, (fired, total) in self.by_category().items():
            mark = "  steady" if cat in STEADY_CATEGORIES else ""
            lines.append(f"  {cat:<18} {fired}/{total}{mark}")
        fired_names = [o.clip.name for o in self.noise if o.fired]
        lines.append(f"noise clips that fired: {', '.join(fired_names) or 'none'}")
        if self.batch_mean:
            lines.append(f"mean Silero batch: {self.batch_mean:.1f} windows")
        return "\n".join(lines)


def _outcome(clip: Clip, events: list[VadEvent], lead_in_s: float) -> ClipOutcome:
    starts = tuple(e for e in events if isinstance(e, SpeechStarted))
    onset = None if clip.speech_onset_s is None else lead_in_s + clip.speech_onset_s
    return ClipOutcome(clip=clip, starts=starts, onset_at=onset)


def prepare_audio(
    clips: Sequence[Clip], condition: Condition = Condition(), noise_clips: Sequence[Clip] | None = None
) -> dict[str, I16]:
    """Each clip's call audio under `condition`, keyed by clip path."""
    pool = list(noise_clips) if noise_clips is not None else (read_clips() if condition.noise else [])
    return {c.path: call_audio(c, condition, pool) for c in clips}


async def _evaluate(
    config: VadConfig,
    clips: Sequence[Clip],
    audio: dict[str, I16],
    scorer_for: Callable[[Clip], WindowScorer],
    concurrency: int,
    lead_in_s: float = LEAD_IN_S,
) -> list[ClipOutcome]:
    outcomes: list[ClipOutcome] = []
    for start in range(0, len(clips), concurrency):
        group = clips[start : start + concurrency]
        vads = [CallVad(config, scorer_for(c)) for c in group]
        events = await run_calls([audio[c.path] for c in group], vads)
        outcomes.extend(_outcome(c, e, lead_in_s) for c, e in zip(group, events, strict=True))
    return outcomes


def evaluate(
    config: VadConfig,
    clips: Sequence[Clip] | None = None,
    model: SileroModel | None = None,
    concurrency: int = 16,
    condition: Condition = Condition(),
) -> Report:
    """Run clips through CallVad and the real batched model; `concurrency` calls share each batch."""
    clips = list(clips) if clips is not None else read_manifest()
    audio = prepare_audio(clips, condition)
    batcher = SileroBatcher(model or SileroModel())
    outcomes = asyncio.run(_evaluate(config, clips, audio, lambda _c: batcher, concurrency, condition.lead_in_s))
    return Report(config=config, outcomes=outcomes, batch_mean=batcher.stats.mean_batch, condition=condition)


# --- fast sweeps: Silero's output does not depend on the config, so score each window once -------------


class ReplayScorer:
    """Returns recorded Silero probabilities in order: lets a sweep rerun every layer but the model.

    The recording is phase A's (the call's first stream); a second phase's windows (another stream) are
    scored by the real model as they come, in order, when `model` is given."""

    def __init__(self, probs: Sequence[float], model: SileroBatcher | None = None) -> None:
        self._probs = list(probs)
        self._next = 0
        self._first: SileroStream | None = None
        self._model = model

    def _replayed(self, stream: SileroStream) -> bool:
        if self._first is None:
            self._first = stream
        return stream is self._first

    async def infer(self, stream: SileroStream, window: F32) -> float:
        if not self._replayed(stream):
            if self._model is None:
                raise RuntimeError("a second phase needs ReplayScorer(model=...)")
            return self._model.infer_now(stream, window)
        prob = self._probs[self._next]
        self._next += 1
        return prob

    def defer(self, stream: SileroStream, window: F32) -> None:
        if not self._replayed(stream):
            if self._model is not None:
                self._model.infer_now(stream, window)
            return
        self._next += 1


def score_audio(audio: dict[str, I16], model: SileroModel | None = None) -> dict[str, list[float]]:
    """Silero probability of every window of every call (same framing and state as CallVad)."""
    batcher = SileroBatcher(model or SileroModel())
    scores: dict[str, list[float]] = {}
    for path, pcm in audio.items():
        x = pcm.astype(np.float32) * np.float32(1 / 32768)
        stream = SileroStream()
        scores[path] = [
            batcher.infer_now(stream, x[i * WINDOW : (i + 1) * WINDOW]) for i in range(len(x) // WINDOW)
        ]
    return scores


def sweep(
    configs: Sequence[VadConfig],
    clips: Sequence[Clip],
    condition: Condition = Condition(),
    model: SileroModel | None = None,
) -> list[Report]:
    """Evaluate many configs on one condition, running the model once per window instead of per config."""
    audio = prepare_audio(clips, condition)
    scores = score_audio(audio, model)
    live = SileroBatcher(model or SileroModel())  # the second phase's windows, if a config has one
    reports = []
    for config in configs:
        outcomes = asyncio.run(
            _evaluate(config, clips, audio, lambda c: ReplayScorer(scores[c.path], live), 32, condition.lead_in_s)
        )
        reports.append(Report(config=config, outcomes=outcomes, condition=condition))
    return reports


# --- synthetic stop words -----------------------------------------------------------------------------

PHRASE_OFFSETS = 16  # each phrase call is run this many times, its start shifted by WINDOW / 16 samples each


async def synth_phrases(which: str) -> dict[str, I16]:
    """Stop phrases spoken by espeak-ng as the bench makes them (name -> 8 kHz samples): `tuning` (tuning
    phrases x tuning voices) or `report` (the bench's stop words, en-gb lowered 1.2x: never tune on these)."""
    from app.bench.conditions import STOP_PHRASES
    from app.bench.tuning_phrases import TUNING_PHRASES, TUNING_VOICES
    from providers.tts.espeak import EspeakTts

    if which == "report":
        jobs = [(p, "en-gb", 150, 1.2) for p in STOP_PHRASES]
    else:
        jobs = [(p, v, r, k) for p, kind in TUNING_PHRASES if kind == "stop" for v, r, k in TUNING_VOICES]
    out: dict[str, I16] = {}
    for phrase, voice, rate, stretch in jobs:
        pcm = (await EspeakTts(voice=voice, rate_wpm=rate, end_pause=False).synthesize(phrase)).pcm.astype(np.float64)
        pos = np.arange(0, len(pcm) - 1, 1 / stretch)
        y = np.clip(np.interp(pos, np.arange(len(pcm)), pcm), -32768, 32767).astype(np.int16)
        out[f"{phrase.replace(' ', '_')}@{voice}"] = y
    return out


def phrase_onset_s(pcm: I16) -> float:
    """Start of the first 20 ms frame within 35 dB of the loudest (the bench's rule for synthetic audio)."""
    x = pcm[: len(pcm) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME)
    if not len(x):
        return 0.0
    db = 10 * np.log10((x**2).mean(axis=1) + 1.0)
    return float(np.nonzero(db >= db.max() - 35.0)[0][0]) * FRAME_S


PHRASE_LEAD_S = 1.5  # as in a bench call, the caller speaks after the call has gone on a while


def evaluate_phrases(
    config: VadConfig,
    phrases: dict[str, I16],
    model: SileroModel,
    quiet_db: float | None = None,
    lead_s: float = PHRASE_LEAD_S,
) -> Report:
    """Each phrase as a caller's call (lead-in, the phrase, a tail, the line floor, mu-law), at PHRASE_OFFSETS
    start offsets; scored as speech clips named phrase+offset."""
    clips, audio = [], {}
    for name, pcm in phrases.items():
        if quiet_db is not None:
            pcm = np.clip(np.round(pcm * (32768.0 * 10 ** (quiet_db / 20) / (active_level(pcm) or 1.0))),
                          -32768, 32767).astype(np.int16)
        for k in range(PHRASE_OFFSETS):
            shift = k * WINDOW // PHRASE_OFFSETS
            lead = np.zeros(round(lead_s * SAMPLE_RATE) + shift, np.int16)
            y = np.concatenate([lead, pcm, np.zeros(int(TAIL_S * SAMPLE_RATE), np.int16)])
            floor = white_noise((len(y) + 1) / SAMPLE_RATE, LINE_FLOOR_DBFS, seed=1)
            y = as_received(np.clip(y.astype(np.int32) + floor[: len(y)], -32768, 32767).astype(np.int16))
            path = f"{SYNTHETIC}{name}+{shift}"
            onset = shift / SAMPLE_RATE + phrase_onset_s(pcm)
            clips.append(Clip(path, "speech", "stop_word", len(y) / SAMPLE_RATE, onset, "synthetic"))
            audio[path] = y
    batcher = SileroBatcher(model)
    outcomes = asyncio.run(_evaluate(config, clips, audio, lambda _c: batcher, 16, lead_s))
    return Report(config=config, outcomes=outcomes, batch_mean=batcher.stats.mean_batch)


def phrase_table(report: Report) -> str:
    """Per phrase: the offsets that started speech, and the latency over them."""
    rows: dict[str, list[ClipOutcome]] = {}
    for o in report.outcomes:
        rows.setdefault(o.clip.path[len(SYNTHETIC) :].rsplit("+", 1)[0], []).append(o)
    lines = [report.summary_row()]
    for name, outs in rows.items():
        lat = [x for o in outs if (x := o.latency_ms) is not None]
        lines.append(f"  {name:<34} {sum(o.fired for o in outs):>2}/{len(outs)} offsets"
                     f"  lat p50 {_pct(lat, 50):4.0f} max {_pct(lat, 100):4.0f} ms")
    return "\n".join(lines)


# --- cost --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    calls: int
    frames: int  # per call
    wall_us: float  # per call per 20 ms frame, detector and harness
    cpu_us: float
    harness_wall_us: float  # the same harness with a detector that does nothing
    harness_cpu_us: float
    mean_batch: float
    windows_per_call_s: float = 0.0  # Silero windows run (scored or deferred) per call per second of audio

    def format(self) -> str:
        return (
            f"{self.calls:>4} calls: {self.wall_us - self.harness_wall_us:6.1f} us wall, "
            f"{self.cpu_us - self.harness_cpu_us:6.1f} us CPU per call per 20 ms frame "
            f"(with harness {self.wall_us:.1f} / {self.cpu_us:.1f}; mean batch {self.mean_batch:.1f}; "
            f"{self.windows_per_call_s:.1f} Silero windows per call-second)"
        )


@dataclass
class _Harness:
    """One long-lived task per call woken by its own queue, like the server's per-socket receive loop."""

    feeds: list[Callable[[I16, float], object]]
    audio: list[I16]
    frames: int
    done: list[asyncio.Future[None]] = field(default_factory=list)
    # Called every `every` frames of audio: this harness runs faster than real time, so the batcher's
    # real-time lazy flush of deferred windows is driven from here at the pace it would run live.
    periodic: Callable[[], None] | None = None
    every: int = 5

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        queues: list[asyncio.Queue[tuple[I16, float]]] = [asyncio.Queue() for _ in self.feeds]
        remaining = 0
        step_done: asyncio.Future[None] = loop.create_future()

        async def call(i: int) -> None:
            nonlocal remaining, step_done
            while True:
                frame, now = await queues[i].get()
                result = self.feeds[i](frame, now)
                if asyncio.iscoroutine(result):
                    await result
                remaining -= 1
                if remaining == 0:
                    step_done.set_result(None)

        tasks = [asyncio.create_task(call(i)) for i in range(len(self.feeds))]
        for k in range(self.frames):
            now = (k + 1) * FRAME_S
            remaining = len(self.feeds)
            step_done = loop.create_future()
            for i, q in enumerate(queues):
                a = self.audio[i]
                j = k % (len(a) // FRAME)
                q.put_nowait((a[j * FRAME : (j + 1) * FRAME], now))
            await step_done
            if self.periodic is not None and (k + 1) % self.every == 0:
                self.periodic()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def measure_cost(
    calls: int,
    seconds: float = 4.0,
    config: VadConfig | None = None,
    model: SileroModel | None = None,
    clips: Sequence[Clip] | None = None,
) -> Cost:
    """Microseconds per call per 20 ms frame with `calls` concurrent calls (speech and noise mixed)."""
    config = config or VadConfig()
    model = model or SileroModel()
    pool = list(clips) if clips is not None else read_manifest()
    # Interleave speech and noise so the cost includes both quiet and busy frames.
    speech = [c for c in pool if c.kind == "speech"][:8]
    noise = [c for c in pool if c.kind == "noise"][::12][:8]
    sources = [call_audio(c) for c in itertools.chain(*zip(speech, noise, strict=False))] or [
        white_noise(5.0, -40.0)
    ]
    audio = [np.roll(sources[i % len(sources)], i * 997) for i in range(calls)]
    frames = int(seconds / FRAME_S)

    def timed(feeds: list[Callable[[I16, float], object]], drain: Callable[[], None] = lambda: None) -> tuple[
        float, float
    ]:
        harness = _Harness(feeds=feeds, audio=audio, frames=frames, periodic=drain)
        w0, c0 = time.perf_counter(), time.process_time()
        asyncio.run(harness.run())
        drain()  # windows below the energy gate were deferred: their model runs count too
        w1, c1 = time.perf_counter(), time.process_time()
        scale = 1e6 / (calls * frames)
        return (w1 - w0) * scale, (c1 - c0) * scale

    def noop(frame: I16, now: float) -> None:
        return None

    batcher = SileroBatcher(model)
    vads = [CallVad(config, batcher) for _ in range(calls)]
    # warm-up: the first runs of a session allocate
    asyncio.run(_Harness(feeds=[v.feed for v in vads], audio=audio, frames=10).run())
    batcher.drain_deferred()
    batcher.stats = type(batcher.stats)()
    wall, cpu = timed([v.feed for v in vads], batcher.drain_deferred)
    h_wall, h_cpu = timed([noop] * calls)
    per_call_s = batcher.stats.windows / (calls * frames * FRAME_S)
    return Cost(calls, frames, wall, cpu, h_wall, h_cpu, batcher.stats.mean_batch, per_call_s)


# --- command line ------------------------------------------------------------------------------------

SWEEP_POINTS = (
    (0.7, 96), (0.8, 64), (0.8, 96), (0.8, 128), (0.85, 64), (0.85, 96),
    (0.9, 32), (0.9, 64), (0.9, 96), (0.95, 64),
)  # fmt: skip


FLOOR_SWEEP_POINTS = (
    (0, 1000), (6, 1000), (10, 1000), (12, 1000), (15, 1000), (20, 1000),
    (10, 600), (10, 1500), (15, 600), (15, 1500),
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m app.offline.evaluate", description=__doc__.splitlines()[0]
    )
    d = VadConfig()
    parser.add_argument("--limit", type=int, default=0, help="use the first N speech and N noise clips")
    parser.add_argument("--threshold", type=float, default=d.silero_threshold)
    parser.add_argument("--release", type=float, default=d.silero_release)
    parser.add_argument("--min-speech-ms", type=float, default=d.min_speech_ms)
    parser.add_argument("--gate-dbfs", type=float, default=d.energy_gate_dbfs)
    parser.add_argument("--webrtc-mode", type=int, default=None, help="enable the webrtcvad layer (0..3)")
    parser.add_argument(
        "--phone-band", action="store_true", help="pass every clip through a 300-3400 Hz channel"
    )
    parser.add_argument("--noise", default=None, help="mix this noise category under the speech clips")
    parser.add_argument("--snr", type=float, default=10.0, help="speech-to-noise ratio for --noise, in dB")
    parser.add_argument("--snr-db", type=float, default=d.snr_db, help="floor SNR to start speech (0: off)")
    parser.add_argument("--floor-window-ms", type=float, default=d.floor_window_ms)
    parser.add_argument("--onset-threshold", type=float, default=d.onset_threshold, help="slow onset path (0: off)")
    parser.add_argument("--onset-windows", type=int, default=d.onset_windows)
    parser.add_argument("--onset-gate", type=float, default=d.onset_gate, help="the slow path's gate (0: none)")
    parser.add_argument("--quiet-db", type=float, default=None, help="scale speech clips to this active dBFS")
    parser.add_argument("--noise-bed", action="store_true", help="noise clips play from the call's start")
    parser.add_argument("--step-noise", choices=("white", "pink"), default=None, help="hiss -60 -> -35 dBFS")
    parser.add_argument("--step-calls", type=int, default=20, help="hiss-only calls per kind with --step-noise")
    parser.add_argument("--corpus", default=None, help="corpus directory (default: BARGEIN_CORPUS or ../shared)")
    parser.add_argument("--floor-sweep", action="store_true", help="snr_db x floor_window_ms (model scored once)")
    parser.add_argument("--sweep", action="store_true", help="threshold x guard table (model scored once)")
    parser.add_argument("--cost", action="store_true", help="also measure cost at 1 and 100 calls")
    parser.add_argument("--second-phase", action="store_true", help="Silero's second phase (phases.py)")
    parser.add_argument("--offsets", type=int, default=1, help="run every clip at N shifts within a window")
    parser.add_argument("--lead-in", type=float, default=None, help=f"quiet line before each clip, s ({LEAD_IN_S})")
    parser.add_argument("--warmup-ms", type=float, default=d.second_phase_warmup_ms, help="its warm-up")
    parser.add_argument("--second-threshold", type=float, default=d.second_phase_threshold,
                        help="phase B's own threshold (0: --threshold)")
    parser.add_argument("--phrases", choices=("tuning", "report"), default=None,
                        help="score synthetic stop phrases (tuning: for tuning; report: the bench's, never tune)")
    args = parser.parse_args(argv)

    config = replace(
        d,
        silero_threshold=args.threshold,
        silero_release=min(args.release, args.threshold),
        min_speech_ms=args.min_speech_ms,
        energy_gate_dbfs=args.gate_dbfs,
        use_webrtc=args.webrtc_mode is not None,
        webrtc_mode=args.webrtc_mode if args.webrtc_mode is not None else d.webrtc_mode,
        snr_db=args.snr_db,
        floor_window_ms=args.floor_window_ms,
        onset_threshold=args.onset_threshold,
        onset_windows=args.onset_windows,
        onset_gate=args.onset_gate,
        second_phase=args.second_phase,
        second_phase_warmup_ms=args.warmup_ms,
        second_phase_threshold=args.second_threshold,
    )
    condition = Condition(
        phone_band=args.phone_band,
        noise=args.noise,
        snr_db=args.snr,
        quiet_db=args.quiet_db,
        noise_bed=args.noise_bed,
        step_noise=args.step_noise,
        lead_s=args.lead_in,
    )
    if args.corpus:
        os.environ["BARGEIN_CORPUS"] = args.corpus  # load_clip and corpus_root read it
    clips = read_clips()
    if args.limit:
        # spread over the manifest (it is sorted by category and speaker), not its first rows
        speech = [c for c in clips if c.kind == "speech"]
        noise = [c for c in clips if c.kind == "noise"]
        speech = speech[:: max(1, len(speech) // args.limit)][: args.limit]
        clips = speech + noise[:: max(1, len(noise) // args.limit)][: args.limit]
    if args.step_noise:
        clips += step_clips(args.step_calls, kinds=(args.step_noise,))
    model = SileroModel()
    if args.phrases:
        phrases = asyncio.run(synth_phrases(args.phrases))
        print(phrase_table(evaluate_phrases(config, phrases, model, args.quiet_db, args.lead_in or PHRASE_LEAD_S)))
    elif args.floor_sweep:
        configs = [replace(config, snr_db=snr, floor_window_ms=w) for snr, w in FLOOR_SWEEP_POINTS]
        print(f"condition: {condition.label()}")
        for report in sweep(configs, clips, condition, model):
            print(report.summary_row())
    elif args.sweep:
        configs = [
            replace(config, silero_threshold=t, min_speech_ms=g, silero_release=min(config.silero_release, t))
            for t, g in SWEEP_POINTS
        ]
        print(f"condition: {condition.label()}")
        for report in sweep(configs, clips, condition, model):
            print(report.summary_row())
    else:
        report = evaluate(config, clips, model, condition=condition)
        for k in range(1, args.offsets):  # the same calls with the clips shifted by a fraction of a window
            shifted = evaluate(config, clips, model, condition=replace(condition, shift=k * WINDOW // args.offsets))
            report.outcomes += shifted.outcomes
        print(report.format())
    if args.cost:
        for calls in (1, 100):
            print(measure_cost(calls, config=config, model=model).format())


if __name__ == "__main__":
    main()
