"""Is the caller's turn over? An acoustic end-of-turn model (Smart Turn v3) asked at a short pause.

(`EndOfTurn` below asks any `TurnModel`: Smart Turn, or the small prosodic model fitted on our own phone
audio in app/call/prosody.py, TURN_END_MODEL=prosody.)

Theory of operation
-------------------
Silence cannot tell a caller who has finished from one who stopped to think, and the words cannot always
either ("He took a resolve after this." reads as complete at every phrase boundary). Pitch, lengthening and
the way the voice falls at the end of a statement can: Smart Turn v3 (pipecat-ai, BSD-2-Clause) is a Whisper
tiny encoder with a small classifier head, trained on complete and cut-off turns, that maps the last 8 s of a
turn to P(the turn is complete). The session asks it once per pause (app/call/turn_taking.py decides what
the answer does); one inference costs some 50-110 ms of one core.

Where the weights come from: the `pipecat-ai` wheel on PyPI ships `smart-turn-v3.2-cpu.onnx` as package data
(installed with `pip install --no-deps pipecat-ai==1.14.0`, the optional `turn-model` extra; see
pyproject.toml). Nothing of pipecat is imported: `importlib.util.find_spec` locates the package directory
without running its code, and the file is read from there. Nothing is copied into this project.

What the model reads (facts from the model's documentation): 16 kHz mono, the last 8 s of the turn,
left-padded with zeros when shorter, normalised to zero mean and unit variance over the 8 s, then Whisper's
log-mel spectrogram: 25 ms periodic-Hann frames every 10 ms (centred, reflect-padded), power spectrum,
80 Slaney-normalised mel bands over 0-8 kHz, log10 floored at 1e-10 and at 8 decades under the maximum, then
scaled as (x + 4) / 4; 800 frames. Input `input_features` (1, 80, 800) float32; the first output holds the
probability. Our audio is 8 kHz mu-law from the phone: it is decoded and upsampled by zero-padding its
spectrum (band-limited, so the 4-8 kHz half is empty, as on any phone line; measured in
app/offline/eot_eval.py). Everything up to the model call is pure numpy (`features`).

Cost control: one onnxruntime session per process, one intra-op thread, run in one worker thread (never on
the event loop), one inference at a time. At most `max_pending` asks wait; past that an ask answers None at
once (no verdict: the turn ends the way it would without the model) rather than queueing behind turns whose
pauses are long over.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I16 = npt.NDArray[np.int16]

MODEL_RATE = 16_000
PHONE_RATE = 8_000
WINDOW_S = 8  # the model reads the last 8 s of the turn
N_FFT = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
N_MELS = 80
FRAMES = WINDOW_S * MODEL_RATE // HOP  # 800
INPUT_NAME = "input_features"
# The weights inside the pipecat-ai wheel (package data, relative to the package directory).
PACKAGE = "pipecat"
WEIGHTS = Path("audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx")


# --- features (pure) -------------------------------------------------------------------------------
def upsample_phone(pcm16: I16) -> F32:
    """8 kHz int16 -> 16 kHz float in [-1, 1), band-limited: the spectrum is zero-padded, so nothing is
    invented above 4 kHz (linear interpolation would mirror the speech band into it)."""
    x = pcm16.astype(np.float64) / 32768.0
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    spectrum = np.fft.rfft(x)
    # Twice the length, the same spectrum: irfft of 2n points scales by 1/(2n), so the amplitude doubles back.
    up = np.fft.irfft(spectrum, 2 * n) * 2.0
    return up.astype(np.float32)


def _hz_to_mel(hz: F64) -> F64:
    """The Slaney mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    step = np.log(6.4) / 27.0  # 27 mels per factor 6.4 above 1 kHz
    log = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / step
    return np.where(hz < 1000.0, linear, log)


def _mel_to_hz(mel: F64) -> F64:
    mel = np.asarray(mel, dtype=np.float64)
    step = np.log(6.4) / 27.0
    return np.where(mel < 15.0, mel * 200.0 / 3.0, 1000.0 * np.exp((mel - 15.0) * step))


def mel_matrix() -> F64:
    """(N_MELS, N_FFT // 2 + 1): triangles spaced evenly in mel over 0-8 kHz, each of unit area (Slaney)."""
    edges = _mel_to_hz(np.linspace(0.0, float(_hz_to_mel(np.array(MODEL_RATE / 2.0))), N_MELS + 2))
    bins = np.linspace(0.0, MODEL_RATE / 2.0, N_FFT // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lo) / (mid - lo)
    falling = (hi - bins[None, :]) / (hi - mid)
    tri = np.clip(np.minimum(rising, falling), 0.0, None)
    return tri * (2.0 / (hi - lo))


_MEL = mel_matrix()
_WINDOW = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann


def log_mel(audio16k: F32) -> F32:
    """The model's input for 16 kHz audio: (N_MELS, FRAMES), from its last WINDOW_S (zeros before it)."""
    n = WINDOW_S * MODEL_RATE
    x = np.zeros(n, dtype=np.float32)
    tail = audio16k[-n:]
    if len(tail):
        x[n - len(tail):] = tail
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)  # over the padded window, as the model was trained
    half = N_FFT // 2
    padded = np.pad(x.astype(np.float64), half, mode="reflect")
    starts = np.arange(FRAMES) * HOP  # the (FRAMES + 1)-th centred frame is not used
    frames = padded[starts[:, None] + np.arange(N_FFT)[None, :]]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) ** 2  # (FRAMES, bins)
    mel = np.log10(np.maximum(power @ _MEL.T, 1e-10)).T  # (N_MELS, FRAMES)
    mel = np.maximum(mel, mel.max() - 8.0)
    scaled: F32 = ((mel + 4.0) / 4.0).astype(np.float32)
    return scaled


def features(pcm16_8k: I16) -> F32:
    """The model's input batch (1, N_MELS, FRAMES) for the caller's 8 kHz audio."""
    return log_mel(upsample_phone(pcm16_8k))[None, :, :]


# --- the model --------------------------------------------------------------------------------------
class ModelUnavailable(RuntimeError):
    """The weights cannot be found or loaded (the optional `turn-model` extra is not installed)."""


def weights_path() -> Path:
    """Where the installed pipecat-ai wheel keeps the Smart Turn weights; its code is not imported."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for base in locations:
        path = Path(base) / WEIGHTS
        if path.is_file():
            return path
    raise ModelUnavailable(
        "TURN_END_MODEL=smart_turn needs the Smart Turn weights from the pipecat-ai wheel: "
        "pip install --no-deps 'pipecat-ai==1.14.0' (or the 'turn-model' extra)")


class SmartTurn:
    """The ONNX model: P(the turn is complete) for the caller's 8 kHz audio up to now. Synchronous."""

    def __init__(self, path: Path | None = None) -> None:
        import onnxruntime as ort  # imported here: the model is optional, the rest of the app does not need it

        path = path or weights_path()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one core per inference: the calls' other work keeps the rest
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session: Any = ort.InferenceSession(str(path), sess_options=options,
                                                      providers=["CPUExecutionProvider"])
        except Exception as exc:  # a corrupt or foreign file: say which, at startup
            raise ModelUnavailable(f"cannot load {path}: {exc}") from exc
        self.path = path
        self.p_complete(np.zeros(PHONE_RATE, dtype=np.int16))  # the first run sets up kernels: not in a call

    def p_complete(self, pcm16_8k: I16) -> float:
        out = self._session.run(None, {INPUT_NAME: features(pcm16_8k)})
        return float(np.asarray(out[0]).reshape(-1)[0])


class TurnModel(Protocol):
    """What EndOfTurn asks: SmartTurn here, or the prosodic model (app/call/prosody.py `ProsodyModel`)."""

    def p_complete(self, pcm16_8k: I16) -> float:
        """P(the turn is complete) for the caller's 8 kHz audio up to now (NaN: no verdict)."""
        ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """The model's answer for one pause; `p_complete` None when there is none (busy, failed)."""

    p_complete: float | None
    infer_ms: float  # the model's own time, features included (0 when it did not run)
    wait_ms: float  # queued behind other calls' asks
    cpu_ms: float = 0.0  # CPU the worker thread spent on it (the cost, whatever else the machine was doing)
    error: str | None = None


class EndOfTurn:
    """The process's end-of-turn model: one inference at a time, in its own thread, at most `max_pending`."""

    def __init__(self, model: TurnModel, max_pending: int = 4) -> None:
        self.model = model
        # The model's own operating points (complete_at, incomplete_below), if it brings them (the prosodic
        # model's were picked with its fit); TURN_MODEL_* set in the environment win (TurnTakingConfig).
        self.thresholds: tuple[float, float] | None = getattr(model, "thresholds", None)
        self.max_pending = max_pending
        self._pending = 0  # submitted and not finished (an abandoned ask still holds its place until it ends)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="end-of-turn")
        self.asked = 0
        self.refused = 0

    def _run(self, pcm: I16, queued_at: float) -> tuple[float | None, float, float, float]:
        started, cpu = time.perf_counter(), time.thread_time()
        raw = self.model.p_complete(pcm)
        p = None if raw != raw else raw  # NaN: the model cannot judge this audio (too little voice): no verdict
        return (p, (time.perf_counter() - started) * 1000.0, (started - queued_at) * 1000.0,
                (time.thread_time() - cpu) * 1000.0)

    def _finished(self, _: object) -> None:
        with self._lock:
            self._pending -= 1

    async def ask(self, pcm16_8k: I16) -> Verdict:
        """P(complete) for the audio; never raises but CancelledError: a refusal or failure is a verdict
        without a probability."""
        with self._lock:
            if self._pending >= self.max_pending:
                self.refused += 1
                return Verdict(None, 0.0, 0.0, error="busy")
            self._pending += 1
            self.asked += 1
        job = self._pool.submit(self._run, pcm16_8k, time.perf_counter())
        job.add_done_callback(self._finished)
        try:
            p, infer_ms, wait_ms, cpu_ms = await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # onnxruntime errors: the turn goes on without a verdict
            logger.warning("end-of-turn model failed: %s", type(exc).__name__)
            return Verdict(None, 0.0, 0.0, error=type(exc).__name__)
        return Verdict(p, infer_ms, wait_ms, cpu_ms)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
