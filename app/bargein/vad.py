"""Per-call voice activity: energy gate + webrtcvad + Silero, and the four-state speech hysteresis.

Theory of operation
-------------------
Every caller frame goes through `CallVad.feed(pcm16, now)` for the whole call, whether or not the agent is
talking: the caller's turns need the same decisions, and Silero's recurrent state must stay warm.

Layers, cheapest first:

1. Energy gates, per 20 ms frame: a frame quieter than `energy_gate_dbfs` is never speech. It sits well
   below quiet talkers (the corpus's quietest word peaks near -42 dBFS); hiss and hum above it are left to
   Silero to reject, because a gate high enough to reject them would also reject soft speech.
   On top of it, the line's own noise floor (`noise_floor.NoiseFloor`, the quietest frame of the last
   `floor_window_ms`): a window can start speech only if its loudest frame is `snr_db` above that floor.
   So the gate adapts per call: on a quiet line the absolute gate is the bound and a quiet talker is
   heard; on a car or cafe line, and after hiss steps up (within one floor window), only what stands out
   of the line's noise can start speech. The floor costs two comparisons a frame, and no logarithm:
   it is kept, like the gate, as a frame's sum of squares.
2. webrtcvad, per exact 20 ms frame, optional (`use_webrtc`, off by default). It calls most steady noise
   speech, so it can only corroborate, never classify; on the corpus, requiring it changed no decision in
   modes 0-2 and lost a word in mode 3, so it stays a configurable layer that costs nothing when off.
3. Silero VAD on 32 ms (256-sample) windows re-framed from the 20 ms frames, run through the process-wide
   `SileroBatcher` on EVERY window so the model's state stays warm. A window is awaited only when its
   probability can change what happens: while speech is starting or on, or on a QUIET line when every cheap
   layer (gate, webrtcvad, the floor's SNR) lets it start speech. Any other window is WEAK or SILENCE
   whatever Silero says, and in QUIET both leave the state as it is: it is deferred (run later, in bulk,
   still before the stream's next awaited window) and reads NaN to `recent()` / `candidate()`. (Running only
   the last few deferred windows of a long quiet run was tried: it cut CPU by a fifth on quiet lines, none on
   noisy ones, and the scored windows then ran in small batches: frame lag p99.9 doubled at 50 calls.)
   A window's cheap-layer verdict is the OR over the 20 ms frames that end inside it (those are exactly the
   complete frames that overlap it). With `hiss_for_digital_silence`, a window of digital silence (every sample
   0) reaches the model as a quiet line's hiss (`_COMFORT`): zeros make its state slow to believe what follows.
4. Optionally (`second_phase`), a second Silero stream on windows ending half a window later, run only while
   an onset is possible and its window passes the cheap layers, warmed from the ring when it starts:
   `phases.py` says when it runs and how "sure twice" counts across the two phases.

Each window is classified as SPEECH (probability >= silero_threshold and the cheap layers agree, the
floor's SNR included), WEAK (probability >= silero_release, absolute gate passed: still speech once speech
has started; the floor is not asked, so a turn in noise is not cut) or SILENCE.
A soft onset can also start speech by the slow path (`onset.py`): `onset_windows` windows in a row that pass
the same cheap layers with a probability of at least `onset_threshold` (e.g. 0.8 x 3: 96 ms; off by default)
count as SUSTAINED, behind an optional fitted gate; the run becomes the speech's start (`sustained_ms` = 96).
Then the hysteresis below turns windows into events. "Sustained" counts audio time (32 ms per window);
"silence" is measured on the arrival clock, so a timer calling `tick(now)` ends a turn on time even when
the phone leg stops sending frames.

Hooks for the decision layer that sits after this one:

- `recent(since_t)`: the audio as fed and the windows' probabilities of the last `recent_ms`, from a
  preallocated ring (one slice copy a frame), for a second look at a candidate from `speech_started_at`.
- `rearm(now)`: the candidate was rejected (noise, echo, a backchannel talked over): back to QUIET
  through the table (Observation.REJECTED), without SpeechStopped, so the next onset is a fresh
  SpeechStarted.
- `on_pause`: told `SpeechPaused` once per pause, when speech has been silent for `pause_ms` (a
  "mm-hmm" is over long before turn_end_silence_ms). It is a callback, not a feed() result, so consumers
  of VadEvent (the detector's policy table) are unchanged. `speech_ms` and `silence_ms(now)` read the same
  timers, with one difference: speech time (`speech_ms`, SpeechPaused.speech_ms) runs to the last window
  with speech evidence (>= `evidence_threshold`), silence from the last window above release: a WEAK tail
  keeps a turn open without making it longer.
- `near_miss` / `on_near_miss`: off unless set; then each main-phase window also goes to the tracker
  (near_miss.py), and a short sound that came close to starting speech but never did is told as `NearMiss`
  (a callback too, so VadEvent's consumers are unchanged): a bare "stop" Silero held just under the bar.

The only time source is the `now` passed in; nothing here reads a clock. `feed` awaits only the batcher,
and, on a frame longer than WINDOWS_PER_TURN windows, the loop itself now and then: the work of one frame is
linear in its length and never held in one loop turn. `close()` drops the call's windows still queued.
"""

from __future__ import annotations

import asyncio
import math
import typing
from enum import Enum

import numpy as np
import numpy.typing as npt
import webrtcvad

from app.audio import pcm16_to_ulaw, ulaw_to_pcm16, white_noise
from app.bargein import onset
from app.bargein.near_miss import NearMissTracker
from app.bargein.noise_floor import NoiseFloor, dbfs_of_energy, energy_of_dbfs
from app.bargein.phases import Run, SecondPhase, Step
from app.bargein.silero import CONTEXT, WINDOW, Settles, SileroStream, WindowScorer
from app.bargein.vad_config import SAMPLE_RATE, WINDOW_S, VadConfig
from app.bargein.vad_events import NearMiss, SpeechPaused, SpeechStarted, SpeechStopped

__all__ = [  # the config and the events live in their own modules; importers keep importing them from here
    "FRAME", "SAMPLE_RATE", "CallVad", "NearMiss", "NearMissObserver", "PauseObserver", "SpeechPaused",
    "SpeechStarted", "SpeechStopped",
    "VadConfig", "VadEvent", "VadState",
]

FRAME = 160  # 20 ms: the telephony frame and a length webrtcvad accepts
HALF = WINDOW // 2  # phase B's windows end this many samples after phase A's
_FULL_SCALE_DB = 20 * math.log10(32768.0)
_SILENT_DBFS = -120.0
_TO_FLOAT = np.float32(1 / 32768)  # int16 -> [-1, 1): a power of two, so the scaling is exact
# One inbound frame is normally one 20 ms frame; a longer one is cut into windows here, and the windows below
# the energy gate are only queued (no await). Yield to the loop after this many windows without an await, so
# one long frame cannot hold the loop: 64 windows (2 s of audio) take about 0.5 ms here.
WINDOWS_PER_TURN = 64
_RING_UNIT = FRAME * WINDOW // math.gcd(FRAME, WINDOW)  # 1280 samples: frames and windows both tile it
# What Silero hears for a window of digital silence (every sample 0: a muted leg, a carrier's silence frames,
# a client without comfort noise). Fed zeros, the model's state drifts the longer they last, and it gets slow
# to believe the next speech: on the pool (speech clips after 0.3 / 4.3 / 10 s of zeros, four window phases,
# 892 onsets each) onsets were missed 7 / 13 / 21 times, p95 232 / 269 / 297 ms. A quiet line's hiss does not
# do that (after -60 dBFS hiss: 1 / 1 missed at 0.3 / 10 s). With VAD_HISS_FOR_DIGITAL_SILENCE Silero hears
# digital silence as the quiet line every threshold was fitted on: the evaluator's -70 dBFS white floor,
# through mu-law, cycling through eight fixed windows. Then 1 / 3 / 6 missed, p95 220 / 249 / 247 ms. But the
# drift also makes the model slower to believe a noise: the report set's bench at 20 calls (whose caller line
# is digital silence between clips, for seconds when the reply waits on the recognizer), A/B alternating, two
# runs a side: onset->clear p95 250-255 against 315-395 ms, and false clears 32/380 against 14/380, lost turns
# 8/190 against 1/190. Off by default: a false stop is the worse failure. Only the model's input changes: the
# gates and the floor still see the zeros.
COMFORT_DBFS = -70.0


def _comfort_windows(count: int = 8) -> list[npt.NDArray[np.float32]]:
    hiss = white_noise(count * WINDOW / SAMPLE_RATE, COMFORT_DBFS, seed=20261201)
    heard = ulaw_to_pcm16(pcm16_to_ulaw(hiss))
    return [np.multiply(heard[k * WINDOW : (k + 1) * WINDOW], _TO_FLOAT) for k in range(count)]


_COMFORT = _comfort_windows()


VadEvent = SpeechStarted | SpeechStopped
PauseObserver = typing.Callable[[SpeechPaused], None]
NearMissObserver = typing.Callable[[NearMiss], None]


class VadState(Enum):
    QUIET = "quiet"
    STARTING = "starting"  # speech windows seen, not yet sustained for min_speech_ms
    SPEAKING = "speaking"  # SpeechStarted emitted; the latest window still had speech
    STOPPING = "stopping"  # speech went quiet; SpeechStopped once the silence lasts turn_end_silence_ms


# (now, previous state, new state, probability of the deciding window, its loudest frame in dBFS)
StateObserver = typing.Callable[[float, VadState, VadState, float, float], None]


class Observation(Enum):
    SPEECH = "speech"  # window passes every layer
    SUSTAINED = "sustained"  # a SPEECH window that brings STARTING to min_speech_ms
    WEAK = "weak"  # probability between release and threshold (and energy gate passed)
    SILENCE = "silence"
    EXPIRED = "expired"  # no speech for turn_end_silence_ms (from a window or from tick)
    PAUSE = "pause"  # no speech for pause_ms, not yet told for this pause (from a window or from tick)
    REJECTED = "rejected"  # the decision layer rejected the current candidate (CallVad.rearm)
    PENDING = "pending"  # an unsure window while the other phase's sure run goes on (phases.py)


class Emit(Enum):
    NOTHING = 0
    STARTED = 1
    STOPPED = 2
    PAUSED = 3


St, Ob = VadState, Observation
# Every transition of the hysteresis, in one place. The missing pairs cannot occur: SUSTAINED is derived only
# in QUIET/STARTING, EXPIRED only in STARTING/SPEAKING/STOPPING, PAUSE only in SPEAKING/STOPPING
# (CallVad._on_window and CallVad.tick), PENDING only in STARTING with two phases. REJECTED comes from outside
# (CallVad.rearm) in any state.
# STARTING needs consecutive SPEECH windows: letting WEAK windows bridge them only let more laughter and
# coughs through (measured), while speech onsets rise straight through the threshold. Once speaking, WEAK
# windows keep the turn open, so soft word endings do not end the caller's turn.
TRANSITIONS: dict[tuple[VadState, Observation], tuple[VadState, Emit]] = {
    (St.QUIET, Ob.SILENCE): (St.QUIET, Emit.NOTHING),
    (St.QUIET, Ob.WEAK): (St.QUIET, Emit.NOTHING),
    (St.QUIET, Ob.SPEECH): (St.STARTING, Emit.NOTHING),
    (St.QUIET, Ob.SUSTAINED): (St.SPEAKING, Emit.STARTED),
    (St.STARTING, Ob.SPEECH): (St.STARTING, Emit.NOTHING),
    (St.STARTING, Ob.SUSTAINED): (St.SPEAKING, Emit.STARTED),
    (St.STARTING, Ob.WEAK): (St.QUIET, Emit.NOTHING),
    (St.STARTING, Ob.SILENCE): (St.QUIET, Emit.NOTHING),
    (St.STARTING, Ob.EXPIRED): (St.QUIET, Emit.NOTHING),
    (St.STARTING, Ob.PENDING): (St.STARTING, Emit.NOTHING),
    (St.SPEAKING, Ob.SPEECH): (St.SPEAKING, Emit.NOTHING),
    (St.SPEAKING, Ob.WEAK): (St.SPEAKING, Emit.NOTHING),
    (St.SPEAKING, Ob.SILENCE): (St.STOPPING, Emit.NOTHING),
    (St.SPEAKING, Ob.EXPIRED): (St.QUIET, Emit.STOPPED),
    (St.STOPPING, Ob.SPEECH): (St.SPEAKING, Emit.NOTHING),
    (St.STOPPING, Ob.WEAK): (St.SPEAKING, Emit.NOTHING),
    (St.STOPPING, Ob.SILENCE): (St.STOPPING, Emit.NOTHING),
    (St.STOPPING, Ob.EXPIRED): (St.QUIET, Emit.STOPPED),
    # a pause: SPEAKING only when tick() finds the silence with no window in between
    (St.SPEAKING, Ob.PAUSE): (St.STOPPING, Emit.PAUSED),
    (St.STOPPING, Ob.PAUSE): (St.STOPPING, Emit.PAUSED),
    # rejected by the decision layer: forget the candidate, no SpeechStopped (no turn was taken)
    (St.QUIET, Ob.REJECTED): (St.QUIET, Emit.NOTHING),
    (St.STARTING, Ob.REJECTED): (St.QUIET, Emit.NOTHING),
    (St.SPEAKING, Ob.REJECTED): (St.QUIET, Emit.NOTHING),
    (St.STOPPING, Ob.REJECTED): (St.QUIET, Emit.NOTHING),
}
del St, Ob


class CallVad:
    """One call's speech detector: feed every inbound frame, get SpeechStarted / SpeechStopped."""

    def __init__(self, config: VadConfig, batcher: WindowScorer) -> None:
        self.config = config
        self._batcher = batcher
        self._stream = SileroStream()
        self._webrtc = webrtcvad.Vad(config.webrtc_mode) if config.use_webrtc else None
        # the gate as a frame's sum of squares, so the common below-gate frame needs no logarithm
        self._gate_energy = energy_of_dbfs(config.energy_gate_dbfs, FRAME)
        self._hiss_for_zeros = config.hiss_for_digital_silence
        self._floor = NoiseFloor(
            max(4, round(config.floor_window_ms / (FRAME / SAMPLE_RATE * 1000))), initial=self._gate_energy
        )
        self._snr_gain = 10 ** (config.snr_db / 10)
        # cheap-layer verdicts of the 20 ms frames that ended inside the current window
        self._win_gate = False
        self._win_webrtc = False
        self._win_peak = _SILENT_DBFS
        self._win_peak_energy = 0.0
        # The audio ring is also the frame and window buffer: its length is a whole number of frames and of
        # windows, so the frame and the window being filled are always contiguous views into it (one copy
        # per chunk serves the 20 ms frame, the Silero window and recent()). Probabilities have their own
        # ring; both are indexed by the count of samples / windows fed so far.
        ring_len = -(-round(config.recent_ms * SAMPLE_RATE / 1000) // _RING_UNIT) * _RING_UNIT
        self._ring = np.zeros(ring_len, dtype=np.int16)
        self._fed = 0  # samples fed in the whole call (frames and windows start at multiples of their length)
        self._fed_at = 0.0  # arrival time of the last sample fed
        self._probs = [0.0] * (len(self._ring) // WINDOW + 1)
        self._windows = 0  # windows classified in the whole call

        self._feeding = False
        self.closed = False
        self.state = VadState.QUIET
        self.last_probability = 0.0
        # the run of sure windows that started the speech (copied from its phase's Run for SpeechStarted)
        self._sustained_windows = 0
        self._prob_sum = 0.0
        self._peak_dbfs = _SILENT_DBFS
        # Each phase's run of sure windows while an onset is possible (phase A's only, without a second phase).
        self._runs = (Run(), Run())
        # Phase B (phases.py): its own stream, schedule and cheap-layer verdicts (frames ending in its window).
        self._phase_b = (
            SecondPhase(round(config.second_phase_warmup_ms / (WINDOW_S * 1000))) if config.second_phase else None
        )
        self._stream_b = SileroStream()
        if self._phase_b is not None:  # phase B starts from the state phase A had warmup + 1 windows back
            self._stream.keep = self._phase_b.warmup + 2
        # Phase B is an extra chance, not given before the line has been heard for one floor window: until then
        # the floor (and phase A's state) know little of the line. Measured on the pool: a crying baby from a
        # call's first frame started speech at 0.22 s at phase B only (A 0.86, 0.70; B 0.95, 0.91).
        self._b_from = round(config.floor_window_ms * SAMPLE_RATE / 1000)
        self._b_threshold = config.second_phase_threshold or config.silero_threshold
        # Phase A's latest window was unscored (its cheap layers ruled it out) or at least doubtful (>= release).
        # In QUIET phase B runs only then: where A reads the audio as silence, a phase-B run could not start speech
        # before A's next window anyway (SILENCE at either phase ends a candidate), so B waits for A's doubt.
        self._a_doubtful = True
        self._step = HALF if config.second_phase else WINDOW  # a chunk never crosses a multiple of this
        self._b_gate = False
        self._b_webrtc = False
        self._b_peak = _SILENT_DBFS
        self._b_peak_energy = 0.0
        self._onset_run = 0  # windows in a row on the slow onset path (onset.py), and their loudest frame
        self._onset_peak = _SILENT_DBFS
        self._speech_start_at = 0.0
        self._speech_start_sample = 0  # the current speech's first window's first sample (counted over the call)
        self._last_active_at = 0.0
        # The latest window with speech evidence (a probability that could start speech, the gate and webrtcvad
        # passed): speech_ms and SpeechPaused count to it, not to the latest WEAK window, so a noise whose
        # tail hovers at 0.35-0.8 (a sneeze's breath, barks fading out) keeps the turn open but does not grow
        # into "the caller taking the turn" (the policy's LONG), and is resumed when it pauses.
        self._last_sure_at = 0.0
        self._evidence = config.evidence_threshold
        self._paused_for = -1.0  # the _last_active_at whose pause was told
        # Told of every state change (now, previous, new, probability, level dBFS): the call's event stream.
        self.on_change: StateObserver | None = None
        # Told SpeechPaused once per pause in a turn.
        self.on_pause: PauseObserver | None = None
        # Near misses (near_miss.py): off (None) unless the session sets both; told through on_near_miss.
        self.near_miss: NearMissTracker | None = None
        self.on_near_miss: NearMissObserver | None = None

    @property
    def speaking(self) -> bool:
        """True from SpeechStarted until SpeechStopped."""
        return self.state in (VadState.SPEAKING, VadState.STOPPING)

    @property
    def speech_started_at(self) -> float | None:
        """Arrival-clock start of the current candidate or turn (its first speech window); None when QUIET."""
        return None if self.state is VadState.QUIET else self._speech_start_at

    @property
    def speech_ms(self) -> float:
        """From the speech start to the latest window with speech evidence (0 when QUIET)."""
        if self.state is VadState.QUIET:
            return 0.0
        return max(0.0, self._last_sure_at - self._speech_start_at) * 1000

    def silence_ms(self, now: float) -> float:
        """Time since the latest speech window (0 when QUIET: no speech to be silent after)."""
        if self.state is VadState.QUIET:
            return 0.0
        return max(0.0, now - self._last_active_at) * 1000

    @property
    def floor_dbfs(self) -> float:
        """The line's current noise floor (the level of its quietest recent frame)."""
        return dbfs_of_energy(self._floor.energy, FRAME)

    def recent(self, since_t: float) -> tuple[npt.NDArray[np.int16], list[float]]:
        """The audio fed since `since_t` (arrival clock) and the Silero probabilities of the windows that
        overlap it, oldest first; at most `recent_ms` of audio. Windows skipped under the gate read NaN.

        Times map to samples by counting back 8 kHz from the last sample fed, which arrived at the last
        feed()'s `now`.
        """
        back = min(self._fed, len(self._ring), max(0, round((self._fed_at - since_t) * SAMPLE_RATE)))
        return self._since(self._fed - back)

    def candidate(self) -> tuple[npt.NDArray[np.int16], list[float]]:
        """The current speech's audio and window probabilities from its first speech window on, counted in
        samples, not arrival times (frames that arrive in a burst would shift a time-based slice). A window
        under the energy gate was not scored: its probability reads NaN."""
        return self._since(self._speech_start_sample)

    @property
    def candidate_samples(self) -> int:
        """Samples fed since the current speech's first window began (0 when QUIET)."""
        if self.state is VadState.QUIET:
            return 0
        return self._fed - self._speech_start_sample

    def _since(self, start: int) -> tuple[npt.NDArray[np.int16], list[float]]:
        """The ring's audio from sample `start` (counted over the call) to the last one fed, and the
        probabilities of the windows that end after `start`."""
        n = len(self._ring)
        start = min(max(start, self._fed - n), self._fed)
        i, j = start % n, self._fed % n
        if start == self._fed:
            audio = np.zeros(0, dtype=np.int16)
        elif i < j:
            audio = self._ring[i:j].copy()
        else:  # wraps (or is the whole ring)
            audio = np.concatenate([self._ring[i:], self._ring[:j]])
        # window w (0-based) covers samples [w * WINDOW, (w + 1) * WINDOW): those ending after `start`
        first = max(start // WINDOW, self._windows - len(self._probs) + 1, 0)
        m = len(self._probs)
        return audio, [self._probs[w % m] for w in range(first, self._windows)]

    def rearm(self, now: float) -> None:
        """The decision layer rejected the current candidate: back to QUIET without SpeechStopped."""
        self._apply(Observation.REJECTED, now)

    async def feed(self, pcm16: npt.NDArray[np.int16], now: float) -> list[VadEvent]:
        """Process one inbound frame (any length; normally 160 samples) that arrived at `now`.

        Await each call before the next: frames of one call are a sequence, and Silero's state is too.
        """
        if self._feeding:
            raise RuntimeError("CallVad.feed is not re-entrant: await the previous frame first")
        if self.closed:
            return []
        self._feeding = True
        try:
            return await self._feed(pcm16, now)
        finally:
            self._feeding = False

    def close(self) -> None:
        """The call ended: its windows still queued for Silero are dropped, and feed() returns nothing more."""
        self.closed = True
        self._stream.close()
        self._stream_b.close()

    @property
    def second_phase(self) -> SecondPhase | None:
        """Phase B's schedule and counters (None without a second phase)."""
        return self._phase_b

    async def _feed(self, pcm16: npt.NDArray[np.int16], now: float) -> list[VadEvent]:
        events: list[VadEvent] = []
        samples = np.asarray(pcm16, dtype=np.int16).reshape(-1)
        self._fed_at = now
        pos, n = 0, len(samples)
        ring, ring_len = self._ring, len(self._ring)
        unyielded = 0  # windows since the last await
        while pos < n:
            fed = self._fed
            # never past a frame's or a window's end, hence never past the ring's end (a multiple of both)
            take = min(n - pos, FRAME - fed % FRAME, self._step - fed % self._step)
            r = fed % ring_len
            end = r + take
            ring[r:end] = samples[pos : pos + take]
            self._fed = fed = fed + take
            pos += take
            # A frame ending on the same sample as a window belongs to that window: frame first.
            if fed % FRAME == 0:
                self._on_frame(ring[end - FRAME : end])
            if fed % WINDOW == 0:
                window = np.multiply(ring[end - WINDOW : end], _TO_FLOAT)
                # Scored now only if the probability can change what happens. On a QUIET line a window can
                # only start speech if every cheap layer agrees (gate, webrtcvad, SNR over the floor): any
                # other window is WEAK or SILENCE whatever Silero says, and in QUIET both leave the state as it
                # is and tell no one. Steady noise lives here (above the gate, level with its own floor), so
                # its windows join the quiet ones in the bulk runs, and its frames never wait for the model.
                scored = self._win_gate and (self.state is not VadState.QUIET or self._may_start())
                if scored:
                    # Speech starting or on: this window may decide a barge-in, its run carries nothing extra.
                    self._stream.urgent = self.state is not VadState.QUIET
                    try:
                        prob = await self._batcher.infer(self._stream, window)
                    except asyncio.CancelledError:
                        task = asyncio.current_task()
                        if self.closed and task is not None and not task.cancelling():
                            return events  # close() cancelled the window, not someone cancelling us
                        raise
                    if self.closed:  # closed while the answer was on its way back: the call is over
                        return events
                    unyielded = 0
                else:
                    # Below the energy gate (or, on a QUIET line, below what can start speech: above) the
                    # window's verdict does not need the model. The batcher runs it later, in bulk, to keep the
                    # state warm (every one of them: see the docstring on running only the last few).
                    if self._hiss_for_zeros and not window.any():  # digital silence: the quiet line instead
                        window = _COMFORT[self._windows % len(_COMFORT)]
                    self._batcher.defer(self._stream, window)
                    prob = 0.0
                    unyielded += 1
                    if unyielded >= WINDOWS_PER_TURN:
                        unyielded = 0
                        await asyncio.sleep(0)
                        if self.closed:
                            return events
                event = self._on_window(prob, now)
                self._a_doubtful = not scored or prob >= self.config.silero_release
                if not scored:  # not scored yet: unknown to a second look, not "certainly silence"
                    self._probs[(self._windows - 1) % len(self._probs)] = math.nan
                if event is not None:
                    events.append(event)
            elif self._phase_b is not None and fed % WINDOW == HALF:
                if not self._b_gate and not self._phase_b.warm:
                    # The common case, silence with the stream cold: nothing to run, no run of B's to end (a cold
                    # stream has none). Only the loudness accumulator was touched under the gate.
                    self._b_peak_energy = 0.0
                    continue
                gate, webrtc_ok, above_floor, peak = self._b_layers()
                # Scored as phase A is: in STARTING whenever the gate is open, in QUIET only if it can start speech.
                step = self._phase_b.step(
                    self.state in (VadState.QUIET, VadState.STARTING) and fed >= self._b_from,
                    gate and (self.state is VadState.STARTING or (webrtc_ok and above_floor and self._a_doubtful)),
                )
                prob = 0.0
                if step is Step.DEFER:
                    self._batcher.defer(self._stream_b, self._ring_float(fed - WINDOW, fed))
                elif step is not Step.SKIP:
                    self._stream_b.urgent = self.state is not VadState.QUIET
                    try:
                        if step is Step.WARM_AND_SCORE:
                            await self._warm_b(fed)
                            if self.closed:  # closed while phase A's windows were run for the warm-up
                                return events
                        prob = await self._batcher.infer(self._stream_b, self._ring_float(fed - WINDOW, fed))
                    except asyncio.CancelledError:
                        task = asyncio.current_task()
                        if self.closed and task is not None and not task.cancelling():
                            return events
                        raise
                    if self.closed:
                        return events
                    unyielded = 0
                # In STARTING a window is unscored only under the gate: unsure, it ends phase B's run as it would
                # phase A's. In QUIET it changes nothing, and once speaking (or before `_b_from`) B has no say.
                if step in (Step.SCORE, Step.WARM_AND_SCORE) or (
                    self.state is VadState.STARTING and fed >= self._b_from
                ):
                    event = self._classify(1, prob, now, gate, webrtc_ok, above_floor, peak)
                    if event is not None:
                        events.append(event)
        # Timers run on every frame, not only on every 32 ms window: a turn end or a pause is then told within
        # one frame of its deadline, whether or not the session's timer tick happens to fall in between.
        events.extend(self.tick(now))
        return events

    def tick(self, now: float) -> list[VadEvent]:
        """Let time pass without audio: ends the caller's turn when frames stop arriving."""
        if self.state is VadState.QUIET:
            return []
        if self._expired(now):
            obs = Observation.EXPIRED
        elif self.state is not VadState.STARTING and self._pause_due(now):
            obs = Observation.PAUSE
        else:
            return []
        self.last_probability = 0.0  # no window: nothing was classified
        event = self._apply(obs, now)
        return [event] if event is not None else []

    def _on_frame(self, frame: npt.NDArray[np.int16]) -> None:
        x = frame.astype(np.float32)
        energy = float(np.dot(x, x))
        self._floor.update(energy)
        if energy > self._win_peak_energy:
            self._win_peak_energy = energy
        second = self._phase_b is not None
        if second and energy > self._b_peak_energy:
            self._b_peak_energy = energy
        if energy >= self._gate_energy:
            self._win_gate = True
            dbfs = 10 * math.log10(energy / FRAME) - _FULL_SCALE_DB
            self._win_peak = max(self._win_peak, dbfs)
            # webrtcvad only sees frames that passed the gate: below it the answer no longer matters.
            speech = self._webrtc is not None and self._webrtc.is_speech(frame.tobytes(), SAMPLE_RATE)
            if speech:
                self._win_webrtc = True
            if second:  # the frame also ends inside phase B's current window
                self._b_gate = True
                self._b_peak = max(self._b_peak, dbfs)
                self._b_webrtc = self._b_webrtc or speech

    def _b_layers(self) -> tuple[bool, bool, bool, float]:
        """Phase B's window just completed: its cheap-layer verdicts (gate, webrtcvad, above the floor, peak
        dBFS), and the accumulators start again for the next one."""
        layers = (
            self._b_gate,
            self._b_webrtc or self._webrtc is None,
            self._b_peak_energy >= self._floor.energy * self._snr_gain,
            self._b_peak,
        )
        self._b_gate, self._b_webrtc, self._b_peak, self._b_peak_energy = False, False, _SILENT_DBFS, 0.0
        return layers

    def _ring_float(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        """Samples [start, stop) of the call (still in the ring) as float32 in [-1, 1)."""
        n = len(self._ring)
        i = start % n
        part = (
            self._ring[i : i + stop - start]
            if i + (stop - start) <= n
            else np.concatenate([self._ring[i:], self._ring[: i + stop - start - n]])
        )
        out: npt.NDArray[np.float32] = np.multiply(part, _TO_FLOAT)
        return out

    async def _warm_b(self, end: int) -> None:
        """Phase B's stream was cold: start it from phase A's state of `warmup` + 1 windows back (A's stream has
        heard the whole call, so it knows a long noise for what it is), then queue phase B's windows since then,
        up to the one ending at sample `end`. Measured on the pool (phases.py): closer to a phase-B stream that
        ran all along than a reset stream warmed on twice as much audio, on speech onsets and on noise alike.
        Without A's state (a scorer that cannot settle, the call's first windows) the stream starts from zeros."""
        assert self._phase_b is not None
        k = self._phase_b.warmup
        stream, a = self._stream_b, self._stream
        stream.reset()
        first = end - (k + 1) * WINDOW  # the first warm-up window's first sample
        copied = False
        if isinstance(self._batcher, Settles) and first - HALF >= WINDOW:
            await self._batcher.settle(a)  # A's queued windows run now: its kept states are current
            back = self._windows - (first - HALF) // WINDOW  # A's windows since the one ending at first - HALF
            if a.windows_run == self._windows and 0 <= back < len(a.states):
                stream.state[...] = a.states[-1 - back]
                copied = True
        if not copied:
            held = min(self._fed, len(self._ring))
            k = max(0, min(k, (held - WINDOW - CONTEXT) // WINDOW))
            first = end - (k + 1) * WINDOW
        if first >= CONTEXT and self._fed - (first - CONTEXT) <= min(self._fed, len(self._ring)):
            stream.context[...] = self._ring_float(first - CONTEXT, first)
        for w in range(1, k + 1):
            self._batcher.defer(stream, self._ring_float(first + (w - 1) * WINDOW, first + w * WINDOW))

    def _may_start(self) -> bool:
        """The window being completed passes the cheap layers an onset needs (the gate is checked apart)."""
        return (self._win_webrtc or self._webrtc is None) and (
            self._win_peak_energy >= self._floor.energy * self._snr_gain
        )

    def _on_window(self, prob: float, now: float) -> VadEvent | None:
        """Phase A's window just completed with this probability."""
        gate, webrtc_ok, peak = self._win_gate, self._win_webrtc or self._webrtc is None, self._win_peak
        above_floor = self._win_peak_energy >= self._floor.energy * self._snr_gain
        self._win_gate, self._win_webrtc, self._win_peak = False, False, _SILENT_DBFS
        self._win_peak_energy = 0.0
        self._probs[self._windows % len(self._probs)] = prob
        self._windows += 1
        event = self._classify(0, prob, now, gate, webrtc_ok, above_floor, peak)
        tracker = self.near_miss
        if tracker is not None:  # a few comparisons a window, nothing a frame
            sound = gate and prob >= self.config.silero_release
            onset_possible = self.state is VadState.QUIET or self.state is VadState.STARTING
            miss = tracker.window(now, prob, gate and webrtc_ok and above_floor, sound, onset_possible)
            if miss is not None and self.on_near_miss is not None:
                self.on_near_miss(miss)
        return event

    def _classify(
        self, phase: int, prob: float, now: float, gate: bool, webrtc_ok: bool, above_floor: bool, peak: float
    ) -> VadEvent | None:
        """A window of `phase` (0: A, 1: B) ending at the last sample fed, through the hysteresis."""
        self.last_probability = prob
        cfg = self.config
        if gate and webrtc_ok and above_floor and prob >= (self._b_threshold if phase else cfg.silero_threshold):
            obs = Observation.SPEECH
        elif gate and prob >= cfg.silero_release:
            obs = Observation.WEAK
        else:
            obs = Observation.SILENCE

        if obs is not Observation.SILENCE:
            self._last_active_at = now
        if gate and webrtc_ok and prob >= self._evidence:
            self._last_sure_at = now
        if self.state in (VadState.QUIET, VadState.STARTING):
            run = self._runs[phase]
            if obs is Observation.SPEECH:
                n = run.add(prob, peak, now - WINDOW_S, self._fed - WINDOW)
                if n * WINDOW_S * 1000 >= cfg.min_speech_ms:
                    obs = Observation.SUSTAINED
                    self._sustained_windows, self._prob_sum, self._peak_dbfs = run.windows, run.prob_sum, run.peak_dbfs
                if self.state is VadState.QUIET:  # the candidate starts with this window
                    self._speech_start_at, self._speech_start_sample = run.start_at, run.start_sample
            else:
                run.clear()
                if obs is Observation.WEAK and self.state is VadState.STARTING and self._runs[1 - phase].windows:
                    # The other phase's sure run goes on over this window's audio, which this phase heard as
                    # doubtful, not as silence: SILENCE ends the candidate whichever phase is sure (phases.py).
                    obs = Observation.PENDING
            if phase == 0 and cfg.onset_threshold > 0.0:
                # The slow path, counted apart from the sure one: a soft onset hovering under the threshold.
                if gate and webrtc_ok and above_floor and prob >= cfg.onset_threshold:
                    self._onset_run += 1
                    self._onset_peak = max(self._onset_peak, peak)
                else:
                    self._onset_run, self._onset_peak = 0, _SILENT_DBFS
                if obs is Observation.SUSTAINED:
                    self._onset_run, self._onset_peak = 0, _SILENT_DBFS
                elif self._onset_run >= cfg.onset_windows and self._slow_onset(now):
                    obs = Observation.SUSTAINED
        elif obs is Observation.SILENCE:
            if self._expired(now):
                obs = Observation.EXPIRED
            elif self._pause_due(now):
                obs = Observation.PAUSE
        return self._apply(obs, now, peak)

    def _slow_onset(self, now: float) -> bool:
        """The slow path's run is complete: ask the gate (onset.py) over its windows. On yes the run becomes the
        sustained speech (its start, probabilities and peak); either way the run starts counting again."""
        n = self.config.onset_windows
        first = self._windows - n
        audio, probs = self._since(first * WINDOW)
        peak = self._onset_peak
        self._onset_run, self._onset_peak = 0, _SILENT_DBFS
        if self.config.onset_gate > 0.0 and not onset.is_speech(audio, probs, self.config.onset_gate):
            return False
        self._sustained_windows, self._prob_sum, self._peak_dbfs = n, float(sum(probs)), peak
        self._speech_start_at = now - n * WINDOW_S
        self._speech_start_sample = first * WINDOW
        return True

    def _expired(self, now: float) -> bool:
        return (now - self._last_active_at) * 1000 >= self.config.turn_end_silence_ms - 1e-6

    def _pause_due(self, now: float) -> bool:
        return (
            self._paused_for != self._last_active_at
            and (now - self._last_active_at) * 1000 >= self.config.pause_ms - 1e-6
        )

    def _apply(self, obs: Observation, now: float, level_dbfs: float = _SILENT_DBFS) -> VadEvent | None:
        previous = self.state
        self.state, emit = TRANSITIONS[(previous, obs)]
        if self.state is not VadState.STARTING:  # no onset in progress: both phases' runs start afresh
            self._runs[0].clear()
            self._runs[1].clear()
        if self.state is not previous and self.on_change is not None:
            self.on_change(now, previous, self.state, self.last_probability, level_dbfs)
        if emit is Emit.STARTED:
            n = self._sustained_windows
            return SpeechStarted(
                at=now,
                confidence=self._prob_sum / n,
                sustained_ms=n * WINDOW_S * 1000,
                peak_dbfs=self._peak_dbfs,
            )
        if emit is Emit.STOPPED:
            return SpeechStopped(
                at=now, speech_ms=max(0.0, self._last_active_at - self._speech_start_at) * 1000,
                last_speech_at=self._last_active_at,
            )
        if emit is Emit.PAUSED:
            self._paused_for = self._last_active_at
            if self.on_pause is not None:
                self.on_pause(
                    SpeechPaused(at=now, speech_ms=max(0.0, self._last_sure_at - self._speech_start_at) * 1000)
                )
        return None
