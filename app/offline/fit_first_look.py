"""Fit the first look (app/bargein/first_look.py) on the training pool and the extra noise set.

Theory of operation
-------------------
The first look decides, at the moment the first stage fires (64 ms of candidate), whether `resume` may clear
at once or must wait for the second look (impulse.py, 160 ms), as `confirm` does. Its data is the second
stage's (fit_impulse: the pool minus dev_overlap.csv, synthetic bursts, and `--extra` sets such as the one
app/offline/extra_noise.py builds from Debian packages, played flat and through a phone band, noise also
6 dB up and down), but only the HARD part of it: live first-stage speech onsets against noise candidates that
Silero was sure of (the live ones, and those at 0.7 or more for 64 ms). Fitted on every noise event, as the
second stage is, stumps spend themselves on clicks and rain that never reach a decision; fitted on the hard
part they separate coughs and sneezes from speech onsets at 64 ms (measured: 9 of 22 live cough candidates
and 6 of 10 sneezes at 0.3% of speech onsets, against 1 of 10 and 0 of 5 by the second stage's stumps).

The threshold is a budget: the share of live speech onsets the look may doubt (they clear 96 ms later, when
the second look says speech). Printed per budget, out of fold (5 folds grouped by speaker and by recording):
speech onsets doubted, and doubted AND called noise by the shipped second look (those wait for
`doubt_max_ms`: the real cost), live noise candidates doubted, and doubted AND called noise (the clears
avoided), per category. Prints the constants to paste into first_look.py. Nothing here reads the report set.

    python -m app.offline.fit_first_look --extra DIR [--pool DIR] [--budget 0.01] [--cache FILE]
"""

from __future__ import annotations

import argparse
import pickle
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.bargein import impulse
from app.bargein.silero import SileroModel
from app.offline.corpus import Clip, corpus_root
from app.offline.fit_impulse import (
    FOLDS,
    Candidate,
    Played,
    Variant,
    constants_source,
    extra_noise_clips,
    feature_matrix,
    fit_stumps,
    fmt_rate,
    folds_of,
    harvest,
    model_probs,
    play,
    pool_clips,
    sample_weights,
    synthetic_noise,
)

WINDOW_MS = 64.0  # complete when the first stage fires: the look adds no latency to the candidates it passes
HARD_PROB = 0.7  # a noise candidate Silero held at this for 64 ms is one a first stage could fire on
CONFIRM_MS = 160.0  # the second look's window: a doubted candidate is confirmed when the second look runs
BUDGETS = (0.01, 0.02, 0.03, 0.05)
CONFIRM_BUDGETS = (0.003, 0.01, 0.03)
SHIPPED_BUDGET = 0.03
SHIPPED_CONFIRM_BUDGET = 0.03


def hard(cands: Sequence[Candidate]) -> list[Candidate]:
    """Live speech onsets, and the noise candidates Silero was sure of."""
    return [
        c for c in cands
        if (c.clip.kind == "speech" and c.live)
        or (c.clip.kind == "noise" and (c.live or min(c.probs[:2], default=0.0) >= HARD_PROB))
    ]  # fmt: skip


def second_look_noise(cands: Sequence[Candidate]) -> npt.NDArray[np.bool_]:
    """The shipped second stage's verdict on each candidate's first 160 ms: noise (True) or speech."""
    n = impulse.window_samples()
    k = impulse.window_probabilities()
    return np.array([not impulse.is_speech(c.audio[:n], c.probs[:k]) for c in cands])


def load_plays(pool: Path, extras: Sequence[Path], cache: Path | None) -> list[Played]:
    if cache is not None and cache.exists():
        with open(cache, "rb") as fh:
            played: list[Played] = pickle.load(fh)  # our own file, written below
        return played
    clips = pool_clips(pool)
    for extra in extras:
        clips += extra_noise_clips(extra)
    synth = synthetic_noise()
    synth_clips = [
        Clip(path, "noise", cat, 5.0, None, f"synthetic:{cat}:{i % FOLDS}")
        for i, (path, (cat, _)) in enumerate(synth.items())
    ]
    variants = [Variant(), Variant(True), Variant(False, 6.0), Variant(False, -6.0), Variant(True, 6.0)]
    played = play(clips + synth_clips, pool, variants, SileroModel(), {k: v for k, (_, v) in synth.items()})
    if cache is not None:
        with open(cache, "wb") as fh:
            pickle.dump(played, fh)
    return played


def out_of_fold(x: np.ndarray, y: np.ndarray, w: np.ndarray, folds: np.ndarray, window_ms: float) -> np.ndarray:
    use = np.ones(len(impulse.FEATURES), bool)  # on hard candidates Silero's trajectory says something
    oof = np.zeros(len(x))
    for f in range(FOLDS):
        tr = folds != f
        oof[~tr] = model_probs(fit_stumps(x[tr], y[tr], w[tr], use, window_ms), x[~tr])
    return oof


def fitted(x: np.ndarray, y: np.ndarray, w: np.ndarray, window_ms: float, threshold: float) -> impulse.ImpulseModel:
    m = fit_stumps(x, y, w, np.ones(len(impulse.FEATURES), bool), window_ms)
    return impulse.ImpulseModel(window_ms, m.feature, m.split, m.left, m.right, m.bias, threshold)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.offline.fit_first_look", description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=Path, default=corpus_root().parent / "corpus-pool")
    parser.add_argument("--extra", type=Path, action="append", default=[], help="extra noise set (pool layout)")
    parser.add_argument("--budget", type=float, default=SHIPPED_BUDGET, help="share of speech onsets doubted")
    parser.add_argument("--confirm-budget", type=float, default=SHIPPED_CONFIRM_BUDGET,
                        help="share of speech onsets the confirming look calls noise")
    parser.add_argument("--fold-seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, help="keep the scored plays in this file (re-used if present)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    played = load_plays(args.pool, args.extra, args.cache)
    cands = hard(harvest(played, rearm_w=int(round(WINDOW_MS / 32))))
    y = np.array([c.clip.kind == "speech" for c in cands], float)
    w = sample_weights(cands)
    folds = folds_of(cands, args.fold_seed)
    x_first, x_confirm = feature_matrix(cands, WINDOW_MS), feature_matrix(cands, CONFIRM_MS)
    first, confirm = out_of_fold(x_first, y, w, folds, WINDOW_MS), out_of_fold(x_confirm, y, w, folds, CONFIRM_MS)
    speech, live_noise = y == 1, (y == 0) & np.array([c.live for c in cands])
    shipped = second_look_noise(cands)
    cats = np.array([c.clip.category for c in cands])
    print(f"{len(played)} plays scored, {len(cands)} hard candidates ({int(speech.sum())} live speech onsets, "
          f"{int((y == 0).sum())} noise, {int(live_noise.sum())} of them live) in {time.perf_counter() - t0:.0f} s")
    print("out of fold: a doubted candidate clears only once the confirming look (or the shipped second look) says")
    print("speech; speech doubted waits +96 ms, speech doubted and called noise waits for doubt_max_ms (~1 s).")
    for budget in BUDGETS:
        doubted = first < float(np.quantile(first[speech], budget))
        for cb in (*CONFIRM_BUDGETS, None):
            late = shipped if cb is None else confirm < float(np.quantile(confirm[speech], cb))
            held = doubted & live_noise & late
            name = "shipped second look" if cb is None else f"confirm {cb:.1%}"
            print(f"  first {budget:.1%}, {name:>19}: speech doubted "
                  f"{int((doubted & speech).sum())}/{int(speech.sum())}, "
                  f"~1 s {int((doubted & speech & late).sum())}; live noise not cleared "
                  f"{fmt_rate(int(held.sum()), int(live_noise.sum()))}: " + ", ".join(
                      f"{k} {int((held & (cats == k)).sum())}/{int((live_noise & (cats == k)).sum())}"
                      for k in sorted(set(cats[live_noise]))))  # fmt: skip
    first_thr = float(np.quantile(first[speech], args.budget))
    confirm_thr = float(np.quantile(confirm[speech], args.confirm_budget))
    print(f"\n# --- paste into app/bargein/first_look.py (budgets {args.budget:.1%} / {args.confirm_budget:.1%}, "
          "thresholds out of fold) ---")
    print("# the first look")
    print(constants_source(fitted(x_first, y, w, WINDOW_MS, first_thr)))
    print("# the confirming look")
    print(constants_source(fitted(x_confirm, y, w, CONFIRM_MS, confirm_thr)))


if __name__ == "__main__":
    main()
