"""What the caller-leg VAD (app/bargein/vad.py) tells the session: typed events, each with its time."""

from __future__ import annotations

from dataclasses import dataclass


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
    last_speech_at: float | None = None  # the caller's last speech (the silence after it ended the turn)


@dataclass(frozen=True)
class SpeechPaused:
    """pause_ms without speech in a turn (told once per pause, through CallVad.on_pause): an utterance ended.

    The turn may still go on (speech resuming before turn_end_silence_ms is the same turn); this says the
    caller stopped for now, which is when a backchannel ("mm-hmm") is known to be over.
    """

    at: float
    speech_ms: float  # from the turn's speech start to its last window with speech evidence


@dataclass(frozen=True)
class NearMiss:
    """A short sound that came close to starting speech and never did (app/bargein/near_miss.py), told through
    CallVad.on_near_miss once its silence has lasted: a word like a bare "stop" Silero held just under the bar."""

    at: float  # arrival of the window whose silence completed it
    start_at: float  # arrival-clock start of its first counted window
    end_at: float  # arrival of its last window above the VAD's release
    windows: int  # windows that passed the cheap layers at the near-miss threshold
    peak: float  # its highest such probability
