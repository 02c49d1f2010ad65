"""Fit the first stage's slow-onset gate (app/bargein/onset.py) on the training pool, and show what it buys.

1. Plays: the pool (../shared/corpus-pool) minus its dev_overlap.csv clips. Speech as recorded, through a
   telephone band, and scaled to -40 dBFS (both ways), each as a call (evaluate.call_audio: lead-in, line
   floor, mu-law). Noise: the pool's noise and fit_impulse's synthetic impulsive / tonal noise (two seeds),
   as recorded and phone-band at -12..+12 dB (fit_impulse.play). Silero scores every window once.
2. The first stage is replayed window by window (`first_fire`, the same rule CallVad applies): the sure path
   (SURE_WINDOWS windows >= silero_threshold) or the slow path (`onset_windows` windows >= `onset_threshold`,
   all passing the cheap layers) behind the gate. Candidates of the gate are the slow-path checks: for speech
   those before its sure path fires (they are what can make an onset earlier), for noise all of them.
3. Boosted stumps (fit_impulse.fit_stumps) on onset.features, 5-fold cross-validation grouped by speaker /
   recording; the threshold keeps KEEP of the slow-path speech candidates out of fold. The table shows,
   per line condition, speech missed and onset->decision p50/p95 (decision time on the 20 ms frame clock
   minus the manifest onset), and noise plays that fire (real pool noise and synthetic apart): today's
   first stage, the slow path without a gate, and with the gate (out of fold).
4. Prints the constants to paste into onset.py (fitted on every candidate).

    python -m app.offline.fit_onset [--pool DIR] [--cache FILE] [--keep 0.7] [--threshold 0.7] [--windows 3]

Nothing here looks at ../shared/corpus.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.bargein import onset
from app.bargein.silero import WINDOW, SileroModel
from app.bargein.vad import SAMPLE_RATE, VadConfig
from app.offline import fit_impulse as fi
from app.offline.corpus import Clip
from app.offline.evaluate import LEAD_IN_S, Condition, call_audio, read_clips

I16 = npt.NDArray[np.int16]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
WINDOW_S = WINDOW / SAMPLE_RATE
FRAME_S = 0.02
SURE_WINDOWS = 2  # VadConfig.min_speech_ms (64) in windows
KEEP = 0.7
ROUNDS = 20  # few rounds: the noise side is small (tens of slow-path candidates)
REARM_W = 8  # a noise play re-arms this many windows after a fire (the policy's second look)
ONSET_HORIZON_S = 1.5  # speech candidates: up to this long after the manifest onset
SPEECH_CONDITIONS = {
    "as recorded": Condition(),
    "phone band": Condition(phone_band=True),
    "-40 dBFS": Condition(quiet_db=-40.0),
    "-40 dBFS phone": Condition(phone_band=True, quiet_db=-40.0),
}
NOISE_VARIANTS = [fi.Variant(False, 0), fi.Variant(True, 0), fi.Variant(False, 6), fi.Variant(False, -6),
                  fi.Variant(True, 6), fi.Variant(False, 12), fi.Variant(True, -12)]  # fmt: skip


@dataclass
class Play:
    clip: Clip
    condition: str
    group: str
    audio: I16
    probs: F64
    ok: B  # the cheap layers passed (energy gate and webrtcvad; the floor is quiet on these calls)

    @property
    def synthetic(self) -> bool:
        return self.clip.path.startswith("synthetic")


Gate = Callable[[Play, int, int], bool]  # (play, first window of the run, its last window) -> start?


def build_plays(root: Path) -> list[Play]:
    os.environ["BARGEIN_CORPUS"] = str(root)  # evaluate.call_audio loads clips from the corpus root
    model = SileroModel()
    clips = read_clips(root)
    cfg = VadConfig()
    plays: list[Play] = []
    speech = [c for c in clips if c.kind == "speech"]
    for name, cond in SPEECH_CONDITIONS.items():
        audios = [call_audio(c, cond) for c in speech]
        for c, a, p in zip(speech, audios, fi.score(model, audios), strict=True):
            g, w = fi.cheap_layers(a, cfg)
            plays.append(Play(c, name, fi.group_of(c), a, p, g & w))
    synthetic: dict[str, I16] = {}
    noise = [c for c in clips if c.kind == "noise"]
    for seed in (0, 7):
        for path, (category, pcm) in fi.synthetic_noise(seed).items():
            path = path.replace("synthetic/", f"synthetic{seed}/")
            synthetic[path] = pcm
            noise.append(Clip(path, "noise", category, 5.0, None, "synthetic"))
    for q in fi.play(noise, root, NOISE_VARIANTS, model, synthetic):
        group = q.clip.path if q.clip.path.startswith("synthetic") else fi.group_of(q.clip)
        plays.append(Play(q.clip, q.variant.label(), group, q.audio, q.probs, q.gate & q.web))
    return plays


def first_fire(play: Play, threshold: float, windows: int, gate: Gate | None, sure: float = 0.9) -> int | None:
    """The window at which CallVad first starts speech (None: never), as CallVad decides: the sure path first;
    else a slow run of `windows` windows >= `threshold` asks the gate, and a rejected run starts counting
    again. gate=None: no slow path (today's first stage)."""
    sure_run = slow_run = 0
    for i, (p, ok) in enumerate(zip(play.probs, play.ok, strict=True)):
        sure_run = sure_run + 1 if ok and p >= sure else 0
        slow_run = slow_run + 1 if ok and p >= threshold else 0
        if sure_run >= SURE_WINDOWS:
            return i
        if gate is not None and slow_run >= windows:
            if gate(play, i - windows + 1, i):
                return i
            slow_run = 0
    return None


def run_audio(play: Play, first: int, last: int) -> tuple[I16, list[float]]:
    return play.audio[first * WINDOW : (last + 1) * WINDOW], [float(x) for x in play.probs[first : last + 1]]


def harvest(plays: Sequence[Play], threshold: float, windows: int) -> list[tuple[int, int, int]]:
    """(play index, first window, last window) of every slow-path check the gate would be asked."""
    out: list[tuple[int, int, int]] = []
    for k, play in enumerate(plays):
        asked: list[tuple[int, int, int]] = []

        def ask(p: Play, first: int, last: int, k: int = k, asked: list[tuple[int, int, int]] = asked) -> bool:
            asked.append((k, first, last))
            return False

        if play.clip.kind == "speech":
            first_fire(play, threshold, windows, ask)
            horizon = LEAD_IN_S + (play.clip.speech_onset_s or 0.0) + ONSET_HORIZON_S
            out.extend(a for a in asked if a[2] * WINDOW_S <= horizon)
        else:
            start = 0
            while start < len(play.probs):  # every check over the whole clip, re-armed after a sure fire
                sub = Play(play.clip, play.condition, play.group, play.audio[start * WINDOW :],
                           play.probs[start:], play.ok[start:])  # fmt: skip
                before = len(asked)
                fired = first_fire(sub, threshold, windows, ask)
                out.extend((k, f + start, last + start) for _, f, last in asked[before:])
                if fired is None:
                    break
                start += fired + REARM_W
    return out


def latency_ms(play: Play, fire: int | None) -> float | None:
    if fire is None or play.clip.speech_onset_s is None:
        return None
    decided = math.ceil((fire + 1) * WINDOW_S / FRAME_S - 1e-9) * FRAME_S  # on the frame that completes it
    return (decided - (LEAD_IN_S + play.clip.speech_onset_s)) * 1000


def table(plays: Sequence[Play], fires: Sequence[int | None], label: str) -> list[str]:
    rows = []
    for name in SPEECH_CONDITIONS:
        idx = [i for i, p in enumerate(plays) if p.clip.kind == "speech" and p.condition == name]
        lat = [x for x in (latency_ms(plays[i], fires[i]) for i in idx) if x is not None]
        missed = len(idx) - len(lat)
        p50, p95 = np.percentile(lat, [50, 95]) if lat else (math.nan, math.nan)
        rows.append(f"{name} missed {missed}/{len(idx)} p50 {p50:.0f} p95 {p95:.0f}")
    real = [i for i, p in enumerate(plays) if p.clip.kind == "noise" and not p.synthetic]
    syn = [i for i, p in enumerate(plays) if p.clip.kind == "noise" and p.synthetic]
    rows.append(f"noise fired: real {sum(fires[i] is not None for i in real)}/{len(real)}, "
                f"synthetic {sum(fires[i] is not None for i in syn)}/{len(syn)}")  # fmt: skip
    return [f"{label:<22} " + " | ".join(rows)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "corpus-pool")
    parser.add_argument("--cache", type=Path, help="keep the scored plays in this file (re-used if present)")
    parser.add_argument("--keep", type=float, default=KEEP, help="slow-path speech candidates the gate keeps")
    parser.add_argument("--threshold", type=float, default=0.7, help="the slow path's Silero threshold")
    parser.add_argument("--windows", type=int, default=3, help="the slow path's run length in windows")
    parser.add_argument("--fold-seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.cache is not None and args.cache.exists():
        with open(args.cache, "rb") as fh:
            plays: list[Play] = pickle.load(fh)
    else:
        plays = build_plays(args.pool)
        if args.cache is not None:
            with open(args.cache, "wb") as out:
                pickle.dump(plays, out)

    cands = harvest(plays, args.threshold, args.windows)
    x = np.array([onset.features(*run_audio(plays[k], f, last)) for k, f, last in cands])
    y = np.array([plays[k].clip.kind == "speech" for k, _, _ in cands], dtype=np.float64)
    groups = [plays[k].group for k, _, _ in cands]
    print(f"slow-path candidates: {int(y.sum())} speech, {int(len(y) - y.sum())} noise")
    w = np.where(y == 1, 1 / max(1.0, y.sum()), 1 / max(1.0, len(y) - y.sum()))
    use = np.ones(x.shape[1], dtype=np.bool_)

    names = sorted(set(groups))
    order = np.random.default_rng(args.fold_seed).permutation(len(names))
    fold_of = {names[j]: i % fi.FOLDS for i, j in enumerate(order)}
    folds = np.array([fold_of[g] for g in groups])
    oof = np.zeros(len(y))
    for k in range(fi.FOLDS):
        train = folds != k
        model = fi.fit_stumps(x[train], y[train], w[train], use, onset.WINDOW_MS, rounds=ROUNDS)
        oof[~train] = fi.model_probs(model, x[~train])
    threshold = float(np.quantile(oof[y == 1], 1 - args.keep))
    score = {c: float(o) for c, o in zip(cands, oof, strict=True)}

    index = {id(p): i for i, p in enumerate(plays)}

    def gate_of(table_: dict[tuple[int, int, int], float], th: float) -> Gate:
        return lambda p, first, last: table_.get((index[id(p)], first, last), 0.0) >= th

    print("\nfirst stage on the pool (out-of-fold gate); latency = decision on the frame clock - manifest onset")
    lines: list[str] = []
    lines += table(plays, [first_fire(p, args.threshold, args.windows, None) for p in plays], "today (sure path)")
    lines += table(plays, [first_fire(p, args.threshold, args.windows, lambda *_: True) for p in plays],
                   f"slow {args.threshold} x{args.windows}, no gate")  # fmt: skip
    lines += table(plays, [first_fire(p, args.threshold, args.windows, gate_of(score, threshold)) for p in plays],
                   f"slow + gate keep {args.keep:.0%}")  # fmt: skip
    print("\n".join(lines))

    final = fi.fit_stumps(x, y, w, use, onset.WINDOW_MS, rounds=ROUNDS)
    print("\n# --- paste into app/bargein/onset.py ---")
    print(f"WINDOW_MS = {onset.WINDOW_MS!r}  # the gate sees the slow path's {args.windows} windows")
    for name, values, fmt in (("_FEATURE", final.feature, "d"), ("_SPLIT", final.split, "g"),
                              ("_LEFT", final.left, "g"), ("_RIGHT", final.right, "g")):  # fmt: skip
        body = ", ".join(format(float(v) if fmt == "g" else int(v), fmt) for v in values) + ","
        suffix = ", dtype=np.int64" if fmt == "d" else ""
        print(f"{name} = np.array([\n" + textwrap.fill(body, 110, initial_indent="    ", subsequent_indent="    ")
              + f"\n]{suffix})")  # fmt: skip
    print(f"_BIAS = {final.bias:.6f}")
    print(f"THRESHOLD = {threshold:.6f}")


if __name__ == "__main__":
    main()
