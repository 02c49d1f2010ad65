"""VadConfig: every threshold of the caller-leg VAD (app/bargein/vad.py), from settings or the presets.

Kept apart from the VAD itself so the thresholds can be read (and set by settings, presets and the offline
fitting scripts) without the detector's machinery; what each one does is said where it is used, in vad.py.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

from app.bargein.silero import WINDOW

if typing.TYPE_CHECKING:
    from app.settings import Settings

SAMPLE_RATE = 8000
WINDOW_S = WINDOW / SAMPLE_RATE


@dataclass(frozen=True)
class VadConfig:
    """Every threshold of the speech detector.

    Defaults measured with `python -m app.offline.evaluate` on the corpus (145 real clips): detection 100%,
    onset-to-decision p50 92 ms / p95 233 ms, false starts on 4 of 95 noise clips, none on steady noise.
    A lower threshold with a longer guard (0.8 x 96 ms) was slower and stopped on twice as much noise. On
    noisy, band-limited lines Silero is less sure of speech; 0.85 x 64 ms keeps detection there at some
    cost in false stops (the evaluator's --phone-band / --noise conditions show the trade).

    The floor's two thresholds were fitted on the training pool only (corpus-pool without its dev_overlap
    clips: 667 speech, 33 noise clips), `--floor-sweep` over snr_db 0/6/8/10/12/15/20 x window 0.6/1/1.5 s.
    snr_db=10 is the largest that costs no detection on speech under rain or keyboard at 10 dB SNR (99.7%,
    100%; wind 99.4% as at 6 dB, 99.6% with no floor), nor for a -40 dBFS talker (98.4%, Silero's misses);
    12 and more start losing speech under noise. Under hiss stepping -60 -> -35 dBFS it takes false starts
    on real noise from 5 to 3 of 53 (the hiss alone never starts, floor or not) for 0.8 points of detection
    (speech only ~10 dB over the hiss) and a slower tail (p95 187 -> 393 ms). A 0.6 s window lets long
    words lift the floor (loses speech); 1.5 s follows a step later and scores like 1 s.
    """

    energy_gate_dbfs: float = -55.0  # 13 dB under the quietest corpus word; Silero rejects hiss and hum
    use_webrtc: bool = True  # measured: never changed a decision in modes 0-2 (mode 3 loses words); ~1 us a frame
    webrtc_mode: int = 1
    silero_threshold: float = 0.9  # Silero saturates on speech and hovers at 0.6-0.9 on coughs/sneezes
    silero_release: float = 0.35
    min_speech_ms: float = 64.0  # two windows: with the high threshold, shorter and surer than 0.8 x 96 ms
    turn_end_silence_ms: float = 700.0
    # The adaptive floor (see the module docstring and the fit above). snr_db=0 turns it off.
    snr_db: float = 10.0  # a window's loudest frame must be this far above the line's floor to start speech
    floor_window_ms: float = 1000.0  # the floor is the quietest frame of this much audio: a step up is
    # followed within this time (plus a quarter); speech always dips to the floor within it
    pause_ms: float = 250.0  # SpeechPaused after this much silence in a turn (a backchannel has ended)
    recent_ms: float = 1500.0  # audio and probabilities kept for recent()
    # The slow onset path (onset.py): `onset_windows` windows in a row >= onset_threshold (every cheap layer
    # passed) start speech, with onset_gate > 0 only if the fitted gate agrees. onset_threshold 0 (the
    # default) turns it off: faster and hears more quiet talkers, but fires on more noise (onset.py).
    onset_threshold: float = 0.0
    onset_windows: int = 3
    onset_gate: float = 0.0
    # A window counts as speech evidence for speech_ms / SpeechPaused (how long the caller has spoken, what the
    # policy's backchannel-or-turn decision reads) at this probability (gate and webrtcvad passed). Measured on
    # the pool: at 0.8 the policy's 600 ms mark falls where it did on 99% of speech onsets.
    evidence_threshold: float = 0.8
    # Phase B (phases.py): a second Silero stream on windows shifted by 16 ms, run only while an onset is
    # possible and loud; warmed on this much audio when it starts cold. Off here (the scripted replicas of
    # the live start in tools and tests count one window per 32 ms); VAD_SECOND_PHASE decides for the server.
    second_phase: bool = False
    second_phase_warmup_ms: float = 96.0
    second_phase_threshold: float = 0.0  # phase B's windows count as sure from this probability (0: silero_threshold)
    # A window of digital silence (every sample 0) reaches Silero as a quiet line's hiss (vad.py, _COMFORT). Off:
    # after seconds of zeros the model is slower to believe speech, and also to believe a noise (measured, see
    # vad.py); on, a muted or silence-suppressed leg behaves as a quiet line does.
    hiss_for_digital_silence: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.silero_release <= self.silero_threshold < 1.0:
            raise ValueError("need 0 < silero_release <= silero_threshold < 1")
        if self.webrtc_mode not in (0, 1, 2, 3):
            raise ValueError("webrtc_mode is 0..3")
        if self.min_speech_ms < 0 or self.turn_end_silence_ms <= 0:
            raise ValueError("min_speech_ms must be >= 0 and turn_end_silence_ms > 0")
        if self.snr_db < 0 or self.floor_window_ms < 80 or self.pause_ms <= 0 or self.recent_ms < WINDOW_S * 1000:
            raise ValueError("need snr_db >= 0, floor_window_ms >= 80, pause_ms > 0, recent_ms >= 32")
        if not 0.0 <= self.onset_threshold < 1.0 or self.onset_windows < 2:
            raise ValueError("need 0 <= onset_threshold < 1 and onset_windows >= 2")
        if not 0.0 < self.evidence_threshold < 1.0:
            raise ValueError("need 0 < evidence_threshold < 1")
        if not 0.0 <= self.second_phase_warmup_ms <= self.recent_ms - 2 * WINDOW_S * 1000:
            raise ValueError("need 0 <= second_phase_warmup_ms <= recent_ms - 64 (the ring holds the warm-up)")

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
            snr_db=float(getattr(settings, "vad_snr_db", cls.snr_db)),
            floor_window_ms=float(getattr(settings, "vad_floor_window_ms", cls.floor_window_ms)),
            pause_ms=float(getattr(settings, "vad_pause_ms", cls.pause_ms)),
            recent_ms=float(getattr(settings, "vad_recent_ms", cls.recent_ms)),
            onset_threshold=float(getattr(settings, "vad_onset_threshold", cls.onset_threshold)),
            onset_windows=int(getattr(settings, "vad_onset_windows", cls.onset_windows)),
            onset_gate=float(getattr(settings, "vad_onset_gate", cls.onset_gate)),
            evidence_threshold=float(getattr(settings, "vad_evidence_threshold", cls.evidence_threshold)),
            second_phase=bool(getattr(settings, "vad_second_phase", cls.second_phase)),
            hiss_for_digital_silence=bool(
                getattr(settings, "vad_hiss_for_digital_silence", cls.hiss_for_digital_silence)
            ),
            second_phase_warmup_ms=float(
                getattr(settings, "vad_second_phase_warmup_ms", cls.second_phase_warmup_ms)
            ),
        )
