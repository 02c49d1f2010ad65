"""Second stage of the barge-in detector: is a speech candidate really speech, or an impulsive noise?

Theory of operation
-------------------
The first stage (`vad.CallVad`) fires SpeechStarted once Silero has been sure for 64 ms. Coughs, sneezes,
barks, laughter and music can hold Silero above its threshold for that long. This stage looks once at the
first `WINDOW_MS` of the candidate (PCM16, 8 kHz, after the caller leg's mu-law and whatever cleaning the VAD
sees, from the VAD's speech start: `speech_start_sample`) and at the Silero probabilities of the 32 ms windows
in that span, and returns a speech probability from boosted decision stumps over cheap features, behind a
floor on Silero's mean probability over the window. A `Candidate` collects that audio and gives its verdict
as soon as the window is complete, 96 ms after SpeechStarted with the shipped 160 ms window (the speech start is
64 ms before SpeechStarted). Shorter windows were fitted and measured (`fit_impulse`, grouped cross-validation
on the pool): at the same speech kept they reject less impulsive noise (noise events rejected at 99.5% of
speech kept: 64 ms about 11%, 96 ms 14%, 128 ms 25%, 160 ms 29%), and the 64 ms stage, the only one that would
add no latency to a policy that waits for it (`confirm`), passes nearly every decaying noise burst (2 of 96
rejected, against 64 of 96 at 160 ms). So the stage belongs behind a policy that does not wait for it (`resume`).

Features:

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

from app.bargein import echo_fft

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
    5, 2, 5, 1, 5, 2, 2, 6, 1, 2, 5, 9, 10, 2, 3, 2, 2, 10, 7, 6, 0, 2, 2, 3, 4, 8, 10, 5, 4, 5, 3, 1, 10, 0, 4,
    6, 5, 2, 2, 10, 1, 3, 4, 4, 10, 9, 5, 3, 2, 2, 0, 10, 6, 4, 4, 3, 6, 6, 8, 10, 6, 2, 2, 10, 8, 5, 4, 10, 0,
    2, 1, 8, 10, 3, 0, 4, 5, 2, 2, 4, 4, 3, 6, 2, 10, 8, 10, 8, 0, 10, 5, 6, 4, 2, 3, 1, 10, 8, 4, 0, 10, 4, 8,
    10, 7, 8, 3, 6, 4, 5, 3, 0, 4, 6, 6, 10, 1, 10, 8, 2, 2, 10, 8, 7, 5, 4, 3, 3, 5, 10, 0, 4, 5, 8, 10, 1, 6,
    4, 4, 3, 6, 10, 8, 5, 4, 0, 2, 2, 10, 7, 7, 4, 5, 0, 10, 8, 6, 4, 4, 0, 2, 6, 10, 7, 8, 10, 8, 4, 5, 10, 0,
    7, 0, 6, 6, 6, 8, 10, 8, 6, 4, 10, 3, 2, 2, 3, 0, 10, 4, 4, 5, 7, 9, 4, 2, 6, 6, 2, 3, 3,
], dtype=np.int64)
_SPLIT = np.array([
    0.537014, 0.127206, 0.391687, 0, 0.638674, 0, 0.127206, 0.185473, 0, 0, 0.26014, 0.125, 7.7528, 0.127206,
    0.27347, 0, 0.0443941, 7.30499, 1.19335, 0.269754, 0.272631, 0, 0.0443941, 0.324667, 0.0461789, 0.478892,
    5.02561, 0.864796, 0.487664, 0.198963, 0.00189522, 0.222222, 7.7528, 0.558421, 0.444127, 0.341433, 0.108913,
    0.0443941, 0, 3.58196, 0.666667, 0.324667, 0.444127, 0.157642, 8.22907, 0.125, 0.108913, 0.00189522,
    0.04046, 0, 0.781456, 4.19625, 0.741857, 0.487664, 0.0461789, 0.373067, 1.1815, 0.269754, 3.80243, 3.58196,
    0.875893, 0, 0.04046, 7.30499, 15.7572, 0.108913, 0.444127, 5.02561, 0.610209, 0, 0, 33.0965, 8.77593,
    0.00189522, 0.781456, 0.566596, 0.198963, 0.04046, 0, 0.157642, 0.375691, 0.373067, 0.341433, 0.04046,
    4.19625, 15.7572, 6.08865, 3.80243, 0.823659, 1.42822, 0.108913, 0.741857, 0.423478, 0, 0.0029597, 0.666667,
    7.30499, 20.4579, 0.0461789, 0.229961, 5.02561, 0.157642, 33.0965, 10.4164, 20.9458, 15.7572, 0.010885,
    1.1815, 0.329173, 0.108913, 0.373067, 0.823659, 0.566596, 0.185473, 0.875893, 3.88574, 0.222222, 8.22907,
    22.221, 0, 0.04046, 6.875, 3.80243, 20.9458, 0.108913, 0.423478, 0.324667, 0.00189522, 0.967864, 1.91297,
    0.781456, 0.329173, 0.26014, 33.0965, 10.4164, 0.666667, 0.396435, 0.444127, 0.14909, 0.010885, 0.674926,
    6.08865, 20.4579, 0.198963, 0.329173, 0.272631, 0, 0.04046, 7.30499, 15.6364, 1.19335, 0.566596, 0.0439653,
    0.823659, 4.19625, 15.7572, 0.0889365, 0.157642, 0.0853541, 0.179045, 0, 0.674926, 5.02561, 13.1608,
    15.7572, 8.22907, 33.0965, 0.444127, 0.108913, 4.19625, 0.610209, 20.9458, 0.229961, 0.977078, 0.875893,
    0.396435, 3.80243, 6.875, 22.221, 1.1815, 0.566596, 8.77593, 0.324667, 0.04046, 0, 0.00189522, 0.823659,
    2.123, 0.140204, 0.329173, 0.26014, 5.28639, 0.125, 0.0461789, 0.0443941, 0.977078, 0.875893, 0, 0.010885,
    0.103305,
])
_LEFT = np.array([
    -0.388175, 0.149419, -0.35171, -0.393469, -0.181806, -0.236725, 0.0864552, -0.565577, -0.306423, -0.187719,
    -0.264999, -0.124193, -0.0574032, 0.0623786, 0.0306017, -0.142595, 0.0736805, -0.0519135, -0.111007,
    -0.327994, -0.249486, -0.115332, 0.0642812, 0.0177346, -0.351107, 0.163882, -0.0631217, -0.0511435,
    -0.0112828, -0.216264, -0.408286, -0.137692, -0.0347227, -0.0655093, -0.0133644, -0.206388, -0.268237,
    0.0504281, -0.099803, -0.0748632, -0.0623597, 0.0119127, -0.0120955, 0.0669217, -0.0271674, -0.061308,
    -0.240812, -0.326311, 0.049096, -0.0845932, -0.0171684, -0.05792, 0.0626374, -0.00894594, -0.266713,
    0.00764807, 0.00804617, -0.204556, 0.0654727, -0.058684, 0.0408091, -0.0711637, 0.0464241, -0.026623,
    0.0265466, -0.212639, -0.0103769, -0.0382331, -0.0374573, -0.0660362, -0.144565, 0.0064453, -0.0185349,
    -0.274515, -0.0139571, -0.00518331, -0.146775, 0.0389977, -0.0632701, 0.0482721, -0.0149247, 0.00541909,
    -0.133388, 0.0374676, -0.041546, 0.023584, -0.0281846, 0.0537417, -0.00777259, -0.110229, -0.193666,
    0.0455452, -0.0103606, -0.0572779, -0.174506, -0.0365229, -0.0209875, 0.0160612, -0.210686, -0.182303,
    -0.0309678, 0.0444159, 0.00528897, -0.01153, 0.00553404, 0.0197581, -0.0713266, 0.00588048, -0.0154435,
    -0.183907, 0.00379374, -0.00712064, -0.00456349, -0.178724, 0.0297136, -0.0398012, -0.0626487, -0.0146574,
    0.0127097, -0.0462034, 0.0323515, -0.0197545, 0.0433949, 0.00510817, -0.164198, -0.00944677, 0.00515248,
    -0.200974, -0.0102427, -0.0670709, -0.00967447, -0.0133296, -0.101899, 0.00441402, -0.00978144, -0.0291076,
    -0.0925141, -0.00686134, 0.0421452, -0.0612386, 0.0447527, -0.0217331, 0.0128217, -0.109298, -0.0129348,
    -0.10412, -0.0439334, 0.0282422, -0.0166695, 0.00711662, -0.0387528, -0.00384192, -0.210941, -0.00551518,
    -0.0299564, 0.0171609, -0.253709, 0.0343541, -0.0898693, -0.254437, -0.040958, 0.0405981, -0.0249273,
    0.0082859, 0.0152042, -0.0126713, 0.00418512, -0.00594403, -0.141271, -0.0265369, -0.0222461, 0.0040431,
    -0.136033, -0.0150958, 0.0243198, -0.0783232, 0.0340578, -0.0163551, 0.00962431, 0.00432092, -0.00348993,
    -0.0102526, 0.00391324, 0.0231365, -0.0414034, -0.16389, -0.00487047, -0.0497645, 0.0375877, -0.0111984,
    -0.0844575, 0.0163642, -0.0295216, -0.145294, 0.02176, -0.0143713, 0.0218496, -0.0362953, -0.0481075,
    0.0167574,
])
_RIGHT = np.array([
    0.212991, -0.358179, 0.112064, 0.0704266, 0.124599, 0.0871228, -0.237424, 0.0242684, 0.0441846, 0.07489,
    0.0433788, 0.0911763, 0.20553, -0.183159, -0.302976, 0.0596243, -0.109379, 0.157101, 0.0659306, 0.0204277,
    0.0259699, 0.0503925, -0.094206, -0.308561, 0.0151463, -0.032243, 0.0832608, 0.0978303, 0.474803, 0.0211442,
    0.0108751, 0.0338537, 0.131045, 0.0646487, 0.336532, 0.0190234, 0.0134969, -0.0725143, 0.0445025, 0.0522188,
    0.061485, -0.269278, 0.272052, -0.0490506, 0.128552, 0.0472088, 0.0114688, 0.00829326, -0.0599876,
    0.0383064, 0.164432, 0.0532251, -0.044481, 0.299361, 0.00953472, -0.311301, -0.284889, 0.0116432,
    -0.0393714, 0.0406648, -0.0549058, 0.0319324, -0.0535605, 0.0832458, -0.0878118, 0.00922096, 0.2164,
    0.0511228, 0.0570775, 0.0299859, 0.0137514, -0.306625, 0.109519, 0.00679491, 0.137924, 0.341274, 0.0118866,
    -0.0445123, 0.0287806, -0.0327293, 0.121062, -0.296979, 0.0114286, -0.0420465, 0.0376128, -0.0784721,
    0.0540803, -0.030687, 0.197511, 0.014415, 0.00794651, -0.0307499, 0.149244, 0.026116, 0.00784904, 0.0382349,
    0.0646873, -0.0928279, 0.00646959, 0.00725322, 0.0404388, -0.0292745, -0.231333, 0.116575, -0.234484,
    -0.0643288, 0.0173509, -0.198739, 0.0792186, 0.00711873, -0.284317, 0.171854, 0.258055, 0.0061039,
    -0.0381381, 0.0311865, 0.0159503, 0.0699241, -0.0938916, 0.0212001, -0.0352422, 0.0509154, -0.0240565,
    -0.206605, 0.00614406, 0.130445, -0.192647, 0.00438208, 0.0999859, 0.0134428, 0.102051, 0.0691063,
    0.0105876, -0.188793, 0.100371, 0.0305612, 0.0103791, 0.132566, -0.0228284, 0.0146578, -0.020557, 0.0414565,
    -0.0730133, 0.00782, 0.0664164, 0.00772302, 0.0198936, -0.0303924, 0.0516959, -0.118173, 0.0231556,
    0.211278, 0.00435045, 0.145138, 0.0276245, -0.0557784, 0.00308356, -0.02164, 0.0102334, 0.00276707,
    0.0183484, -0.0186032, 0.0329943, -0.085735, -0.0491492, 0.0606099, -0.168047, 0.112898, 0.0049135,
    0.0242865, 0.0352001, -0.155415, 0.00450948, 0.0443402, -0.0307128, 0.00859717, -0.0185971, 0.041897,
    -0.069446, -0.147155, 0.183547, 0.0619753, -0.16053, -0.0248309, 0.0190148, 0.00355621, 0.1348, 0.0122502,
    -0.0168305, 0.0580453, 0.00827979, -0.0347034, 0.0233031, 0.0038664, -0.0266118, 0.0421174, -0.0271392,
    0.0166662, 0.0112959, -0.0341802,
])
_BIAS = 0.000000
THRESHOLD = 0.017831
PROB_FLOOR = 0.882156
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
    # no noise that fools Silero for 64 ms), as the level all but 0.1% of live speech candidates stay above.
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
    # One fancy index: the look before a clear (first_look.py) runs this, and numpy's per-call overhead is most
    # of its cost on three frames.
    return x[_frame_index(n)]


_FRAME_INDEX: dict[int, npt.NDArray[np.intp]] = {}


def _frame_index(n: int) -> npt.NDArray[np.intp]:
    idx = _FRAME_INDEX.get(n)
    if idx is None:
        idx = _FRAME_INDEX[n] = np.arange(n)[:, None] * HOP + np.arange(FRAME)[None, :]
    return idx


def _median(v: F64) -> float:
    """np.median of a short vector, without its overhead (the same number)."""
    s = np.sort(v)
    k = len(s) // 2
    return float(s[k]) if len(s) % 2 else float((s[k - 1] + s[k]) / 2)


_add = np.add.reduce
_HANN = np.hanning(FRAME)
_FREQS = np.fft.rfftfreq(NFFT, 1 / SAMPLE_RATE)
_BAND = (_FREQS >= 100) & (_FREQS <= 3800)
_LOW = (_FREQS >= 80) & (_FREQS < 1000)


def features(pcm16: npt.NDArray[np.int16], probs: Sequence[float]) -> F64:
    """The `FEATURES` vector of one candidate: its first audio (PCM16) and its windows' Silero probabilities.

    Always finite, whatever the input (silence, DC, clipping, no probabilities)."""
    # The first look (first_look.py) runs this before the clear, on three frames, where numpy's per-call
    # overhead is most of the cost: both spectra come from one transform through echo_fft's ufunc call, and
    # means are np.add.reduce / n (what np.mean computes, without its wrapper). The same numbers to the bit as
    # the plain numpy version (tests/bargein/test_impulse.py keeps that version and compares); 437 -> 250 us on
    # this VM.
    x = np.asarray(pcm16, dtype=np.float64).reshape(-1) / 32768.0
    fr = _frames(x)
    n = fr.shape[0]
    fr = fr - _add(fr, axis=1, keepdims=True) / FRAME  # DC carries no speech
    energy = np.einsum("ij,ij->i", fr, fr) / FRAME
    level = 10 * np.log10(energy + _EPS)
    # the frame as it is (voicing) and Hann-windowed (spectrum), in one transform
    z = echo_fft.rfft(np.concatenate((fr, fr * _HANN)), NFFT, np.empty((2 * n, NFFT // 2 + 1), np.complex128))
    power = np.abs(z) ** 2

    # voicing: normalised autocorrelation, from the power spectrum of the un-windowed frame
    ac = echo_fft.irfft(power[:n], np.empty((n, NFFT)))[:, : MAX_LAG + 1]
    r0 = ac[:, 0] + _EPS
    seg = ac[:, MIN_LAG : MAX_LAG + 1] / r0[:, None]
    harm = np.clip(seg.max(axis=1), 0.0, 1.0)
    harm = np.where(energy > 1e-8, harm, 0.0)  # below -80 dBFS: no pitch to speak of
    voiced = harm > VOICED
    n_voiced = np.count_nonzero(voiced)
    if n_voiced >= 2:
        loglag = np.log2(MIN_LAG + seg.argmax(axis=1)[voiced])
        pitch_jump = _median(np.abs(np.diff(loglag)))
    else:
        pitch_jump = 1.0  # no pitch track: as unstable as an octave jump

    spec = power[n:] + _EPS
    band = spec[:, _BAND]
    flatness = np.exp(_add(np.log(band), axis=1) / band.shape[1]) / (_add(band, axis=1) / band.shape[1])
    total = _add(spec, axis=1)
    centroid = (spec @ _FREQS) / total / (SAMPLE_RATE / 2)
    low_ratio = _add(spec[:, _LOW], axis=1) / total
    flux = float(_add(_add(np.abs(np.diff(spec / total[:, None], axis=0)), axis=1)) / (n - 1)) if n > 1 else 0.0

    peak = int(level.argmax())
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size == 0:
        p = np.zeros(1)
    p = np.clip(p, 0.0, 1.0)
    p[np.isnan(p)] = 0.0
    out = np.array(
        [
            _add(harm) / n,
            n_voiced / n,
            pitch_jump,
            _add(flatness) / n,
            _add(centroid) / n,
            _add(low_ratio) / n,
            flux,
            level[peak] - level[0],
            level[peak] - level[-1],
            peak / max(1, n - 1),
            float(level.std()),
            p.mean(),
            p.min(),
            p[-1],
            p.std(),
        ]
    )
    finite: F64 = np.where(np.isfinite(out), out, 0.0)
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


def window_samples(model: ImpulseModel = FITTED) -> int:
    """Audio the stage needs, in samples from the VAD's speech start."""
    return int(model.window_ms * SAMPLE_RATE / 1000)


def window_probabilities(model: ImpulseModel = FITTED) -> int:
    """Silero windows (32 ms) the stage reads, from the VAD's speech start."""
    return max(1, int(round(model.window_ms / 32.0)))


def speech_start_sample(samples_fed: int, sustained_ms: float) -> int:
    """Index in the caller's stream of the VAD's speech start, at the moment CallVad returns SpeechStarted.

    `samples_fed` counts every sample given to `CallVad.feed` up to and including the frame that returned
    the event. CallVad decides on 32 ms windows cut from the stream from sample 0, and a 20 ms frame completes
    at most one window, so the deciding window ends at the last window boundary fed, and the sustained run
    (`SpeechStarted.sustained_ms`) began that many windows earlier. (The event's `at` minus `sustained_ms` is
    an arrival time up to one frame late, not a sample position.) Checked against CallVad by
    `fit_impulse.vad_agreement`."""
    window = 256
    return (samples_fed // window) * window - int(round(sustained_ms / 32.0)) * window


class Candidate:
    """One speech candidate, evaluated as soon as `window_ms` of audio from the speech start is here.

    Give it the caller audio from the speech start that is already buffered when SpeechStarted arrives
    (`speech_start_sample` says where it starts) and the Silero probabilities of the sustained windows, then
    every later frame and probability; `verdict` is None until the window is complete, then the stage's
    answer, computed once. The audio from the speech start to SpeechStarted (the guard, 64 ms) is already there
    when the candidate is made, so a `window_ms` candidate completes `window_ms - 64` ms after SpeechStarted."""

    def __init__(self, model: ImpulseModel = FITTED) -> None:
        self.model = model
        self._need = window_samples(model)
        self._need_probs = window_probabilities(model)
        self._audio = np.zeros(self._need, dtype=np.int16)
        self._fill = 0
        self._probs: list[float] = []
        self._verdict: bool | None = None

    def add_audio(self, pcm16: npt.NDArray[np.int16]) -> None:
        """Caller audio in stream order from the speech start; anything past the window is ignored."""
        take = np.asarray(pcm16, dtype=np.int16).reshape(-1)[: self._need - self._fill]
        self._audio[self._fill : self._fill + len(take)] = take
        self._fill += len(take)

    def add_probabilities(self, probs: Sequence[float]) -> None:
        """Silero probabilities of the 32 ms windows from the speech start, in order."""
        self._probs.extend(list(probs)[: self._need_probs - len(self._probs)])

    @property
    def ready(self) -> bool:
        return self._fill >= self._need and len(self._probs) >= self._need_probs

    @property
    def verdict(self) -> bool | None:
        """None while the window is incomplete; then True (speech, keep) or False (impulsive noise)."""
        if self._verdict is None and self.ready:
            self._verdict = is_speech(self._audio, self._probs, self.model)
        return self._verdict
