"""Silero at two window phases: when the second stream runs, and how a run of sure windows is counted.

Theory of operation
-------------------
Silero reads 32 ms (256-sample) windows, and its verdict on a short word depends on where the windows fall:
measured on a synthetic "stop" (0.52 s), the windows at one phase read 0.6-0.87 all through the word, never
sure twice, while windows shifted by half a window read 0.95-0.99. So `CallVad` can run a second Silero
stream, phase B, on windows that end half a window (128 samples, 16 ms) after phase A's: a verdict every
16 ms, and a short word is seen at its better phase.

Cost: phase B must not double Silero for every call. It is run only while an onset is possible (the VAD is
QUIET or STARTING), its window passes every cheap layer an onset needs (gate, webrtcvad, SNR over the floor)
and, in QUIET, phase A's latest window was not heard as silence (unscored, or at least `silero_release`: a
phase-B run could not start speech past A's silence anyway, see below): on a silent or steadily noisy line,
through a loud noise Silero rejects, and all through the caller's turn (SPEAKING, STOPPING) it costs nothing.
Its stream is then cold: when it is needed again it starts from the state phase A's stream had
`warmup` + 1 windows back and is warmed on the `warmup` phase-B windows since then (kept in the VAD's ring),
queued as deferred windows ahead of the scored one. Phase A's stream has heard the whole call, and Silero's
state remembers a long noise: measured on the pool's loud noise windows, a stream reset and warmed even on
1 s of audio still differs from one that ran all along by 0.023 on average (a crying baby then read 0.9-0.96
at phase B where phase A, on the same audio, read 0.05-0.12, and started speech), A's state plus 3 windows
by 0.017 with no verdict at 0.9 changed (0/361); on speech onsets A's state + 3 windows changes 11 of 480
verdicts (reset + 6 windows: 21, reset + 3: 43). Between two needed windows the stream stays warm for up to
`warmup` windows (deferred, run in bulk): keeping it warm over a longer gap costs more than warming it again.
Nor is phase B run before the line has been heard for one floor window (`CallVad._b_from`, 1 s): until then
the floor and phase A's state know little of the line (measured on the pool: a crying baby from a call's
first frame started speech at 0.22 s at phase B only, A 0.86, 0.70 and B 0.95, 0.91). A bench caller speaks
after seconds of the agent talking, so this costs nothing there.

"Sure twice" across phases: speech starts when either phase has min_speech_ms / 32 ms sure windows in a row
in its own phase (two for 64 ms). That is exactly "the sure windows cover 64 ms of audio without a gap": windows start
every 128 samples, so a gapless cover of 512 samples always holds two windows of one phase 256 samples
apart. While one phase's run is going on, the other phase's doubtful window (WEAK: at least `silero_release`)
does not end the candidate (`Observation.PENDING` in the VAD's table): they overlap, and the sure phase saw that
audio better. A window of either phase that reads SILENCE over the run's audio ends the candidate, as it does
with one phase: measured on the pool, a crying baby read 0.9-0.96 at phase B while phase A read 0.05-0.12 on
the same audio, and started speech until this rule; the synthetic "stop" reads 0.6-0.87 at the other phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

SILENT_DBFS = -120.0


@dataclass
class Run:
    """One phase's current run of sure windows while an onset is possible (mutable, per call)."""

    windows: int = 0
    prob_sum: float = 0.0
    peak_dbfs: float = SILENT_DBFS
    start_at: float = 0.0  # arrival time of the run's first window's start
    start_sample: int = 0  # its first sample, counted over the call

    def add(self, prob: float, peak_dbfs: float, start_at: float, start_sample: int) -> int:
        """A sure window of this phase: returns the run's length."""
        if self.windows == 0:
            self.start_at, self.start_sample = start_at, start_sample
            self.prob_sum, self.peak_dbfs = 0.0, SILENT_DBFS
        self.windows += 1
        self.prob_sum += prob
        self.peak_dbfs = max(self.peak_dbfs, peak_dbfs)
        return self.windows

    def clear(self) -> None:
        self.windows = 0


class Step(Enum):
    """What to do with a phase-B window (SecondPhase.step)."""

    SCORE = "score"  # await its probability (the stream is warm)
    WARM_AND_SCORE = "warm"  # reset the stream, queue the warm-up windows, then await this one
    DEFER = "defer"  # not needed, but keep the stream warm: queue it to run in bulk
    SKIP = "skip"  # not needed, and the stream goes (or stays) cold


class SecondPhase:
    """When phase B's Silero stream runs; pure bookkeeping, one per call."""

    def __init__(self, warmup_windows: int) -> None:
        self.warmup = warmup_windows
        self.warm = False  # the stream has seen every phase-B window since it was last warmed
        self._idle = 0  # windows deferred in a row since the last needed one
        self.scored = 0  # windows whose probability was awaited
        self.warmed = 0  # times the stream was warmed from cold

    def step(self, onset_possible: bool, needed: bool) -> Step:
        """The plan for the window just completed. `onset_possible`: the VAD is QUIET or STARTING;
        `needed`: also every cheap layer lets this window start speech."""
        if onset_possible and needed:
            self.scored += 1
            self._idle = 0
            if self.warm:
                return Step.SCORE
            self.warm = True
            self.warmed += 1
            return Step.WARM_AND_SCORE
        if self.warm and onset_possible and self._idle < self.warmup:
            self._idle += 1
            return Step.DEFER
        self.warm = False
        return Step.SKIP
