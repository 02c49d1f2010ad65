"""Per-call voice activity: energy gate + webrtcvad + Silero, and the four-state speech hysteresis.

Theory of operation
-------------------
Every caller frame goes through `CallVad.feed(pcm16, now)` for the whole call, whether or not the agent is
talking: the caller's turns need the same decisions, and Silero's recurrent state must stay warm.

Layers, cheapest first:

1. Energy gate, per 20 ms frame: a frame quieter than `energy_gate_dbfs` is never speech. It sits well
   below quiet talkers (the corpus's quietest word peaks near -42 dBFS); hiss and hum above it are left to
   Silero to reject, because a gate high enough to reject them would also reject soft speech.
2. webrtcvad, per exact 20 ms frame, optional (`use_webrtc`, off by default). It calls most steady noise
   speech, so it can only corroborate, never classify; on the corpus, requiring it changed no decision in
   modes 0-2 and lost a word in mode 3, so it stays a configurable layer that costs nothing when off.
3. Silero VAD on 32 ms (256-sample) windows re-framed from the 20 ms frames, run through the process-wide
   `SileroBatcher` on EVERY window so the model's state stays warm. A window's cheap-layer verdict is the OR
   over the 20 ms frames that end inside it (those are exactly the complete frames that overlap it).

Each window is classified as SPEECH (probability >= silero_threshold and the cheap layers agree), WEAK
(probability >= silero_release, energy gate passed: still speech once speech has started) or SILENCE.
Then the hysteresis below turns windows into events. "Sustained" counts audio time (32 ms per window);
"silence" is measured on the arrival clock, so a timer calling `tick(now)` ends a turn on time even when
the phone leg stops sending frames.

The only time source is the `now` passed in; nothing here reads a clock. `feed` awaits only the batcher,
and, on a frame longer than WINDOWS_PER_TURN windows, the loop itself now and then: the work of one frame is
linear in its length and never held in one loop turn. `close()` drops the call's windows still queued.
"""

from __future__ import annotations

import asyncio
import math
import typing
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt
import webrtcvad

from app.bargein.silero import WINDOW, SileroStream, WindowScorer

if typing.TYPE_CHECKING:
    from app.settings import Settings

SAMPLE_RATE = 8000
FRAME = 160  # 20 ms: the telephony frame and a length webrtcvad accepts
WINDOW_S = WINDOW / SAMPLE_RATE
_FULL_SCALE_DB = 20 * math.log10(32768.0)
_SILENT_DBFS = -120.0
# One inbound frame is normally one 20 ms frame; a longer one is cut into windows here, and the windows below
# the energy gate are only queued (no await). Yield to the loop after this many windows without an await, so
# one long frame cannot hold the loop: 64 windows (2 s of audio) take about 0.5 ms here.
WINDOWS_PER_TURN = 64


@dataclass(frozen=True)
class VadConfig:
    """Every threshold of the speech detector.

    Defaults measured with `python -m app.offline.evaluate` on the corpus (145 real clips): detection 100%,
    onset-to-decision p50 92 ms / p95 233 ms, false starts on 4 of 95 noise clips, none on steady noise.
    A lower threshold with a longer guard (0.8 x 96 ms) was slower and stopped on twice as much noise. On
    noisy, band-limited lines Silero is less sure of speech; 0.85 x 64 ms keeps detection there at some
    cost in false stops (the evaluator's --phone-band / --noise conditions show the trade).
    """

    energy_gate_dbfs: float = -55.0  # 13 dB under the quietest corpus word; Silero rejects hiss and hum
    use_webrtc: bool = True  # measured: never changed a decision in modes 0-2 (mode 3 loses words); ~1 us a frame
    webrtc_mode: int = 1
    silero_threshold: float = 0.9  # Silero saturates on speech and hovers at 0.6-0.9 on coughs/sneezes
    silero_release: float = 0.35
    min_speech_ms: float = 64.0  # two windows: with the high threshold, shorter and surer than 0.8 x 96 ms
    turn_end_silence_ms: float = 700.0

    def __post_init__(self) -> None:
        if not 0.0 < self.silero_release <= self.silero_threshold < 1.0:
            raise ValueError("need 0 < silero_release <= silero_threshold < 1")
        if self.webrtc_mode not in (0, 1, 2, 3):
            raise ValueError("webrtc_mode is 0..3")
        if self.min_speech_ms < 0 or self.turn_end_silence_ms <= 0:
            raise ValueError("min_speech_ms must be >= 0 and turn_end_silence_ms > 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> VadConfig:
        return cls(
            energy_gate_dbfs=settings.vad_energy_gate_dbfs,
            webrtc_mode=settings.vad_webrtc_mode,
            silero_threshold=settings.vad_silero_threshold,
            silero_release=settings.vad_silero_release,
            min_speech_ms=float(settings.bargein_min_speech_ms),
            turn_end_silence_ms=float(settings.turn_end_silence_ms),
            use_webrtc=bool(getattr(settings, "vad_use_webrtc", cls.use_webrtc)),
        )


@dataclass(frozen=True)
class SpeechStarted:
    """Speech sustained for min_speech_ms: the barge-in trigger while the agent talks."""

    at: float  # arrival time of the frame that completed the decision
    confidence: float  # mean Silero probability over the sustained windows
    sustained_ms: float
    peak_dbfs: float  # RMS level of the loudest 20 ms frame in the sustained windows


@dataclass(frozen=True)
class SpeechStopped:
    """turn_end_silence_ms without speech after SpeechStarted: the caller's turn is over."""

    at: float
    speech_ms: float


VadEvent = SpeechStarted | SpeechStopped


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


class Emit(Enum):
    NOTHING = 0
    STARTED = 1
    STOPPED = 2


St, Ob = VadState, Observation
# Every transition of the hysteresis, in one place. The missing pairs cannot occur: SUSTAINED is derived only
# in QUIET/STARTING, EXPIRED only in STARTING/SPEAKING/STOPPING (CallVad._on_window and CallVad.tick).
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
    (St.SPEAKING, Ob.SPEECH): (St.SPEAKING, Emit.NOTHING),
    (St.SPEAKING, Ob.WEAK): (St.SPEAKING, Emit.NOTHING),
    (St.SPEAKING, Ob.SILENCE): (St.STOPPING, Emit.NOTHING),
    (St.SPEAKING, Ob.EXPIRED): (St.QUIET, Emit.STOPPED),
    (St.STOPPING, Ob.SPEECH): (St.SPEAKING, Emit.NOTHING),
    (St.STOPPING, Ob.WEAK): (St.SPEAKING, Emit.NOTHING),
    (St.STOPPING, Ob.SILENCE): (St.STOPPING, Emit.NOTHING),
    (St.STOPPING, Ob.EXPIRED): (St.QUIET, Emit.STOPPED),
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
        self._gate_energy = FRAME * 10 ** ((config.energy_gate_dbfs + _FULL_SCALE_DB) / 10)
        self._frame = np.zeros(FRAME, dtype=np.int16)
        self._frame_fill = 0
        self._window = np.zeros(WINDOW, dtype=np.float32)
        self._window_fill = 0
        # cheap-layer verdicts of the 20 ms frames that ended inside the current window
        self._win_gate = False
        self._win_webrtc = False
        self._win_peak = _SILENT_DBFS

        self._feeding = False
        self.closed = False
        self.state = VadState.QUIET
        self.last_probability = 0.0
        self._sustained_windows = 0
        self._prob_sum = 0.0
        self._peak_dbfs = _SILENT_DBFS
        self._speech_start_at = 0.0
        self._last_active_at = 0.0
        # Told of every state change (now, previous, new, probability, level dBFS): the call's event stream.
        self.on_change: StateObserver | None = None

    @property
    def speaking(self) -> bool:
        """True from SpeechStarted until SpeechStopped."""
        return self.state in (VadState.SPEAKING, VadState.STOPPING)

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

    async def _feed(self, pcm16: npt.NDArray[np.int16], now: float) -> list[VadEvent]:
        events: list[VadEvent] = []
        samples = np.asarray(pcm16, dtype=np.int16).reshape(-1)
        pos, n = 0, len(samples)
        unyielded = 0  # windows since the last await
        while pos < n:
            take = min(n - pos, FRAME - self._frame_fill, WINDOW - self._window_fill)
            chunk = samples[pos : pos + take]
            self._frame[self._frame_fill : self._frame_fill + take] = chunk
            self._window[self._window_fill : self._window_fill + take] = chunk
            self._frame_fill += take
            self._window_fill += take
            pos += take
            # A frame ending on the same sample as a window belongs to that window: frame first.
            if self._frame_fill == FRAME:
                self._frame_fill = 0
                self._on_frame()
            if self._window_fill == WINDOW:
                self._window_fill = 0
                window = self._window * np.float32(1 / 32768)
                if self._win_gate:
                    try:
                        prob = await self._batcher.infer(self._stream, window)
                    except asyncio.CancelledError:
                        task = asyncio.current_task()
                        if self.closed and task is not None and not task.cancelling():
                            return events  # close() cancelled the window, not someone cancelling us
                        raise
                    unyielded = 0
                else:
                    # Below the energy gate the window is silence whatever Silero says (see _on_window):
                    # the model only needs to see it before the next loud window, so it runs later, in bulk.
                    self._batcher.defer(self._stream, window)
                    prob = 0.0
                    unyielded += 1
                    if unyielded >= WINDOWS_PER_TURN:
                        unyielded = 0
                        await asyncio.sleep(0)
                        if self.closed:
                            return events
                event = self._on_window(prob, now)
                if event is not None:
                    events.append(event)
        return events

    def tick(self, now: float) -> list[VadEvent]:
        """Let time pass without audio: ends the caller's turn when frames stop arriving."""
        if self.state is VadState.QUIET or not self._expired(now):
            return []
        self.last_probability = 0.0  # no window: nothing was classified
        event = self._apply(Observation.EXPIRED, now)
        return [event] if event is not None else []

    def _on_frame(self) -> None:
        x = self._frame.astype(np.float32)
        energy = float(np.dot(x, x))
        if energy >= self._gate_energy:
            self._win_gate = True
            dbfs = 10 * math.log10(energy / FRAME) - _FULL_SCALE_DB
            self._win_peak = max(self._win_peak, dbfs)
            # webrtcvad only sees frames that passed the gate: below it the answer no longer matters.
            if self._webrtc is not None and self._webrtc.is_speech(self._frame.tobytes(), SAMPLE_RATE):
                self._win_webrtc = True

    def _on_window(self, prob: float, now: float) -> VadEvent | None:
        self.last_probability = prob
        cfg = self.config
        gate, webrtc_ok, peak = self._win_gate, self._win_webrtc or self._webrtc is None, self._win_peak
        self._win_gate, self._win_webrtc, self._win_peak = False, False, _SILENT_DBFS

        if gate and webrtc_ok and prob >= cfg.silero_threshold:
            obs = Observation.SPEECH
        elif gate and prob >= cfg.silero_release:
            obs = Observation.WEAK
        else:
            obs = Observation.SILENCE

        if obs is not Observation.SILENCE:
            self._last_active_at = now
        if self.state in (VadState.QUIET, VadState.STARTING):
            if obs is Observation.SPEECH:
                if self.state is VadState.QUIET:
                    self._sustained_windows, self._prob_sum, self._peak_dbfs = 0, 0.0, _SILENT_DBFS
                    self._speech_start_at = now - WINDOW_S
                self._sustained_windows += 1
                self._prob_sum += prob
                self._peak_dbfs = max(self._peak_dbfs, peak)
                if self._sustained_windows * WINDOW_S * 1000 >= cfg.min_speech_ms:
                    obs = Observation.SUSTAINED
        elif obs is Observation.SILENCE and self._expired(now):
            obs = Observation.EXPIRED
        return self._apply(obs, now, peak)

    def _expired(self, now: float) -> bool:
        return (now - self._last_active_at) * 1000 >= self.config.turn_end_silence_ms - 1e-6

    def _apply(self, obs: Observation, now: float, level_dbfs: float = _SILENT_DBFS) -> VadEvent | None:
        previous = self.state
        self.state, emit = TRANSITIONS[(previous, obs)]
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
                at=now, speech_ms=max(0.0, self._last_active_at - self._speech_start_at) * 1000
            )
        return None
