"""`bargein bench --mode stt`: the embedded recogniser's word error, cost per turn, and callers served in real time.

Theory of operation
-------------------
Everything runs in this process on `providers.stt.whisper.WhisperStt`, no server, no sockets (this measures the
recogniser, not the transport). Audio reaches it as the call path delivers it: 8 kHz mu-law.

1. Word error on spoken test phrases: `PHRASES` (things callers say to a booking line, interruptions among
   them) synthesised by espeak-ng with the `en-gb` voice (the agent speaks `en-us`, so the caller's voice is
   not the agent's), at 8 kHz, through the mu-law round trip. Synthetic speech: clean, but robotic.
2. Word error on real recorded speech for which a reference transcript is known: in the corpus pool
   (`../shared/corpus-pool`), the Free Spoken Digit Dataset clips (the digit is in the source file name) and
   the J. F. Kennedy excerpts (the well-known sentence, cut at the manifest's times); in the report set
   (`../shared/corpus`), the same two kinds. The LibriSpeech clips are chunks cut at pauses from utterances
   whose transcripts are not in either folder, so they are not scored. Nothing is tuned on any of this: the
   engine runs with fixed settings, and the report set is only measured.
3. Cost per turn: CPU seconds (`time.process_time`, the whole process, as nothing else runs in it meanwhile;
   CTranslate2 computes on threads of its own) and wall seconds for turns of 1, 3 and 6 s
   of speech, each repeated, one at a time on an otherwise idle pool.
4. Callers in real time: N callers, each ending a 3 s turn every 6 s (staggered evenly), submit their turn to
   one engine (STT_WORKERS threads) at the real time its turn ends, for `cycles` cycles. The latency of a turn
   is turn end -> its Final. N is carried when the queue does not grow: the least-squares trend of latency
   over the run adds less than GROWTH_LIMIT_S (1 s) from first turn to last. The p50/p95 latencies are printed
   beside it; on a shared machine they include time lost to other processes (the load average is printed).
   The CPU bound is also printed: cores x 6 s / CPU seconds per 3 s turn, for recognition alone.

5. Short vs full encoder window (`--window both`, the default; `STT_WHISPER_WINDOW`): parts 1-4 run once per
   window, in one process, so the figures compare within one run. As the labelled sets are small, the short
   window's text is also compared with the full window's on unlabelled read-speech clips (the report set's
   LibriSpeech chunks, and every tenth of the pool's), the full window's text taken as the reference: a word
   difference rate, not a word error rate.
6. The command-word hint (`--hint on`, the engine's default; providers/stt/whisper_hint.py) is a second decode of
   short clips that sound like speech: `--hint off` measures the engine without it, for the same figures.

WER is (substitutions + deletions + insertions) / reference words, summed over the set, after normalising both
sides (lower case, punctuation dropped, digits spelled out).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import statistics
import sys
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from app.bench.common import fmt, pct, progress, table
from providers.mulaw import Pcm16, pcm16_to_ulaw, ulaw_to_pcm16
from providers.stt.whisper import WhisperStt
from providers.stt.whisper_hint import COMMAND_HINT, Hint

# Spoken test phrases: what callers say to a booking and support line, including interruptions.
PHRASES: tuple[str, ...] = (
    "Hi, I'd like to book a table for two people tomorrow evening.",
    "What time do you open on Saturday?",
    "Can I change my appointment to next Thursday?",
    "No, wait, that's not what I said.",
    "Sorry, could you say that again?",
    "I need to cancel my reservation.",
    "Actually, make that four people instead of two.",
    "Is there parking near the restaurant?",
    "Hold on a second.",
    "Yes, that sounds good to me.",
    "My account number is three four seven nine.",
    "Stop, I don't need that.",
    "Can you send me a confirmation by email?",
    "I'm calling about the order I placed last week.",
    "How much does the delivery cost?",
    "Please transfer me to a real person.",
    "That's all, thank you very much.",
    "Wait, what was the address again?",
    "I would prefer the morning if possible.",
    "Do you have any vegetarian options on the menu?",
)
PHRASE_VOICE = "en-gb"

# The J. F. Kennedy excerpt (whisper's tests/jfk.flac): its words, and which of them each cut holds, by the
# times in the manifests' `source` column. The pool cuts the last clause at 8.92 s inside "ask what ...", so
# its clips 004 and 005 are scored together, as one hypothesis against their joint reference.
_JFK: dict[str, str] = {
    "0.20-2.32": "and so my fellow americans",
    "3.14-4.48": "ask not",
    "5.28-7.70": "what your country can do for you",
    "8.06-10.38": "ask what you can do for your country",
    "0.20-4.48": "and so my fellow americans ask not",
    "5.28-10.38": "what your country can do for you ask what you can do for your country",
}
_JFK_JOIN = {"8.06-8.92": "8.06-10.38", "8.92-10.38": "8.06-10.38"}
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


# --- word error --------------------------------------------------------------------------------------------


def _number_words(n: int) -> list[str]:
    if n < 10:
        return [_DIGITS[n]]
    if n < 20:
        return [_TEENS[n - 10]]
    if n < 100:
        return [_TENS[n // 10]] + ([_DIGITS[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_DIGITS[n // 100], "hundred"] + (_number_words(n % 100) if n % 100 else [])
    # Longer runs of digits (an account number) are read digit by digit.
    return [_DIGITS[int(d)] for d in str(n)]


def normalise(text: str) -> list[str]:
    """Words for scoring: lower case, punctuation dropped (apostrophes kept), numbers spelled out."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"(\d),(\d)", r"\1\2", text)
    words: list[str] = []
    for token in re.findall(r"[a-z0-9']+", text):
        token = token.strip("'")
        if not token:
            continue
        if token.isdigit():
            words.extend(_number_words(int(token)))
        else:
            words.append(token)
    return words


@dataclass(frozen=True, slots=True)
class WordErrors:
    """Edit counts of a hypothesis against a reference."""

    ref_words: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return self.errors / self.ref_words if self.ref_words else float(self.insertions > 0)

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(
            self.ref_words + other.ref_words,
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
        )


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """Levenshtein alignment over normalised words; ties prefer substitutions (the usual convention)."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    # cell = (cost, subs, dels, ins)
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            if ref[i - 1] == hyp[j - 1]:
                cur.append(prev[j - 1])
                continue
            s, d, n = prev[j - 1], prev[j], cur[j - 1]
            cur.append(min(
                (s[0] + 1, s[1] + 1, s[2], s[3]),
                (d[0] + 1, d[1], d[2] + 1, d[3]),
                (n[0] + 1, n[1], n[2], n[3] + 1),
            ))
        prev = cur
    _, subs, dels, ins = prev[-1]
    return WordErrors(len(ref), subs, dels, ins)


# --- audio --------------------------------------------------------------------------------------------------


def read_wav(path: Path) -> Pcm16:
    """An 8 kHz mono 16-bit WAV (the corpus format) as int16 samples."""
    with wave.open(str(path), "rb") as f:
        if f.getframerate() != 8000 or f.getnchannels() != 1 or f.getsampwidth() != 2:
            raise ValueError(f"{path}: not 8 kHz mono 16-bit")
        return np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").astype(np.int16)


def phone_leg(pcm: Pcm16) -> bytes:
    """What the call path hands the recogniser: mu-law bytes."""
    return pcm16_to_ulaw(pcm)


async def synthesise_phrases(phrases: Sequence[str] = PHRASES, voice: str = PHRASE_VOICE) -> list[Pcm16]:
    """Each phrase spoken by espeak-ng at 8 kHz, through the mu-law round trip."""
    from providers.tts.espeak import EspeakTts

    tts = EspeakTts(voice=voice, sample_rate=8000)
    out = []
    for text in phrases:
        synthesis = await tts.synthesize(text)
        out.append(ulaw_to_pcm16(pcm16_to_ulaw(synthesis.pcm)))
    return out


@dataclass(frozen=True, slots=True)
class Labelled:
    """A recorded clip (or clips scored together) and its reference transcript."""

    name: str
    clips: tuple[Path, ...]
    reference: str


def labelled_clips(root: Path) -> list[Labelled]:
    """The clips of a corpus folder whose transcript is known (see the module docstring), in manifest order."""
    manifest = root / "manifest.csv"
    if not manifest.exists():
        return []
    out: list[Labelled] = []
    joined: dict[str, list[Path]] = {}
    with manifest.open(newline="") as f:
        for row in csv.DictReader(f):
            source, path = row["source"], root / row["path"]
            if row["category"] == "isolated_word":
                m = re.search(r"recordings/(\d)_", source)
                if m:
                    out.append(Labelled(row["path"], (path,), _DIGITS[int(m.group(1))]))
            elif row["category"] == "oration" and "jfk" in source:
                span = source.rsplit("@", 1)[-1].rstrip("s")
                if span in _JFK_JOIN:
                    joined.setdefault(_JFK_JOIN[span], []).append(path)
                elif span in _JFK:
                    out.append(Labelled(row["path"], (path,), _JFK[span]))
    for span, paths in joined.items():
        out.append(Labelled("+".join(p.name for p in paths), tuple(paths), _JFK[span]))
    return out


# --- measurements -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scored:
    name: str
    reference: str
    hypothesis: str
    errors: WordErrors


async def score(engine: WhisperStt, items: Sequence[tuple[str, str, Pcm16]]) -> list[Scored]:
    """Transcribe each (name, reference, audio) as the phone leg delivers it and count its word errors."""
    out = []
    for name, reference, pcm in items:
        final = await engine.transcribe(phone_leg(pcm), "mulaw")
        out.append(Scored(name, reference, final.text, word_errors(reference, final.text)))
    return out


def total(scored: Sequence[Scored]) -> WordErrors:
    acc = WordErrors(0, 0, 0, 0)
    for s in scored:
        acc = acc + s.errors
    return acc


def load_labelled(root: Path) -> list[tuple[str, str, Pcm16]]:
    items = []
    for item in labelled_clips(root):
        pcm = np.concatenate([read_wav(p) for p in item.clips])
        items.append((item.name, item.reference, pcm))
    return items


def read_clips(root: Path, every: int = 1) -> list[tuple[str, str, Pcm16]]:
    """Every `every`-th read-speech clip of a corpus folder (no transcript), as (name, "", audio)."""
    manifest = root / "manifest.csv"
    if not manifest.exists():
        return []
    with manifest.open(newline="") as f:
        paths = [row["path"] for row in csv.DictReader(f) if row["category"] == "read"]
    return [(p, "", read_wav(root / p)) for p in paths[::every]]


def turn_of(speech: Sequence[Pcm16], seconds: float) -> Pcm16:
    """`seconds` of speech: phrases one after another with 0.2 s between them, cut to length."""
    need = int(seconds * 8000)
    gap = np.zeros(1600, dtype=np.int16)
    parts: list[Pcm16] = []
    have = 0
    i = 0
    while have < need:
        parts.extend([speech[i % len(speech)], gap])
        have += speech[i % len(speech)].shape[0] + gap.shape[0]
        i += 1
    return np.concatenate(parts)[:need]


@dataclass(frozen=True, slots=True)
class TurnCost:
    seconds: float
    cpu_s: list[float]
    wall_s: list[float]


async def turn_costs(
    engine: WhisperStt, speech: Sequence[Pcm16], lengths: Sequence[float], repeats: int
) -> list[TurnCost]:
    """CPU (worker thread) and wall seconds per turn, one turn at a time."""
    out = []
    for seconds in lengths:
        pcm = turn_of(speech, seconds)
        cpu: list[float] = []
        wall: list[float] = []
        for _ in range(repeats):

            def job(pcm: Pcm16 = pcm) -> tuple[float, float]:
                # process_time, not thread_time: CTranslate2 computes on threads of its own.
                t0, w0 = time.process_time(), time.perf_counter()
                engine.transcribe_blocking(pcm, 0.0)
                return time.process_time() - t0, time.perf_counter() - w0

            c, w = await asyncio.to_thread(job)
            cpu.append(c)
            wall.append(w)
        out.append(TurnCost(seconds, cpu, wall))
    return out


@dataclass(frozen=True, slots=True)
class LoadRun:
    callers: int
    turns: int
    latency_p50_s: float
    latency_p95_s: float
    latency_max_s: float
    growth_s: float  # least-squares latency trend from the first turn's end to the last's
    errors: int

    @property
    def real_time(self) -> bool:
        """The queue does not grow: the latency trend over the run stays under a second, and nothing failed."""
        return self.errors == 0 and self.growth_s < GROWTH_LIMIT_S


GROWTH_LIMIT_S = 1.0


def _trend(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of latency over turn-end time, times the span of the run: how much latency grew."""
    if len(points) < 3:
        return 0.0
    xs = np.array([p[0] for p in points])
    ys = np.array([p[1] for p in points])
    span = float(xs.max() - xs.min())
    if span <= 0:
        return 0.0
    slope = float(np.polyfit(xs, ys, 1)[0])
    return slope * span


async def load_run(
    engine: WhisperStt, turn: Pcm16, callers: int, cycles: int, period_s: float = 6.0
) -> LoadRun:
    """N callers each ending a turn every `period_s`, staggered evenly; latency = turn end -> Final."""
    loop = asyncio.get_running_loop()
    audio = phone_leg(turn)
    start = loop.time() + 0.2
    points: list[tuple[float, float]] = []  # (turn end since start, latency)
    errors = 0

    async def caller(k: int) -> None:
        nonlocal errors
        for c in range(cycles):
            due = start + c * period_s + k * period_s / callers
            await asyncio.sleep(max(0.0, due - loop.time()))
            ended = loop.time()
            try:
                await engine.transcribe(audio, "mulaw")
            except Exception:
                errors += 1
                continue
            points.append((ended - start, loop.time() - ended))

    await asyncio.gather(*(caller(k) for k in range(callers)))
    latencies = [p[1] for p in points]
    return LoadRun(
        callers,
        len(points),
        pct(latencies, 50) or 0.0,
        pct(latencies, 95) or 0.0,
        max(latencies, default=0.0),
        _trend(points),
        errors,
    )


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "-"


# --- the report ---------------------------------------------------------------------------------------------


def _wer_line(label: str, scored: Sequence[Scored]) -> str:
    t = total(scored)
    return (f"{label}: WER {100 * t.wer:.1f}% = {t.errors} errors / {t.ref_words} reference words "
            f"(S {t.substitutions}, D {t.deletions}, I {t.insertions}) over {len(scored)} items")


def _misses(scored: Sequence[Scored]) -> list[str]:
    return [f"    {s.name}: ref {s.reference!r} hyp {s.hypothesis!r}" for s in scored if s.errors.errors]


async def _wer_section(
    engine: WhisperStt, speech: Sequence[Pcm16], pool_root: Path, report_root: Path, show_items: bool
) -> list[str]:
    lines: list[str] = []
    named = [(f"phrase {i + 1}", p, a) for i, (p, a) in enumerate(zip(PHRASES, speech, strict=True))]
    phrases = await score(engine, named)
    lines.append(_wer_line(f"spoken test phrases (espeak-ng {PHRASE_VOICE}, 8 kHz mu-law)", phrases))
    if show_items:
        lines.extend(_misses(phrases))
    for label, root in (("corpus pool", pool_root), ("report set", report_root)):
        items = load_labelled(root)
        progress(f"stt: {label} ({len(items)} labelled items)")
        scored = await score(engine, items)
        if scored:
            lines.append(_wer_line(f"{label} {root} (FSDD digits + JFK, 8 kHz mu-law)", scored))
            by_kind = {k: [x for x in scored if k in x.name] for k in ("isolated_word", "oration")}
            lines.extend(f"    {k}: " + _wer_line("", v).lstrip(": ") for k, v in by_kind.items() if v)
        else:
            lines.append(f"{label} {root}: no labelled clips found")
        if show_items:
            lines.extend(_misses(scored))
    return lines


Window = Literal["short", "full"]
WINDOWS: tuple[Window, ...] = ("short", "full")


def _agreement_lines(texts: dict[Window, dict[str, list[Scored]]]) -> list[str]:
    """The short window's text against the full window's, on clips with no transcript (module docstring, 5)."""
    lines = ["short vs full window on unlabelled read speech (full window's text as the reference):"]
    for label, full in texts["full"].items():
        pairs = zip(full, texts["short"][label], strict=True)
        diffs = [word_errors(f.hypothesis, s.hypothesis) for f, s in pairs]
        t = sum(diffs, WordErrors(0, 0, 0, 0))
        lines.append(f"    {label}: {100 * t.wer:.1f}% words differ ({t.errors} / {t.ref_words}; S {t.substitutions}, "
                     f"D {t.deletions}, I {t.insertions}); {sum(d.errors > 0 for d in diffs)} of {len(diffs)} clips")
    return lines


async def _load_section(
    window: Window, workers: Sequence[int], callers: Sequence[int], cycles: int, turn: Pcm16, cpu3: float,
    hint: Hint | None = COMMAND_HINT,
) -> list[str]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    lines = [
        "",
        f"[{window} window] CPU bound: {cores} cores x 6 s / {cpu3:.3f} CPU s per 3 s turn = {cores * 6.0 / cpu3:.0f} "
        "callers (recognition alone, nothing else on the machine)",
        f"load average before the load runs: {load_average()}",
        f"[{window} window] callers in real time (each ends a 3 s turn every 6 s; {cycles} cycles; "
        "latency = turn end -> Final):",
    ]
    rows = []
    best: dict[int, int] = {}
    for w in workers:
        engine = WhisperStt(workers=w, cpu_threads=1, max_pending=10_000, window=window, hint=hint)
        try:
            await engine.start()
            misses = 0
            for n in callers:
                progress(f"stt: {window} window, {n} callers, {w} worker(s)")
                r = await load_run(engine, turn, n, cycles)
                rows.append([str(w), str(n), str(r.turns), fmt(r.latency_p50_s, 2), fmt(r.latency_p95_s, 2),
                             fmt(r.latency_max_s, 2), fmt(r.growth_s, 2),
                             "yes" if r.real_time else "NO (queue grows)"])
                if r.real_time:
                    best[w] = n
                    misses = 0
                else:
                    misses += 1
                    if misses == 2:
                        break  # twice in a row: more callers only make it worse
        finally:
            await engine.aclose()
    lines.append(table(["workers", "callers", "turns", "p50 s", "p95 s", "max s", "growth s", "real time"],
                       rows, left=2))
    for w in workers:
        lines.append(f"  [{window} window] {w} worker(s): carries {best.get(w, 0)} callers "
                     "(largest N tried that kept up)")
    return lines


async def run(
    *,
    workers: Sequence[int] = (1, 2),
    callers: Sequence[int] = (4, 8, 12, 16, 20, 24, 32, 40, 48),
    cycles: int = 5,
    repeats: int = 3,
    pool: Path | None = None,
    report_set: Path | None = None,
    show_items: bool = False,
    wer: bool = True,
    windows: Sequence[Window] = WINDOWS,
    hint: bool = True,
) -> str:
    """Every measurement in the module docstring; returns the report text."""
    from app.offline.corpus import corpus_root

    report_root = report_set or corpus_root()
    pool_root = pool or report_root.parent / "corpus-pool"
    lines: list[str] = []
    progress("stt: spoken phrases")
    speech = await synthesise_phrases()
    unlabelled = {"report set read clips": read_clips(report_root), "pool read clips (every 10th)": read_clips(
        pool_root, 10)}
    texts: dict[Window, dict[str, list[Scored]]] = {}
    cpu3: dict[Window, float] = {}
    for window in windows:
        engine = WhisperStt(workers=1, cpu_threads=1, window=window, hint=COMMAND_HINT if hint else None)
        try:
            progress(f"stt: loading the model ({window} window)")
            await engine.start()
            if wer:
                lines.append(f"[{window} window]")
                lines.extend(await _wer_section(engine, speech, pool_root, report_root, show_items))
                if len(windows) > 1:
                    progress(f"stt: unlabelled read clips ({window} window)")
                    texts[window] = {label: await score(engine, items) for label, items in unlabelled.items()}

            progress(f"stt: cost per turn ({window} window)")
            costs = await turn_costs(engine, speech, (1.0, 3.0, 6.0), repeats)
            lines.append("")
            lines.append(f"[{window} window] cost per turn (one at a time, cpu_threads=1, int8, word timestamps on; "
                         f"{repeats} runs, median):")
            lines.append(table(
                ["turn", "CPU s", "wall s", "CPU / audio"],
                [[f"{c.seconds:.0f} s", fmt(statistics.median(c.cpu_s), 3), fmt(statistics.median(c.wall_s), 3),
                  fmt(statistics.median(c.cpu_s) / c.seconds, 3)] for c in costs],
            ))
            lines.append("")
            cpu3[window] = statistics.median(next(c.cpu_s for c in costs if c.seconds == 3.0))
        finally:
            await engine.aclose()
    if len(texts) == 2:
        lines.extend(_agreement_lines(texts))

    turn = turn_of(speech, 3.0)
    for window in windows if workers else ():
        lines.extend(await _load_section(window, workers, callers, cycles, turn, cpu3[window],
                                         COMMAND_HINT if hint else None))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m app.bench.stt`; the lead wires it as `bargein bench --mode stt`."""
    p = argparse.ArgumentParser(prog="bargein bench --mode stt", description=__doc__.split("\n")[0] if __doc__ else "")
    p.add_argument("--workers", default="1,2", help="STT_WORKERS values to load-test, comma-separated")
    p.add_argument("--callers", default="4,8,12,16,20,24,32,40,48", help="caller counts to try, ascending")
    p.add_argument("--cycles", type=int, default=5, help="6 s cycles per load run")
    p.add_argument("--repeats", type=int, default=3, help="runs per turn length for the cost table")
    p.add_argument("--quick", action="store_true", help="callers 4,8; 2 cycles; 1 repeat")
    p.add_argument("--show", action="store_true", help="print every misrecognised item")
    p.add_argument("--no-wer", action="store_true", help="skip the word-error part")
    p.add_argument("--no-load", action="store_true", help="skip the callers-in-real-time part")
    p.add_argument("--window", choices=("short", "full", "both"), default="both",
                   help="Whisper encoder window(s) to measure (STT_WHISPER_WINDOW); both: compared in one run")
    p.add_argument("--hint", choices=("on", "off"), default="on",
                   help="the command-word second decode on short clips (providers/stt/whisper_hint.py)")
    args = p.parse_args(argv)
    callers = [4, 8] if args.quick else [int(x) for x in args.callers.split(",")]
    cycles = 2 if args.quick else args.cycles
    repeats = 1 if args.quick else args.repeats
    workers = [] if args.no_load else [int(x) for x in args.workers.split(",")]
    windows: tuple[Window, ...] = WINDOWS if args.window == "both" else (args.window,)
    report = asyncio.run(run(workers=workers, callers=callers, cycles=cycles, repeats=repeats, show_items=args.show,
                             wer=not args.no_wer, windows=windows, hint=args.hint == "on"))
    print(report)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
