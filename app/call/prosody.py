"""Is the caller's turn over? A small prosodic end-of-turn model, fitted on our own phone audio.

Theory of operation
-------------------
At a short pause (~250 ms) the session asks whether the caller finished or stopped mid-sentence. The words
cannot always tell; the voice often can. A statement's end falls in pitch to below the speaker's usual level,
fades in loudness and stretches its last syllable; a mid-sentence pause more often holds the pitch level (or
rises: "continuation rise"), stops abruptly and keeps the pace. This module measures those cues from the
last half second of speech before the pause, each relative to the same caller's earlier speech in the turn
(a deep voice's "low" is not a high voice's), and a logistic regression turns them into P(complete).

Pitch: a plain autocorrelation tracker. 40 ms frames every 10 ms, Hann-windowed, the autocorrelation divided
by the window's own (so a long lag is not penalised for its shorter overlap), the best peak between 60 and
400 Hz refined by a parabola. The phone band (300-3400 Hz) removes most voices' fundamental, but its
harmonics keep the period, which is what autocorrelation finds. A frame is voiced when the peak is strong
(>= VOICED_R) and the frame is speech (its level above the turn's speech floor). Octave slips (a lag of two
periods) are folded back towards the turn's median pitch.

Features (FEATURES names them in order; all relative, so the line's gain does not matter):

    final_f0     last ~100 ms of voiced pitch vs the turn's median (octaves)
    f0_slope     pitch slope over the last voiced half second (octaves/s)
    f0_fall      the tail's highest pitch minus its final pitch (octaves)
    final_level  last 100 ms of speech vs the turn's median speech level (dB)
    level_slope  level slope over the tail's speech frames (dB/s)
    last_run     the last voiced run's length vs the turn's median run (log ratio): final lengthening
    rate         voiced runs per second in the last 1.5 s vs the whole turn (log ratio): slowing down
    tail_voiced  share of the tail's speech frames that are voiced
    unvoiced_end the speech after the last voiced frame (s): ending on a fricative or a stop's release

The coefficients below were fitted by app/offline/fit_prosody.py on /work/shared/corpus-pool (read speech,
phone band + mu-law, the dev-overlap clips left out); nothing is trained at run time. The labels: pauses
inside the pool's source utterances, complete where the embedded recognizer (Whisper, hearing what follows
too) ends a sentence, incomplete after any other word. Validated by speaker (5 folds, out of fold): AUC
0.65. That is a weak cue: at the operating points written with it, 2% of mid-sentence pauses are called
complete and 3% of sentence ends; 20% of mid-sentence pauses are called incomplete and 4% of sentence ends.
(The chunk-end labels of app/offline/eot_eval.py give it 0.54, Smart Turn 0.47: neither the pool's chunk
ends nor its utterance ends are reliably a sentence's end.)

Everything here is pure numpy: no I/O, no clock. One ask costs 2-3 ms of CPU at the median and up to
~15 ms on a 7 s turn (the fit's and app/bench/turns.py's measurements on the shared 2-core machine), more
than the event loop should give, so the session runs it off the loop, as it does Smart Turn
(app/call/end_of_turn.py `EndOfTurn`: one worker thread; numpy's FFTs release the GIL).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I16 = npt.NDArray[np.int16]

RATE = 8000
HOP = 80  # 10 ms
WIN = 320  # 40 ms: two periods of the lowest pitch tracked
MIN_LAG = RATE // 400  # 400 Hz
MAX_LAG = RATE // 60  # 60 Hz
NFFT = 512  # >= WIN + MAX_LAG: the circular autocorrelation does not wrap at the lags searched
VOICED_R = 0.45  # normalised autocorrelation peak above which a frame is voiced
NEAR_BEST = 0.9
HISTORY_S = 6.0  # how far back the speaker's own medians reach (bounds the cost on long turns)
TAIL_S = 0.5  # the speech before the pause that the cues are read from
FINAL_S = 0.1
RATE_S = 1.5
MIN_VOICED = 5  # fewer voiced frames in the tail: no verdict (NaN)

FEATURES = ("final_f0", "f0_slope", "f0_fall", "final_level", "level_slope", "last_run", "rate",
            "tail_voiced", "unvoiced_end")


@dataclass(frozen=True)
class Track:
    """Per 10 ms frame: level (dBFS), pitch (Hz; NaN where unvoiced), whether it is speech."""

    level_db: F64
    f0: F64
    speech: npt.NDArray[np.bool_]
    periodicity: F64  # the chosen autocorrelation peak (-1: none)

    @property
    def voiced(self) -> npt.NDArray[np.bool_]:
        return np.asarray(np.isfinite(self.f0))


_HANN = np.hanning(WIN)
_HANN_AC = np.fft.irfft(np.abs(np.fft.rfft(_HANN, NFFT)) ** 2)[: MAX_LAG + 2]
_HANN_AC = _HANN_AC / _HANN_AC[0]


def track(pcm16: I16) -> Track:
    """Level, pitch and speech per 10 ms frame of 8 kHz audio (frame i covers samples i*HOP .. i*HOP+WIN)."""
    x = pcm16.astype(np.float64) / 32768.0
    n = (len(x) - WIN) // HOP + 1
    if n <= 0:
        empty = np.zeros(0)
        return Track(empty, empty, np.zeros(0, dtype=bool), empty)
    frames = np.lib.stride_tricks.sliding_window_view(x, WIN)[::HOP][:n]
    # The level of the frame's central 10 ms: sharp at speech edges, where the 40 ms window is not.
    mid = frames[:, (WIN - HOP) // 2:(WIN + HOP) // 2]
    level = 10.0 * np.log10((mid * mid).mean(axis=1) + 1e-12)
    floor = max(-45.0, float(level.max()) - 30.0)  # as app/offline/eot_eval.py finds speech
    speech = level > floor
    centred = (frames - frames.mean(axis=1, keepdims=True)) * _HANN
    power = np.abs(np.fft.rfft(centred, NFFT, axis=1)) ** 2
    ac = np.fft.irfft(power, axis=1)[:, : MAX_LAG + 2]
    r = ac / np.maximum(ac[:, :1], 1e-12) / _HANN_AC
    band = r[:, MIN_LAG: MAX_LAG + 1]
    # A periodic frame correlates as well at two or three periods as at one: take the shortest lag that is a
    # local peak within NEAR_BEST of the best, not the best itself.
    local = np.zeros_like(band, dtype=bool)
    # Interior peaks only: a value at the search's edge is the slope of the zero-lag lobe (a low formant),
    # not a period.
    local[:, 1:-1] = (band[:, 1:-1] >= band[:, :-2]) & (band[:, 1:-1] > band[:, 2:])
    best = np.where(local, band, -1.0).max(axis=1, keepdims=True)
    ok = local & (band >= NEAR_BEST * best)
    k = np.argmax(ok, axis=1)
    peak = np.where(ok.any(axis=1), band[np.arange(n), k], -1.0)  # no interior peak: not voiced
    lag = (k + MIN_LAG).astype(np.float64)
    # Parabolic refinement of the peak (not at the search's edges).
    inner = (k > 0) & (k < band.shape[1] - 1)
    rows = np.flatnonzero(inner)
    a, b, c = band[rows, k[rows] - 1], band[rows, k[rows]], band[rows, k[rows] + 1]
    denom = a - 2.0 * b + c
    shift = np.where(np.abs(denom) > 1e-9, 0.5 * (a - c) / np.where(denom == 0, 1.0, denom), 0.0)
    lag[rows] += np.clip(shift, -0.5, 0.5)
    f0 = np.where((peak >= VOICED_R) & speech, RATE / lag, np.nan)
    f0 = _fold_octaves(f0)
    return Track(level, f0, speech, peak)


def _fold_octaves(f0: F64) -> F64:
    """Halve or double pitches an octave off the median (the tracker's usual slip), in place of a smoother."""
    voiced = np.isfinite(f0)
    if voiced.sum() < 3:
        return f0
    med = float(np.median(f0[voiced]))
    out = f0.copy()
    out[voiced & (out > 1.7 * med)] /= 2.0
    out[voiced & (out < med / 1.7)] *= 2.0
    return out


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(start, length) of each run of True, a single False frame inside a run bridged."""
    m = mask.copy()
    inside = np.flatnonzero(~m[1:-1] & m[:-2] & m[2:]) + 1
    m[inside] = True
    edges = np.diff(np.concatenate([[0], m.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True)]


def _slope(t: F64, y: F64) -> float:
    if len(t) < 3 or float(np.ptp(t)) <= 0:
        return 0.0
    tc = t - t.mean()
    return float((tc * (y - y.mean())).sum() / (tc * tc).sum())


def features(pcm16: I16) -> F64 | None:
    """The cues (FEATURES, in order) for the caller's audio up to now, its pause included; None when the
    last half second of speech has too little voice to read (the model then gives no verdict)."""
    pcm = pcm16[-int((HISTORY_S + 1.0) * RATE):]
    tr = track(pcm)
    speech_idx = np.flatnonzero(tr.speech)
    if len(speech_idx) == 0:
        return None
    end = int(speech_idx[-1])  # the last speech frame: the pause starts after it
    steps = int(round(TAIL_S * RATE / HOP))
    tail = np.arange(max(0, end - steps + 1), end + 1)
    voiced = tr.voiced
    tail_voiced_idx = tail[voiced[tail]]
    all_voiced = np.flatnonzero(voiced[: end + 1])
    if len(tail_voiced_idx) < MIN_VOICED or len(all_voiced) < 2 * MIN_VOICED:
        return None
    log_f0 = np.log2(tr.f0)
    med_f0 = float(np.median(log_f0[all_voiced]))
    final_n = max(3, int(round(FINAL_S * RATE / HOP)))
    final = tail_voiced_idx[-final_n:]
    final_f0 = float(np.median(log_f0[final])) - med_f0
    f0_slope = float(np.clip(_slope(tail_voiced_idx * HOP / RATE, log_f0[tail_voiced_idx]), -8.0, 8.0))
    f0_fall = float(np.max(log_f0[tail_voiced_idx])) - float(np.median(log_f0[final]))

    sp = np.flatnonzero(tr.speech[: end + 1])
    med_level = float(np.median(tr.level_db[sp]))
    tail_sp = tail[tr.speech[tail]]
    final_level = float(np.mean(tr.level_db[tail_sp[-final_n:]])) - med_level
    level_slope = float(np.clip(_slope(tail_sp * HOP / RATE, tr.level_db[tail_sp]), -200.0, 200.0))

    runs = _runs(voiced[: end + 1])
    lengths = np.array([n for _, n in runs], dtype=np.float64)
    last_run = float(np.log(lengths[-1] / max(np.median(lengths), 1.0)))
    speech_s = len(sp) * HOP / RATE
    recent = int(round(RATE_S * RATE / HOP))
    recent_runs = sum(1 for s, _ in runs if s > end - recent)
    recent_speech_s = max(int(tr.speech[max(0, end - recent + 1): end + 1].sum()) * HOP / RATE, 0.1)
    rate = float(np.log((recent_runs / recent_speech_s + 0.5) / (len(runs) / max(speech_s, 0.1) + 0.5)))
    tail_voiced = float(voiced[tail_sp].mean())
    unvoiced_end = (end - int(tail_voiced_idx[-1])) * HOP / RATE
    return np.array([final_f0, f0_slope, f0_fall, final_level, level_slope, last_run, rate, tail_voiced,
                     unvoiced_end], dtype=np.float64)


# --- the fitted model (app/offline/fit_prosody.py writes these numbers; do not edit by hand) -------------
# fitted by python -m app.offline.fit_prosody --labels words --pause-ms 250 --min-gap-ms 100 --l2 10
# --max-false-complete 0.02 --max-false-incomplete 0.05: 1254 pool samples
# (227 complete), 198 speakers; out-of-fold AUC by speaker 0.654
MEAN = np.array([-0.115585, -0.262255, 0.593791, -4.14647, -7.34603, -0.0565382, -0.0218419, 0.854748, 0.0183652])
SCALE = np.array([0.275511, 1.03397, 0.3639, 4.26013, 20.8054, 1.08386, 0.216052, 0.124604, 0.0440797])
WEIGHTS = np.array([-0.408686, 0.0770574, -0.165153, -0.418891, -0.107393, 0.240985, 0.124406, -0.148713, 0.0201147])
BIAS = -1.62489
COMPLETE_AT = 0.41
INCOMPLETE_BELOW = 0.10
# --- end of the fitted numbers


CLIP = 4.0  # standardised features are clipped here: a tracker's slip cannot swing the verdict on its own


@dataclass(frozen=True)
class Logistic:
    """P(complete) = sigmoid(bias + weights . clip((x - mean) / scale))."""

    mean: F64
    scale: F64
    weights: F64
    bias: float

    def standardise(self, x: F64) -> F64:
        return np.clip((x - self.mean) / self.scale, -CLIP, CLIP)

    def p(self, x: F64) -> float:
        z = self.bias + float(np.dot(self.weights, self.standardise(x)))
        return float(1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0))))


FITTED = Logistic(MEAN, SCALE, WEIGHTS, BIAS)


class ProsodyModel:
    """The end-of-turn model interface (as SmartTurn's): P(complete) for the caller's 8 kHz audio up to now.
    NaN when the tail has too little voice to judge (a verdict of "unsure"). `thresholds`: the operating
    points picked with the fit (complete_at, incomplete_below), used unless TURN_MODEL_* set their own."""

    path = "app/call/prosody.py"  # where the numbers live (Smart Turn reports its weights' file)

    def __init__(self, model: Logistic = FITTED,
                 thresholds: tuple[float, float] = (COMPLETE_AT, INCOMPLETE_BELOW)) -> None:
        self.model = model
        self.thresholds = thresholds

    def p_complete(self, pcm16_8k: I16) -> float:
        x = features(pcm16_8k)
        return float("nan") if x is None else self.model.p(x)
