"""The first stage's slow onset path: may a soft speech onset start a barge-in before Silero is sure?

Theory of operation
-------------------
`vad.CallVad` starts speech (SpeechStarted, and under the `resume` policy the provider's clear) once Silero
has been sure (>= `silero_threshold`, 0.9) for two 32 ms windows in a row. Most onsets get there 64 ms after
they begin; the slowest 5% do not. On the training pool (corpus-pool minus its dev_overlap clips) their
Silero probability climbs and hovers at 0.6-0.9 for 100-300 ms (soft, breathy or quiet starts) before two
windows in a row pass 0.9 (the rest of the tail is audio Silero hears nothing in until the word proper:
breaths, onsets marked early). Those hovering onsets are most of the onset->clear p95 and of a quiet
talker's misses (at -40 dBFS Silero often never passes 0.9 twice in a row).

So CallVad has a second, slower way to start, OFF by default (`onset_threshold` 0): `onset_windows` windows
in a row (3: 96 ms) that pass every cheap layer with a probability of at least `onset_threshold` (0.8 is
the fitted point), and, if `onset_gate` > 0, this module's verdict on those windows' audio and
probabilities. A run the gate turns down changes nothing: the sure path still applies, and the slow path
counts afresh.

Measured by `python -m app.offline.fit_onset` (pool speech as recorded / phone band / -40 dBFS / -40 dBFS
phone band, 667 clips each; noise: the pool's 33 clips and 160 synthetic impulsive and tonal clips, at
-12..+12 dB, as recorded and phone band; decision on the 20 ms frame clock minus the manifest onset):

    first stage                  p95 ms (rec/phone/-40/-40 ph)  missed (-40/-40 ph)  noise fired (real, synth)
    sure path only (before)      205 / 235 / 371 / 516          11 / 31 of 667       0/231, 11/1120
    + slow 0.8 x 3               194 / 205 / 320 / 455           5 / 23              0/231, 16/1120
    + slow 0.7 x 3               170 / 199 / 299 / 425           3 / 14              3/231, 30/1120
    + slow 0.7 x 3 + gate (oof)  195 / 223 / 320 / 478           6 / 22              3/231, 13/1120

0.8 is the lowest threshold that fires on no real pool noise (0.75: 2 of 231; 0.7: 3, crying baby and
laughter). But the pool cannot measure what matters most: once its dev_overlap clips are gone it has no
cough, sneeze or music and no noise that holds Silero at 0.9, so no real noise reaches either path. On the
report set (../shared/corpus, `python -m app.offline.evaluate --webrtc-mode 1`, measured once after the fit,
NOT tuned on), 0.8 x 3 took onset->decision p95 from 233 to 222 ms as recorded and detection of -40 dBFS
talkers from 98% to 100%, and doubled the noise clips that start speech, 4 -> 8 of 95 (+ cat, cough, dog
bark, snoring). So it ships off, until a noise pool with such sounds can fit the gate below.

The gate: boosted decision stumps over `impulse.FEATURES` plus the median pitch of the voiced frames,
fitted on the slow-path checks of a 0.7 x 3 path (389 speech, 28 noise: all the pool offers) with 5-fold
cross-validation grouped by speaker / recording, threshold keeping 70% of speech out of fold. It cut the
synthetic notes and knocks (30 -> 13) but none of the real vocal noise, and gave back most of the speed, so
it is off too (`onset_gate` 0: every slow run passes); its numbers stay so that a larger noise pool can
re-fit it. Nothing is learned at run time. Pure: numpy in, a bool out, about 0.2 ms a slow run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from app.bargein import impulse

F64 = npt.NDArray[np.float64]
FEATURES = (*impulse.FEATURES, "pitch_hz")

# --- fitted by `python -m app.offline.fit_onset` (paste its output here) ---------------------------------
# fmt: off
WINDOW_MS = 96.0  # the gate sees the slow path's 3 windows
_FEATURE = np.array([
    6, 7, 13, 6, 3, 13, 15, 2, 7, 11, 15, 3, 13, 15, 7, 3, 15, 11, 5, 6,
], dtype=np.int64)
_SPLIT = np.array([
    0.205649, 0.909893, 0.872133, 0.342759, 0.00261927, 0.872133, 133.498, 0, 0.909893, 0.767765, 307.692,
    0.00261927, 0.872133, 133.498, 0.909893, 0.00211668, 250, 0.819869, 0.914876, 0.205649,
])
_LEFT = np.array([
    -0.55786, -0.232736, -0.231611, -0.298584, -0.331471, -0.176078, 0.431701, -0.189948, -0.12313, -0.363383,
    0.0951018, -0.263826, -0.116864, 0.359677, -0.0856361, -0.278874, 0.136473, -0.136295, -0.10575,
    -0.266091,
])
_RIGHT = np.array([
    0.254843, 0.455362, 0.340171, 0.228727, 0.150559, 0.26438, -0.0993509, 0.198357, 0.293049, 0.0971831,
    -0.316374, 0.101949, 0.211221, -0.0650359, 0.247002, 0.0765348, -0.17339, 0.134919, 0.167474, 0.0740964,
])
_BIAS = -0.000000
THRESHOLD = 0.808028
# fmt: on
# --- end of fitted numbers ----------------------------------------------------------------------------

FITTED = impulse.ImpulseModel(WINDOW_MS, _FEATURE, _SPLIT, _LEFT, _RIGHT, _BIAS, THRESHOLD)


def median_pitch_hz(pcm16: npt.NDArray[np.int16]) -> float:
    """Median pitch of the voiced 32 ms frames (impulse's autocorrelation voicing), 0 when none is voiced."""
    x = np.asarray(pcm16, dtype=np.float64).reshape(-1) / 32768.0
    fr = impulse._frames(x)
    fr = fr - fr.mean(axis=1, keepdims=True)
    ac = np.fft.irfft(np.abs(np.fft.rfft(fr, impulse.NFFT)) ** 2, impulse.NFFT)[:, : impulse.MAX_LAG + 1]
    energy = ac[:, 0]
    seg = ac[:, impulse.MIN_LAG :] / (energy[:, None] + 1e-10)
    voiced = (seg.max(axis=1) > impulse.VOICED) & (energy > 1e-8 * impulse.FRAME)
    if not voiced.any():
        return 0.0
    lag = impulse.MIN_LAG + seg.argmax(axis=1)
    return float(np.median(impulse.SAMPLE_RATE / lag[voiced]))


def features(pcm16: npt.NDArray[np.int16], probs: Sequence[float]) -> F64:
    """The `FEATURES` vector of a slow-path run: its audio (PCM16, 8 kHz) and its windows' probabilities."""
    return np.append(impulse.features(pcm16, probs), median_pitch_hz(pcm16))


def speech_probability(
    pcm16: npt.NDArray[np.int16], probs: Sequence[float], model: impulse.ImpulseModel = FITTED
) -> float:
    return model.probability(features(pcm16, probs))


def is_speech(
    pcm16: npt.NDArray[np.int16],
    probs: Sequence[float],
    threshold: float | None = None,
    model: impulse.ImpulseModel = FITTED,
) -> bool:
    """The gate's verdict on a slow-path run (its audio from the run's first window, its probabilities):
    start speech now (True) or keep listening (False). `threshold` overrides the fitted one (settings)."""
    return speech_probability(pcm16, probs, model) >= (model.threshold if threshold is None else threshold)
