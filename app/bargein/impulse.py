"""Second stage of the barge-in detector: is a speech candidate really speech, or an impulsive noise?

Theory of operation
-------------------
The first stage (`vad.CallVad`) fires SpeechStarted once Silero has been sure for 64 ms. Coughs, sneezes,
barks, laughter and music can hold Silero above its threshold for that long. This stage looks once at the
first `WINDOW_MS` of the candidate (PCM16, 8 kHz, from the VAD's speech start) and at the Silero
probabilities of the windows in that span, and returns a speech probability from boosted decision stumps
over cheap features, behind a floor on Silero's mean probability over the window:

- voicing: the normalised autocorrelation peak in the 62-400 Hz pitch range, per 32 ms frame
  (mean, fraction of voiced frames) and how much the pitch lag jumps between voiced frames;
- spectrum: flatness, centroid, share of energy under 1 kHz, and flux between frames;
- energy contour: attack (peak over first frame), decay (peak over last frame), where the peak falls,
  spread of frame levels;
- Silero trajectory: mean, minimum, last probability and its spread (only the mean is used, as a floor:
  the pool has too little noise that fools Silero to fit weights on these).

The numbers in `_FEATURE`, `_SPLIT`, `_LEFT`, `_RIGHT`, `_BIAS`, `THRESHOLD` and `PROB_FLOOR` were fitted
offline on the training pool by `python -m app.offline.fit_impulse` (which prints them); nothing is learned
at run time. The module is pure: numpy in, a float out, about 0.2 ms per candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
FRAME = 256  # 32 ms analysis frames
HOP = 128  # 16 ms
NFFT = 512  # zero-padded: the autocorrelation of a 256-sample frame without wrap-around
MIN_LAG, MAX_LAG = 20, 128  # pitch 400 Hz .. 62.5 Hz
VOICED = 0.45  # autocorrelation peak above which a frame counts as voiced
_EPS = 1e-10

F64 = npt.NDArray[np.float64]

FEATURES = (
    "harm_mean", "voiced_frac", "pitch_jump", "flatness", "centroid", "low_ratio", "flux",
    "attack_db", "decay_db", "peak_pos", "level_std_db",
    "prob_mean", "prob_min", "prob_last", "prob_std",
)  # fmt: skip

# --- fitted by `python -m app.offline.fit_impulse` (paste its output here) -------------------------------
# fmt: off
WINDOW_MS = 160.0
_FEATURE = np.array([
    5, 2, 5, 1, 5, 7, 1, 2, 6, 5, 2, 10, 7, 1, 2, 3, 6, 2, 10, 2, 2, 5, 7, 3, 4, 4, 4, 10, 2, 2, 8, 2, 10, 6, 1,
    4, 0, 10, 5, 4, 3, 5, 7, 3, 6, 2, 10, 2, 4, 5, 8, 6, 0, 10, 8, 10, 4, 1, 4, 2, 2, 5, 10, 8, 6, 0, 4, 3, 3,
    4, 6, 2, 10, 2, 8, 5, 10, 0, 4, 1, 2, 6, 10, 8, 0, 10, 6, 6, 5, 3, 4, 4, 3, 4, 10, 8, 0, 9, 7, 10, 5, 4, 0,
    2, 2, 3, 4, 8, 10, 1, 10, 4, 5, 6, 7, 8, 10, 0, 3, 6, 2, 4, 5, 8, 10, 6, 3, 10, 8, 7, 10, 7, 0, 6, 4, 5, 2,
    2, 4, 5, 0, 10, 8, 4, 4, 4, 7, 10, 1, 6, 6, 8, 2, 10, 6, 8, 10, 5, 4, 5, 8, 10, 7, 2, 2, 0, 3, 5, 3, 4, 4,
    3, 6, 6, 10, 8, 6, 0, 6, 0, 10, 1, 4, 5, 4, 5, 4, 7, 9, 10, 8, 10, 6, 4, 2, 2, 5, 6, 4, 3,
], dtype=np.int64)
_SPLIT = np.array([
    0.541744, 0.0931094, 0.3982, 0.222222, 0.644359, 0.956123, 0, 0, 0.218071, 0.350534, 0.0931094, 7.16504,
    0.411452, 0, 0, 0.250834, 0.294526, 0.0451272, 8.60173, 0, 0.0451272, 0.223568, 1.22886, 0.344244,
    0.0451294, 0.496676, 0.154821, 7.16504, 0.314192, 0, 0.182107, 0.0451272, 4.13253, 0.218071, 0.666667,
    0.0451294, 0.245618, 8.60173, 0.888127, 0.496676, 0.00267713, 0.223568, 2.85631, 0.344244, 0.882917, 0,
    4.13253, 0.040642, 0.448559, 0.0885888, 3.95087, 0.294526, 0.550724, 7.57689, 33.2981, 3.48921, 0.154821, 0,
    0.496676, 0, 0.040642, 0.0885888, 10.2781, 6.01469, 0.115717, 0.781604, 0.0451294, 0.00267713, 0.344244,
    0.448559, 0.882917, 0, 4.91886, 0.040642, 33.2981, 0.0885888, 8.60173, 0.245618, 0.496676, 0.666667, 0,
    1.18454, 2.06593, 6.01469, 0.781604, 4.13253, 0.115717, 0.742196, 0.0333653, 0.0100138, 0.146043, 0.0451294,
    0.344244, 0.383979, 10.2781, 33.2981, 0.824162, 0.125, 20.9158, 7.16504, 0.0885888, 0.56858, 0.245618, 0,
    0.040642, 0.00267713, 0.154821, 15.9505, 4.13253, 0.666667, 8.60173, 0.448559, 0.223568, 0.355409, 20.9158,
    6.01469, 2.06593, 0.781604, 0.0100138, 0.742196, 0, 0.321699, 0.0333653, 33.2981, 10.2781, 0.882917,
    0.344244, 4.91886, 15.9505, 13.112, 3.48921, 0.956123, 0.824162, 0.115717, 0.56858, 0.0885888, 0.040642, 0,
    0.383979, 0.223568, 0.245618, 7.16504, 15.9505, 0.496676, 0.146043, 0.0722753, 13.112, 4.91886, 0.666667,
    0.978796, 1.18454, 3.35365, 1, 1.83671, 0.882917, 33.2981, 10.2781, 0.0333653, 0.321699, 0.223568, 18.8542,
    5.94884, 20.9158, 0.040642, 0, 0.72892, 0.00267713, 0.99137, 0.0100138, 0.128232, 0.448559, 0.344244,
    0.978796, 0.882917, 7.57689, 20.5812, 0.409882, 0.824162, 0.115717, 0.245618, 4.13253, 0.666667, 0.0451294,
    0.0885888, 0.56858, 0.541744, 0.240913, 13.112, 0.125, 7.57689, 15.9505, 4.13253, 0.672391, 0.086353, 0,
    0.040642, 0.99137, 0.978796, 0.128232, 0.0100138,
])
_LEFT = np.array([
    -0.410515, 0.150724, -0.372478, -0.318781, -0.200218, -0.239089, -0.34575, -0.226536, -0.533772, -0.259377,
    0.0696217, -0.0657806, -0.193553, -0.286481, -0.161694, 0.0300736, -0.332224, 0.0737777, -0.0391743,
    -0.125239, 0.0666601, -0.241392, -0.112746, 0.0162992, -0.361846, -0.011241, 0.0838974, -0.0443483,
    0.0349931, -0.107015, 0.166123, 0.0544964, -0.071476, -0.300167, -0.0720478, -0.320093, -0.26487,
    -0.0264616, -0.040967, -0.0095894, -0.301123, -0.196928, -0.0612539, 0.00993649, 0.0428881, -0.0861741,
    -0.0601858, 0.0518299, -0.0101696, -0.275851, 0.0664443, -0.199285, -0.0529775, -0.0294247, 0.00691785,
    -0.0583338, 0.0588869, -0.169909, -0.00836359, -0.0730201, 0.0439485, -0.249322, -0.0154634, 0.051762,
    -0.320741, -0.0154727, -0.264722, -0.235199, 0.00683306, -0.00907124, 0.0349936, -0.0684665, -0.0394429,
    0.0396179, 0.00609633, -0.226693, -0.0178797, -0.208786, -0.00717689, -0.0422858, -0.0625019, 0.0067199,
    -0.0800046, 0.0450499, -0.0123734, -0.0426323, -0.289346, 0.0463665, -0.321489, -0.077747, 0.0508728,
    -0.230212, 0.00480238, -0.0116341, -0.0121912, 0.00564788, -0.00714053, -0.0425999, 0.00589889, -0.0207712,
    -0.203805, -0.00438216, -0.18374, -0.0505387, 0.0336432, -0.183159, 0.042157, 0.0177432, -0.038121,
    -0.0326493, -0.0142164, -0.00642266, -0.130169, -0.105703, 0.00508986, 0.0346171, -0.0697139, -0.00981499,
    -0.0649816, 0.0385885, -0.046768, -0.0133027, -0.29384, 0.00457207, -0.010589, 0.0264622, 0.00374564,
    -0.0257731, 0.0176923, 0.00984339, -0.0360394, -0.0448481, -0.00564115, -0.253923, -0.00362447, -0.177665,
    0.0267575, -0.0450486, -0.00899535, -0.109378, -0.154287, -0.0165942, 0.0161404, -0.004973, 0.0400325,
    -0.11556, 0.00884714, -0.0242341, -0.0301306, -0.0151521, 0.00476395, 0.0383424, -0.00355452, -0.0593261,
    0.0231392, 0.00414648, -0.00920595, -0.269125, -0.0114401, -0.0995448, 0.0113803, -0.0192504, 0.00449176,
    0.0236979, -0.040416, -0.0117685, -0.145856, -0.00377274, -0.0538057, 0.043284, -0.00504621, 0.00289597,
    -0.0135747, 0.021832, -0.0131219, 0.010705, -0.0719519, -0.00474246, -0.226959, -0.137363, -0.0249979,
    -0.025296, -0.160731, -0.148234, -0.00325777, 0.0439151, 0.0167182, 0.00772444, -0.0299398, -0.0128647,
    0.013145, -0.0246561, 0.0352299, -0.0684869, -0.034147, 0.0233382, -0.00309621, -0.0125578, 0.0379404,
    -0.0482201,
])
_RIGHT = np.array([
    0.218987, -0.349915, 0.118863, 0.097013, 0.132679, 0.10599, 0.0509352, 0.0905669, 0.0253175, 0.0540833,
    -0.198494, 0.184279, 0.0585346, 0.0341508, 0.0695353, -0.278974, 0.0230891, -0.1197, 0.206975, 0.0563834,
    -0.102985, 0.026788, 0.0548016, -0.331888, 0.0144892, 0.530057, -0.0641797, 0.12888, -0.147595, 0.0492513,
    -0.0275264, -0.0824148, 0.0657419, 0.0149328, 0.0663765, 0.0119965, 0.014105, 0.143628, 0.091068, 0.419841,
    0.0121474, 0.0184827, 0.0534724, -0.306348, -0.0679881, 0.0397516, 0.0543426, -0.0669454, 0.300436,
    0.0111303, -0.0420907, 0.0141728, 0.0497996, 0.104328, -0.34018, 0.0402317, -0.0410672, 0.0137704, 0.315381,
    0.0345418, -0.0554667, 0.00922087, 0.146543, -0.045802, 0.00690829, 0.149498, 0.00815852, 0.00850246,
    -0.284897, 0.227356, -0.0525916, 0.0317219, 0.0528567, -0.0481466, -0.286881, 0.00759317, 0.100717,
    0.00841338, 0.244934, 0.0399591, 0.0297367, -0.236785, 0.0194571, -0.0394181, 0.124325, 0.0398622,
    0.00523498, -0.0326848, 0.00442122, 0.0177377, -0.0288343, 0.00620242, -0.264263, 0.123504, 0.116072,
    -0.260906, 0.18562, 0.0296621, -0.232011, 0.0622207, 0.00622687, 0.322263, 0.00670593, 0.0236312,
    -0.0403929, 0.00656108, -0.0275878, -0.0613615, 0.0355191, 0.0320022, 0.0831494, 0.164218, 0.00979938,
    0.00956627, -0.194683, -0.0298629, 0.0170776, 0.104523, 0.0151153, -0.0259588, 0.0223679, 0.0753107,
    0.00340672, -0.202169, 0.102301, -0.037737, -0.244736, 0.0345481, -0.0617331, -0.0939481, 0.0249815,
    0.0195778, 0.156072, 0.00353549, 0.243689, 0.00491666, -0.0314908, 0.021275, 0.0969641, 0.00761309,
    0.00492971, 0.0492058, -0.0564906, 0.163621, -0.0210549, 0.00827789, -0.0823832, 0.0329856, 0.0299654,
    0.049945, -0.167475, -0.0201261, 0.205232, 0.0117664, -0.0325016, -0.167121, 0.0914639, 0.00249306,
    0.063335, 0.00652622, -0.0553455, 0.0370239, -0.161682, -0.0276831, 0.0192708, 0.0561949, 0.00514386,
    0.198103, 0.012407, -0.0164128, 0.128118, -0.222977, 0.0438862, -0.0306343, 0.0478493, -0.0632176,
    0.00845004, 0.137408, 0.00263652, 0.00407542, 0.0230352, 0.0250795, 0.00340623, 0.00347698, 0.212483,
    -0.0126402, -0.0363653, -0.0709481, 0.0207277, 0.0470159, -0.0447831, 0.0231674, -0.0159201, 0.00802903,
    0.0163034, -0.0266429, 0.171683, 0.0411433, -0.0139224, 0.0110056,
])
_BIAS = 0.000000
THRESHOLD = 0.030546
PROB_FLOOR = 0.908299
# fmt: on
# --- end of fitted numbers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImpulseModel:
    """Boosted decision stumps over `FEATURES`: z = bias + sum_k (left_k if f[feature_k] <= split_k else
    right_k), p = sigmoid(z). Stumps, not a linear model: speech sits between steady pitch (music, alarms)
    and no pitch (bursts), which no single weight per feature can express."""

    window_ms: float
    feature: npt.NDArray[np.int64]
    split: F64
    left: F64
    right: F64
    bias: float
    threshold: float
    # Silero's mean probability over the window's 32 ms windows: fitted on speech alone (the pool has almost
    # no noise that fools Silero for 64 ms), as the level all but 0.25% of speech candidates stay above.
    prob_floor: float = 0.0

    def probability(self, features: F64) -> float:
        if features[_PROB_MEAN] < self.prob_floor:
            return 0.0
        z = self.bias + float(np.where(features[self.feature] <= self.split, self.left, self.right).sum())
        return float(1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0))))


_PROB_MEAN = FEATURES.index("prob_mean")
FITTED = ImpulseModel(WINDOW_MS, _FEATURE, _SPLIT, _LEFT, _RIGHT, _BIAS, THRESHOLD, PROB_FLOOR)


def _frames(x: F64) -> F64:
    """Overlapping 32 ms frames (at least one; a short input is zero-padded)."""
    if len(x) < FRAME:
        x = np.concatenate([x, np.zeros(FRAME - len(x))])
    n = 1 + (len(x) - FRAME) // HOP
    return np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP][:n]


_HANN = np.hanning(FRAME)
_FREQS = np.fft.rfftfreq(NFFT, 1 / SAMPLE_RATE)
_BAND = (_FREQS >= 100) & (_FREQS <= 3800)
_LOW = (_FREQS >= 80) & (_FREQS < 1000)


def features(pcm16: npt.NDArray[np.int16], probs: Sequence[float]) -> F64:
    """The `FEATURES` vector of one candidate: its first audio (PCM16) and its windows' Silero probabilities.

    Always finite, whatever the input (silence, DC, clipping, no probabilities)."""
    x = np.asarray(pcm16, dtype=np.float64).reshape(-1) / 32768.0
    fr = _frames(x)
    fr = fr - fr.mean(axis=1, keepdims=True)  # DC carries no speech
    energy = np.einsum("ij,ij->i", fr, fr) / FRAME
    level = 10 * np.log10(energy + _EPS)

    # voicing: normalised autocorrelation, from the power spectrum of the un-windowed frame
    ac = np.fft.irfft(np.abs(np.fft.rfft(fr, NFFT)) ** 2, NFFT)[:, : MAX_LAG + 1]
    r0 = ac[:, 0] + _EPS
    seg = ac[:, MIN_LAG : MAX_LAG + 1] / r0[:, None]
    harm = np.clip(seg.max(axis=1), 0.0, 1.0)
    harm = np.where(energy > 1e-8, harm, 0.0)  # below -80 dBFS: no pitch to speak of
    lag = MIN_LAG + seg.argmax(axis=1)
    voiced = harm > VOICED
    if voiced.sum() >= 2:
        loglag = np.log2(lag[voiced])
        pitch_jump = float(np.median(np.abs(np.diff(loglag))))
    else:
        pitch_jump = 1.0  # no pitch track: as unstable as an octave jump

    spec = np.abs(np.fft.rfft(fr * _HANN, NFFT)) ** 2 + _EPS
    band = spec[:, _BAND]
    flatness = np.exp(np.log(band).mean(axis=1)) / band.mean(axis=1)
    total = spec.sum(axis=1)
    centroid = (spec @ _FREQS) / total / (SAMPLE_RATE / 2)
    low_ratio = spec[:, _LOW].sum(axis=1) / total
    norm = spec / total[:, None]
    flux = float(np.abs(np.diff(norm, axis=0)).sum(axis=1).mean()) if len(norm) > 1 else 0.0

    peak = int(level.argmax())
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size == 0:
        p = np.zeros(1)
    p = np.nan_to_num(np.clip(p, 0.0, 1.0))
    out = np.array(
        [
            harm.mean(),
            voiced.mean(),
            pitch_jump,
            float(np.mean(flatness)),
            float(np.mean(centroid)),
            float(np.mean(low_ratio)),
            flux,
            level[peak] - level[0],
            level[peak] - level[-1],
            peak / max(1, len(level) - 1),
            float(level.std()),
            p.mean(),
            p.min(),
            p[-1],
            p.std(),
        ]
    )
    finite: F64 = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return finite


def speech_probability(pcm16: npt.NDArray[np.int16], probs: Sequence[float], model: ImpulseModel = FITTED) -> float:
    """Probability that a candidate is caller speech, from its first `model.window_ms` of audio.

    `pcm16` starts at the VAD's speech start; only its first `window_ms` is used."""
    n = int(model.window_ms * SAMPLE_RATE / 1000)
    windows = max(1, int(round(model.window_ms / 32.0)))
    return model.probability(features(np.asarray(pcm16)[:n], list(probs)[:windows]))


def is_speech(pcm16: npt.NDArray[np.int16], probs: Sequence[float], model: ImpulseModel = FITTED) -> bool:
    """The second stage's verdict: keep the candidate (True) or drop it as impulsive noise (False)."""
    return speech_probability(pcm16, probs, model) >= model.threshold
