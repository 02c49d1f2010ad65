"""Offline evaluation of the end-of-turn model (app/call/end_of_turn.py) on the tuning pool, at phone quality.

Samples, from the pool's read and oration speech (`/work/shared/corpus-pool`, never the report corpus; the
clips its dev_overlap.csv ties to the report corpus are left out):

- complete: a clip that is the last chunk of its source utterance, up to its end of speech (the last 20 ms
  frame above the clip's speech threshold): the end of a LibriSpeech utterance stands for the end of a turn.
  (The pool cuts long utterances into up to 4 chunks at short pauses: the other chunks' ends are mostly
  mid-sentence, so they count as incomplete, kind `chunk`.)
- incomplete, three kinds: `gap`, a clip cut at a pause inside it (>= `--min-gap-ms` below the threshold, at
  least 0.8 s of speech before it and 0.3 s after; at most 2 per clip, the longest), where the reader paused
  mid-sentence and went on; `word`, cut where app/bench/turns.py inserts its mid-sentence pause (the
  quietest 60 ms between 35% and 75% of the speech: any word gap); `chunk`, a chunk's end that is not its
  utterance's end. (A `gap` may fall at a sentence boundary inside a chunk: some label noise.)

Both kinds get the same tail: `--pause-ms` of line silence (mu-law's quietest code plus -70 dBFS noise) after
the cut, the pause at which the session asks the model. Conditions: `clean` (the pool's 8 kHz as recorded,
upsampled) and `phone` (300-3400 Hz band plus a mu-law round trip, the wire format).

Prints, per condition: accuracy per class at the model's own 0.5, a threshold sweep (complete recall vs
incomplete recall: an incomplete one called complete is a talk-over risk, a complete one called incomplete
waits the ceiling), a speaker-split check (thresholds picked on one half of the speakers, scored on the
other), and the inference cost. Thresholds are picked here, on the pool only.

    python -m app.offline.eot_eval [--model smart_turn|prosody] [--limit N] [--pause-ms 250]
                                   [--conditions clean,phone] [--save F.npz]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.audio import pcm16_to_ulaw, ulaw_to_pcm16
from app.bench.turns import pause_point
from app.call.end_of_turn import SmartTurn, TurnModel
from app.call.prosody import ProsodyModel
from app.offline.corpus import SAMPLE_RATE, dev_overlap, load_clip

POOL = Path(__file__).resolve().parents[2].parent / "shared" / "corpus-pool"
FRAME = 160  # 20 ms
I16 = npt.NDArray[np.int16]


@dataclass(frozen=True)
class Sample:
    clip: str
    speaker: str
    kind: str  # "complete" | "incomplete"
    cut: str  # complete: "end"; incomplete: "gap" | "word" | "chunk"
    last_of_source: bool
    pcm: I16  # 8 kHz, up to the cut (the tail is added per condition)


def speech_frames(pcm: I16) -> npt.NDArray[np.bool_]:
    """Frames that hold speech: above max(-45 dBFS, the clip's loudest frame - 30 dB)."""
    n = len(pcm) // FRAME
    frames = pcm[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    level = 10.0 * np.log10((frames * frames).mean(axis=1) / 32768.0**2 + 1e-12)
    return np.asarray(level > max(-45.0, float(level.max()) - 30.0))


def word_gaps(loud: npt.NDArray[np.bool_], min_gap_ms: float) -> list[tuple[int, int]]:
    """(first quiet frame, length in frames) of each gap inside the speech, longest first."""
    idx = np.flatnonzero(loud)
    if len(idx) < 2:
        return []
    gaps = []
    for a, b in zip(idx[:-1], idx[1:], strict=True):
        length = int(b - a - 1)
        if length * 20 >= min_gap_ms:
            gaps.append((int(a) + 1, length))
    first, last = int(idx[0]), int(idx[-1])
    kept = [(g, n) for g, n in gaps if (g - first) * 20 >= 800 and (last - (g + n)) * 20 >= 300]
    return sorted(kept, key=lambda gap: -gap[1])


def load_samples(root: Path, limit: int | None, min_gap_ms: float) -> list[Sample]:
    overlap = dev_overlap(root)
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        every = [r for r in csv.DictReader(f) if r["kind"] == "speech" and r["category"] in ("read", "oration")]
    # Which chunk ends its source utterance is decided over every chunk, the left-out ones included.
    latest: dict[str, float] = {}
    for r in every:
        src, _, span = r["source"].partition("@")
        start = float(span.split("-")[0]) if span else 0.0
        latest[src] = max(latest.get(src, -1.0), start)
    rows = [r for r in every if r["path"] not in overlap]
    rows = rows[:limit] if limit else rows
    samples: list[Sample] = []
    for r in rows:
        src, _, span = r["source"].partition("@")
        start = float(span.split("-")[0]) if span else 0.0
        pcm = load_clip(r["path"], root)
        loud = speech_frames(pcm)
        idx = np.flatnonzero(loud)
        if len(idx) == 0:
            continue
        name = Path(r["path"]).stem
        speaker = name.rsplit("_", 1)[-1]
        last = start >= latest[src]
        end = pcm[: (int(idx[-1]) + 1) * FRAME]
        samples.append(Sample(name, speaker, "complete", "end", True, end) if last
                       else Sample(name, speaker, "incomplete", "chunk", False, end))
        for gap, _ in word_gaps(loud, min_gap_ms)[:2]:
            samples.append(Sample(name, speaker, "incomplete", "gap", last, pcm[: gap * FRAME]))
        at = pause_point(pcm)
        if at is not None:
            samples.append(Sample(name, speaker, "incomplete", "word", last, pcm[:at]))
    return samples


def phone_band(pcm: I16) -> I16:
    """300-3400 Hz (an FFT mask: the telephone channel), then a mu-law round trip (the wire)."""
    spectrum = np.fft.rfft(pcm.astype(np.float64))
    freqs = np.fft.rfftfreq(len(pcm), 1.0 / SAMPLE_RATE)
    spectrum[(freqs < 300.0) | (freqs > 3400.0)] = 0.0
    band = np.clip(np.fft.irfft(spectrum, len(pcm)), -32768, 32767).astype(np.int16)
    return ulaw_to_pcm16(pcm16_to_ulaw(band))


def with_tail(pcm: I16, pause_ms: float, rng: np.random.Generator) -> I16:
    tail = rng.normal(0.0, 32768 * 10 ** (-70 / 20), round(pause_ms * SAMPLE_RATE / 1000)).astype(np.int16)
    return np.concatenate([pcm, tail]).astype(np.int16)


def score(samples: list[Sample], model: TurnModel, condition: str, pause_ms: float) -> tuple[np.ndarray, list[float]]:
    rng = np.random.default_rng(0)
    probs, costs = [], []
    for s in samples:
        pcm = phone_band(s.pcm) if condition == "phone" else s.pcm
        audio = with_tail(pcm, pause_ms, rng)
        if condition == "phone":
            audio = ulaw_to_pcm16(pcm16_to_ulaw(audio))
        t0 = time.perf_counter()
        probs.append(model.p_complete(audio))
        costs.append((time.perf_counter() - t0) * 1000.0)
    return np.array(probs), costs


def recalls(p: np.ndarray, complete: np.ndarray, threshold: float) -> tuple[float, float]:
    """(complete called complete, incomplete called incomplete) at `threshold`."""
    said = p >= threshold
    return float(said[complete].mean()), float((~said[~complete]).mean())


def pick(p: np.ndarray, complete: np.ndarray, max_false_complete: float) -> float:
    """The lowest threshold whose incomplete-called-complete rate is at most `max_false_complete`."""
    for t in np.round(np.arange(0.05, 1.0, 0.01), 2):
        if 1.0 - recalls(p, complete, float(t))[1] <= max_false_complete:
            return float(t)
    return 1.0


def report(samples: list[Sample], p: np.ndarray, costs: list[float], condition: str) -> None:
    complete = np.array([s.kind == "complete" for s in samples])
    cuts = np.array([s.cut for s in samples])
    nc, ni = int(complete.sum()), int((~complete).sum())
    c50, i50 = recalls(p, complete, 0.5)
    print(f"{condition}: {nc} complete, {ni} incomplete samples "
          f"({', '.join(f'{k} {int((cuts == k).sum())}' for k in ('gap', 'word', 'chunk'))})")
    print(f"  at 0.5: complete right {c50:.1%}, incomplete right {i50:.1%}; "
          f"P(complete) median: complete {np.median(p[complete]):.2f}, "
          + ", ".join(f"{k} {np.median(p[cuts == k]):.2f}" for k in ("gap", 'word', 'chunk') if (cuts == k).any()))
    order = np.argsort(-p)
    ranks = np.empty(len(p))
    ranks[order] = np.arange(len(p))
    auc = 1.0 - (ranks[complete][:, None] > ranks[~complete][None, :]).mean()
    print(f"  AUC (complete above incomplete): {auc:.3f}")
    print("  threshold  complete-right  incomplete-right  gap-right  word-right  chunk-right")
    for t in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98):
        c, i = recalls(p, complete, t)
        per = [float((p[cuts == k] < t).mean()) if (cuts == k).any() else float("nan")
               for k in ("gap", "word", "chunk")]
        print(f"  {t:9.2f}  {c:14.1%}  {i:16.1%}  {per[0]:9.1%}  {per[1]:10.1%}  {per[2]:11.1%}")
    speakers = sorted({s.speaker for s in samples})
    half = {sp for k, sp in enumerate(speakers) if k % 2 == 0}
    a = np.array([s.speaker in half for s in samples])
    for target in (0.05, 0.10):
        ta, tb = pick(p[a], complete[a], target), pick(p[~a], complete[~a], target)
        cb, ib = recalls(p[~a], complete[~a], ta)
        ca, ia = recalls(p[a], complete[a], tb)
        print(f"  speaker split, <= {target:.0%} incomplete called complete: threshold {ta:.2f} (half A) scores "
              f"half B complete {cb:.1%} / incomplete {ib:.1%}; {tb:.2f} (B) scores A {ca:.1%} / {ia:.1%}")
    print(f"  inference incl. features: median {statistics.median(costs):.0f} ms, "
          f"min {min(costs):.0f} ms over {len(costs)} (one thread; machine shared)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.offline.eot_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=Path, default=POOL)
    parser.add_argument("--limit", type=int, default=None, help="first N speech clips of the pool")
    parser.add_argument("--pause-ms", type=float, default=250.0, help="silence after the cut when the model is asked")
    parser.add_argument("--min-gap-ms", type=float, default=150.0, help="shortest word gap cut as incomplete")
    parser.add_argument("--conditions", default="clean,phone")
    parser.add_argument("--model", choices=("smart_turn", "prosody"), default="smart_turn",
                        help="the TURN_END_MODEL to score (prosody: app/call/prosody.py, fitted by fit_prosody)")
    parser.add_argument("--save", type=Path, default=None, help="write the probabilities (npz) for later sweeps")
    args = parser.parse_args(argv)
    samples = load_samples(args.pool, args.limit, args.min_gap_ms)
    model: TurnModel = ProsodyModel() if args.model == "prosody" else SmartTurn()
    saved: dict[str, np.ndarray] = {
        "complete": np.array([s.kind == "complete" for s in samples]),
        "last_of_source": np.array([s.last_of_source for s in samples]),
        "cut": np.array([s.cut for s in samples]),
        "speaker": np.array([s.speaker for s in samples]),
    }
    for condition in args.conditions.split(","):
        p, costs = score(samples, model, condition, args.pause_ms)
        report(samples, p, costs, condition)
        saved[condition] = p
    if args.save is not None:
        np.savez(args.save, **saved)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
