"""Near misses: short caller sounds that came close to starting speech and never did.

Theory of operation
-------------------
The VAD starts speech on two Silero windows in a row at 0.9 or more (vad.py). A bare, low-pitched "stop" can
hover at 0.6-0.87 for its whole half second at some window phases: no candidate starts, nothing is transcribed,
and the agent talks on. Its words would say "stop"; the sound alone never gets them asked for.

`NearMissTracker` watches the VAD's windows for such a sound, with a comparison or two a window:

- it opens on a window that passes the cheap layers (gate, webrtcvad, SNR over the floor: the ones a window
  needs to start speech) with a probability of at least `threshold`, once the line has been silent for
  `end_silence_ms` (so the tail of a sound the VAD did take, or of a long noise, never opens one);
- windows above the VAD's release (the gate passed) keep it going; windows that pass the cheap layers at
  `threshold` or more are counted;
- `end_silence_ms` without a window above release closes it: a `NearMiss` if at least `min_windows` were
  counted and it lasted `min_ms` to `max_ms` (first counted window's start to its last window above release);
- speech starting (the VAD past STARTING) drops it: the candidate path has the sound, and its late words too.
  A sound running past `max_ms` is dropped at once and the tracker waits for silence.

What to do with a near miss (ask the recognizer, within per-call bounds) is the session's
(app/call/interruption.py); the tracker only says one happened. Times are arrival times passed in; the tracker
reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.bargein.vad_events import NearMiss


@dataclass(frozen=True)
class NearMissConfig:
    """What counts as a near miss (NEAR_MISS_* settings)."""

    threshold: float = 0.5  # a window passing the cheap layers at this probability counts
    min_windows: int = 2  # counted windows a near miss needs
    min_ms: float = 200.0  # its length: from its first counted window's start to its last window above release
    max_ms: float = 1200.0
    end_silence_ms: float = 250.0  # silence that ends it (and must precede it)
    release: float = 0.35  # the VAD's silero_release: a window above it (gate passed) is still sound
    window_s: float = 0.032  # one Silero window of audio

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0 or self.min_windows < 1 or not 0.0 <= self.min_ms <= self.max_ms:
            raise ValueError("near miss: threshold in (0, 1], min_windows >= 1, 0 <= min_ms <= max_ms")
        if self.end_silence_ms <= 0.0 or not 0.0 <= self.release <= self.threshold:
            raise ValueError("near miss: end_silence_ms > 0, 0 <= release <= threshold")


class NearMissTracker:
    """One call's near-miss watch: fed every classified window of the VAD's main phase."""

    def __init__(self, config: NearMissConfig) -> None:
        self.config = config
        self._open = False
        self._start_at = 0.0  # the open sound's first counted window's start
        self._counted = 0
        self._peak = 0.0
        self._last_sound_at = -1e9  # the latest window above release, open or not
        self._fresh = False  # the current run of sound followed end_silence_ms of silence, and may open one
        self.seen = 0  # near misses told in the call

    def window(self, now: float, prob: float, may_start: bool, sound: bool, onset_possible: bool) -> NearMiss | None:
        """A window ended at `now` with Silero's `prob`. `may_start`: it passed every cheap layer an onset needs;
        `sound`: it passed the gate at the VAD's release or more; `onset_possible`: the VAD is QUIET or STARTING
        after it (no speech started). Returns the near miss this window's silence completed, if any."""
        cfg = self.config
        if not onset_possible:  # speech started: the candidate path has this sound
            self._open = self._fresh = False
            if sound:
                self._last_sound_at = now
            return None
        if sound:
            if (now - self._last_sound_at) * 1000.0 > cfg.end_silence_ms:
                self._fresh = True  # a new run of sound, after silence
            if self._open:
                if (now - self._start_at) * 1000.0 > cfg.max_ms:
                    self._open = self._fresh = False  # too long for a word said over the agent: wait for silence
                elif may_start and prob >= cfg.threshold:
                    self._counted += 1
                    self._peak = max(self._peak, prob)
            elif self._fresh and may_start and prob >= cfg.threshold:
                self._open, self._start_at, self._counted, self._peak = True, now - cfg.window_s, 1, prob
            self._last_sound_at = now
            return None
        if not self._open or (now - self._last_sound_at) * 1000.0 < cfg.end_silence_ms - 1e-6:
            return None
        self._open = self._fresh = False
        length_ms = (self._last_sound_at - self._start_at) * 1000.0
        if self._counted < cfg.min_windows or not cfg.min_ms <= length_ms <= cfg.max_ms:
            return None
        self.seen += 1
        return NearMiss(at=now, start_at=self._start_at, end_at=self._last_sound_at, windows=self._counted,
                        peak=self._peak)
