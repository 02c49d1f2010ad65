"""Fit the prosodic end-of-turn model (app/call/prosody.py) on the tuning pool, at phone quality.

The samples are app/offline/eot_eval.py's (the pool's read and oration speech, its dev_overlap.csv clips
left out): complete, a source utterance's end; incomplete, a cut at a word gap inside a clip (`gap`), at
the bench's mid-sentence pause point (`word`) or at a chunk's end that is not its utterance's (`chunk`).
Each gets `--pause-ms` of line silence, then the telephone band (300-3400 Hz) and a mu-law round trip, the
way a call's audio reaches the session, and prosody.features reads the cues.

Validation is by speaker: `--folds` folds of whole speakers; each fold is scored by a model fitted on the
others (out-of-fold probabilities), and the AUC, the per-kind recalls and the operating points (thresholds
for the turn-taking table, TURN_MODEL_COMPLETE_AT / TURN_MODEL_INCOMPLETE_BELOW) are read from those.
The model written is then fitted on every pool speaker. `--write` puts its numbers into app/call/prosody.py
between the FITTED markers.

    python -m app.offline.fit_prosody [--limit N] [--pause-ms 250] [--folds 5] [--l2 1.0] [--write]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.audio import pcm16_to_ulaw, ulaw_to_pcm16
from app.call import prosody
from app.offline.corpus import SAMPLE_RATE, dev_overlap, load_clip
from app.offline.eot_eval import (
    FRAME,
    POOL,
    Sample,
    load_samples,
    phone_band,
    speech_frames,
    with_tail,
    word_gaps,
)

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
LEAD = np.zeros(800, dtype=np.int16)  # 100 ms before the clip: the band filter's wrap-around lands on silence


@dataclass(frozen=True)
class Said:
    """One recognised word of a pool clip (Whisper tiny.en, punctuation attached), times in ms."""

    text: str
    start_ms: float
    end_ms: float


@dataclass(frozen=True)
class Source:
    """One source utterance of the pool: its chunks (manifest rows) in order, each with its offset in it (s)."""

    name: str
    chunks: tuple[tuple[str, float], ...]  # (clip path, start within the joined audio)


def sources(rows: Sequence[dict[str, str]], overlap: frozenset[str]) -> list[Source]:
    """The pool's read speech grouped by source utterance; a source with any dev-overlap clip is left out
    whole (its words would label our samples from report-set audio)."""
    grouped: dict[str, list[tuple[float, str]]] = {}
    for r in rows:
        src, _, span = r["source"].partition("@")
        start = float(span.split("-")[0]) if span else 0.0
        grouped.setdefault(src, []).append((start, r["path"]))
    out = []
    for src, chunks in grouped.items():
        if any(path in overlap for _, path in chunks):
            continue
        chunks.sort()
        first = chunks[0][0]
        out.append(Source(src, tuple((path, start - first) for start, path in chunks)))
    return out


def joined(source: Source, root: Path) -> npt.NDArray[np.int16]:
    """The source's chunks at their places, silence between them (what the pool left out)."""
    clips = [(load_clip(path, root), offset) for path, offset in source.chunks]
    total = max(round(offset * SAMPLE_RATE) + len(pcm) for pcm, offset in clips)
    out = np.zeros(total, dtype=np.int16)
    for pcm, offset in clips:
        at = round(offset * SAMPLE_RATE)
        out[at: at + len(pcm)] = pcm
    return out


def transcripts(root: Path, todo_sources: Sequence[Source], cache: Path) -> dict[str, list[Said]]:
    """Whisper's words (the project's embedded recognizer) for each source, its chunks joined, so that a pause
    at a chunk's end is punctuated knowing what follows; cached as JSON."""
    done: dict[str, list[Said]] = {}
    if cache.exists():
        done = {k: [Said(*w) for w in v] for k, v in json.loads(cache.read_text("utf-8")).items()}
    todo = [src for src in todo_sources if src.name not in done]
    if todo:
        from providers.stt.whisper import WhisperStt  # heavy: only when something is not cached

        stt = WhisperStt(hint=None)
        for k, src in enumerate(todo):
            final = stt.transcribe_blocking(joined(src, root))
            done[src.name] = [Said(w.text, w.start_ms, w.end_ms) for w in final.words]
            if k % 50 == 49:
                print(f"  transcribed {k + 1}/{len(todo)}", flush=True)
        cache.write_text(json.dumps({k: [[w.text, w.start_ms, w.end_ms] for w in v] for k, v in done.items()}),
                         "utf-8")
    return done


SENTENCE_END = (".", "?", "!")


def boundary(words: Sequence[Said], at_ms: float) -> str | None:
    """What the words say about a pause centred at `at_ms`: `sentence` (the word before it ends with . ? !),
    `phrase` (with , ; : or a dash) or `word`; None when no word precedes it."""
    before = [w for w in words if (w.start_ms + w.end_ms) / 2.0 < at_ms]
    if not before:
        return None
    last = before[-1].text.strip().strip("\"')")
    if last.endswith(SENTENCE_END) and last.lower() not in ("mr.", "mrs.", "dr.", "st.", "ms."):
        return "sentence"
    return "phrase" if last.endswith((",", ";", ":", "-")) else "word"


def labelled_samples(root: Path, limit: int | None, min_gap_ms: float, cache: Path) -> list[Sample]:
    """Complete: a pause where Whisper, hearing what follows too, ends a sentence; incomplete: a pause after
    any other word (`phrase`: after a comma, `word`: none). The pauses: every word gap of `min_gap_ms` or more
    inside a clip (0.8 s of speech before it, 0.3 s after), and each clip's end but its source's last (`chunk`
    ends; the last one is left out: Whisper puts a full stop at the end of almost anything, and a pool source
    often ends mid-sentence, so nothing labels it)."""
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "speech" and r["category"] in ("read", "oration")]
    srcs = sources(rows, dev_overlap(root))
    srcs = srcs[:limit] if limit else srcs
    said = transcripts(root, srcs, cache)
    samples: list[Sample] = []
    for src in srcs:
        words = said[src.name]
        for k, (path, offset) in enumerate(src.chunks):
            pcm = load_clip(path, root)
            name = Path(path).stem
            speaker = name.rsplit("_", 1)[-1]
            loud = speech_frames(pcm)
            cuts = [(gap, gap + length / 2.0, "gap") for gap, length in word_gaps(loud, min_gap_ms)]
            idx = np.flatnonzero(loud)
            if k + 1 < len(src.chunks) and len(idx) and (idx[-1] - idx[0]) * 20 >= 800:
                end = int(idx[-1]) + 1
                cuts.append((end, end + 2.0, "end"))  # the chunk's end: its pause runs into the next chunk
            for cut, centre, where in cuts:
                kind = boundary(words, offset * 1000.0 + centre * FRAME * 1000.0 / SAMPLE_RATE)
                if kind is not None:
                    samples.append(Sample(name, speaker, "complete" if kind == "sentence" else "incomplete",
                                          f"{kind}-{where}", False, pcm[: cut * FRAME]))
    return samples


def phone_audio(pcm: npt.NDArray[np.int16], pause_ms: float, rng: np.random.Generator) -> npt.NDArray[np.int16]:
    """The sample as the session gets it at the pause: cut, line silence, phone band, mu-law."""
    audio = np.concatenate([LEAD, with_tail(pcm, pause_ms, rng)]).astype(np.int16)
    return ulaw_to_pcm16(pcm16_to_ulaw(phone_band(audio)))


def fit_logistic(x: F64, y: B, l2: float, iterations: int = 50) -> prosody.Logistic:
    """L2-regularised logistic regression by Newton's method on standardised features (the bias unpenalised)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-9
    z = prosody.Logistic(mean, scale, np.zeros(len(mean)), 0.0).standardise(x)
    a = np.hstack([np.ones((len(z), 1)), z])
    w = np.zeros(a.shape[1])
    penalty = np.full(a.shape[1], l2)
    penalty[0] = 0.0
    target = y.astype(np.float64)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -30, 30)))
        grad = a.T @ (p - target) + penalty * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return prosody.Logistic(mean, scale, w[1:], float(w[0]))


def auc(p: F64, y: B) -> float:
    """P(a complete sample scores above an incomplete one), ties counted half."""
    pos, neg = p[y], p[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def speaker_folds(speakers: Sequence[str], folds: int) -> npt.NDArray[np.int64]:
    """Each sample's fold: whole speakers, dealt round-robin in sorted order (deterministic)."""
    order = {sp: k % folds for k, sp in enumerate(sorted(set(speakers)))}
    return np.array([order[sp] for sp in speakers], dtype=np.int64)


def out_of_fold(x: F64, y: B, fold: npt.NDArray[np.int64], l2: float) -> F64:
    p = np.zeros(len(y))
    for k in np.unique(fold):
        test = fold == k
        model = fit_logistic(x[~test], y[~test], l2)
        p[test] = [model.p(row) for row in x[test]]
    return p


def threshold_for(p: F64, y: B, side: str, rate: float) -> float:
    """`complete`: the lowest threshold calling at most `rate` of the incomplete samples complete (p >= t);
    `incomplete`: the highest calling at most `rate` of the complete ones incomplete (p < t)."""
    grid = np.round(np.arange(0.0, 1.0001, 0.01), 2)
    if side == "complete":
        return float(next((t for t in grid if (p[~y] >= t).mean() <= rate), 1.0))
    return float(next((t for t in grid[::-1] if (p[y] < t).mean() <= rate), 0.0))


def report(p: F64, y: B, cuts: npt.NDArray[np.str_], label: str) -> None:
    kinds = sorted({str(c) for c in cuts[~y]})
    print(f"{label}: AUC {auc(p, y):.3f} over {int(y.sum())} complete, {int((~y).sum())} incomplete "
          f"({', '.join(f'{k} {int((cuts == k).sum())}' for k in kinds)}); complete vs each kind: "
          + ", ".join(f"{k} {auc(p[(cuts == k) | y], y[(cuts == k) | y]):.3f}" for k in kinds))
    print("  threshold  complete>=t  incomplete<t  " + "  ".join(f"{k}<t" for k in kinds))
    for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        row = [float((p[y] >= t).mean()), float((p[~y] < t).mean())]
        per = [float((p[cuts == k] < t).mean()) for k in kinds]
        print(f"  {t:9.2f}  {row[0]:11.1%}  {row[1]:12.1%}  " + "  ".join(f"{v:{len(k) + 2}.1%}"
                                                                       for k, v in zip(kinds, per, strict=True)))
    for rate in (0.02, 0.05, 0.10):
        tc = threshold_for(p, y, "complete", rate)
        ti = threshold_for(p, y, "incomplete", rate)
        print(f"  <= {rate:.0%} wrong: complete_at {tc:.2f} (calls {float((p[y] >= tc).mean()):.1%} of complete "
              f"complete), incomplete_below {ti:.2f} (calls {float((p[~y] < ti).mean()):.1%} of incomplete "
              f"incomplete)")


def write_model(model: prosody.Logistic, thresholds: tuple[float, float], path: Path, note: str) -> None:
    """Replace the fitted numbers in app/call/prosody.py (between its FITTED markers)."""
    def arr(v: F64) -> str:
        return "np.array([" + ", ".join(f"{float(c):.6g}" for c in v) + "])"

    block = (f"# {note}\n"
             f"MEAN = {arr(model.mean)}\nSCALE = {arr(model.scale)}\nWEIGHTS = {arr(model.weights)}\n"
             f"BIAS = {model.bias:.6g}\n"
             f"COMPLETE_AT = {thresholds[0]:.2f}\nINCOMPLETE_BELOW = {thresholds[1]:.2f}\n")
    text = path.read_text("utf-8")
    new, n = re.subn(r"(# --- the fitted model.*?\n)(.*?)(# --- end of the fitted numbers)",
                     lambda m: m.group(1) + block + m.group(3), text, count=1, flags=re.S)
    if n != 1:
        raise SystemExit(f"no FITTED block in {path}")
    path.write_text(new, "utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.offline.fit_prosody", description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=Path, default=POOL)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--pause-ms", type=float, default=250.0)
    parser.add_argument("--min-gap-ms", type=float, default=100.0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--l2", type=float, default=10.0)
    parser.add_argument("--max-false-complete", type=float, default=0.02,
                        help="complete_at: at most this share of the incomplete samples called complete")
    parser.add_argument("--max-false-incomplete", type=float, default=0.05,
                        help="incomplete_below: at most this share of the complete samples called incomplete")
    parser.add_argument("--labels", choices=("words", "chunks"), default="words",
                        help="words: sentence ends by Whisper's punctuation at pauses inside clips; chunks: "
                             "eot_eval's (a source utterance's last chunk is complete)")
    parser.add_argument("--words-cache", type=Path, default=Path("/tmp/bargein-pool-source-words.json"))
    parser.add_argument("--write", action="store_true", help="write the model fitted on every speaker")
    args = parser.parse_args(argv)
    if args.labels == "words":
        samples = labelled_samples(args.pool, args.limit, args.min_gap_ms, args.words_cache)
    else:
        samples = load_samples(args.pool, args.limit, args.min_gap_ms)
    rng = np.random.default_rng(0)
    rows, kept, costs = [], [], []
    for s in samples:
        audio = phone_audio(s.pcm, args.pause_ms, rng)
        t0 = time.perf_counter()
        x = prosody.features(audio)
        costs.append((time.perf_counter() - t0) * 1000.0)
        if x is not None:
            rows.append(x)
            kept.append(s)
    x = np.array(rows)
    y = np.array([s.kind == "complete" for s in kept])
    cuts = np.array([s.cut for s in kept])
    speakers = [s.speaker for s in kept]
    print(f"{len(samples)} samples from {len({s.speaker for s in samples})} speakers; {len(samples) - len(kept)} "
          f"without enough voice in the tail (no verdict: "
          f"{sum(s.kind == 'complete' for s in samples) - int(y.sum())} complete); features: median "
          f"{np.median(costs):.1f} ms, p95 {np.percentile(costs, 95):.1f} ms")
    for name, col in zip(prosody.FEATURES, x.T, strict=True):
        print(f"  {name:12s} complete median {np.median(col[y]):8.3f}  incomplete {np.median(col[~y]):8.3f}  "
              f"AUC alone {auc(col, y):.3f}")
    fold = speaker_folds(speakers, args.folds)
    p = out_of_fold(x, y, fold, args.l2)
    report(p, y, cuts, f"out-of-fold by speaker ({args.folds} folds, pause {args.pause_ms:.0f} ms)")
    model = fit_logistic(x, y, args.l2)
    print("weights (standardised): " + ", ".join(f"{n} {w:+.2f}" for n, w in
                                                  zip(prosody.FEATURES, model.weights, strict=True))
          + f", bias {model.bias:+.2f}")
    # The operating points (out of fold): a "complete" at a mid-sentence pause is a talk-over (the issue allows
    # 2% of calls, and a call has a pause or two), an "incomplete" at an end costs the ceiling's wait (p95).
    complete_at = threshold_for(p, y, "complete", args.max_false_complete)
    thresholds = (complete_at, min(complete_at, threshold_for(p, y, "incomplete", args.max_false_incomplete)))
    print(f"operating points: complete_at {thresholds[0]:.2f} (<= {args.max_false_complete:.0%} of incomplete "
          f"called complete: {float((p[~y] >= thresholds[0]).mean()):.1%}; complete called complete "
          f"{float((p[y] >= thresholds[0]).mean()):.1%}), incomplete_below {thresholds[1]:.2f} (<= "
          f"{args.max_false_incomplete:.0%} of complete called incomplete: {float((p[y] < thresholds[1]).mean()):.1%}; "
          f"incomplete called incomplete {float((p[~y] < thresholds[1]).mean()):.1%})")
    if args.write:
        note = (f"fitted by python -m app.offline.fit_prosody --labels {args.labels} --pause-ms {args.pause_ms:g} "
                f"--min-gap-ms {args.min_gap_ms:g} --l2 {args.l2:g}\n# --max-false-complete "
                f"{args.max_false_complete:g} --max-false-incomplete {args.max_false_incomplete:g}: "
                f"{len(kept)} pool samples\n# ({int(y.sum())} complete), {len(set(speakers))} speakers; "
                f"out-of-fold AUC by speaker {auc(p, y):.3f}")
        write_model(model, thresholds, Path(prosody.__file__), note)
        print(f"written to {prosody.__file__}")


if __name__ == "__main__":
    main()
