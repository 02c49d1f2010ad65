"""The barge-in test corpus (real 8 kHz recordings) and synthetic line noise, for tests and the evaluator."""

from __future__ import annotations

import csv
import os
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from app.audio import pcm16_to_ulaw, ulaw_to_pcm16
from app.audio import scale_to_dbfs as _scale_to_dbfs
from app.audio import white_noise as white_noise  # line hiss: re-exported, the corpus tools import it from here

SAMPLE_RATE = 8000
I16 = npt.NDArray[np.int16]

# The five categories a phone caller lives in for minutes at a time: a stop on any of them would cut the
# agent off over and over, so the evaluator scores them on their own.
STEADY_CATEGORIES = ("rain", "wind", "engine", "vacuum_cleaner", "train")


def corpus_root() -> Path:
    """BARGEIN_CORPUS if set, else the shared corpus next to the repository (or the working directory)."""
    env = os.environ.get("BARGEIN_CORPUS")
    if env:
        return Path(env)
    # The package may be installed (site-packages) rather than run from the checkout: try both places.
    candidates = [Path(__file__).resolve().parents[2].parent, Path.cwd().resolve().parent]
    for base in candidates:
        root = base / "shared" / "corpus"
        if (root / "manifest.csv").exists():
            return root
    return candidates[0] / "shared" / "corpus"


@dataclass(frozen=True)
class Clip:
    """One manifest row."""

    path: str
    kind: Literal["speech", "noise"]
    category: str
    duration_s: float
    speech_onset_s: float | None
    source: str

    @property
    def name(self) -> str:
        return Path(self.path).stem


def dev_overlap(root: Path) -> frozenset[str]:
    """The pool's clips that are, or share a recording with, a clip of the report corpus (its dev_overlap.csv):
    left out of anything fitted or tuned. Empty for a corpus without the file (the report set itself)."""
    path = root / "dev_overlap.csv"
    if not path.exists():
        return frozenset()
    with open(path, newline="", encoding="utf-8") as f:
        return frozenset(r["path"] for r in csv.DictReader(f))


def read_manifest(root: Path | None = None) -> list[Clip]:
    root = root or corpus_root()
    clips: list[Clip] = []
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            kind = row["kind"]
            if kind not in ("speech", "noise"):
                continue  # 'backchannel' is reserved in the manifest but has no rows yet
            onset = row["speech_onset_s"].strip()
            clips.append(
                Clip(
                    path=row["path"],
                    kind="speech" if kind == "speech" else "noise",
                    category=row["category"],
                    duration_s=float(row["duration_s"]),
                    speech_onset_s=float(onset) if onset else None,
                    source=row["source"],
                )
            )
    return clips


def load_clip(clip: Clip | str, root: Path | None = None) -> I16:
    """The clip as 8 kHz mono int16 samples."""
    root = root or corpus_root()
    rel = clip.path if isinstance(clip, Clip) else clip
    with wave.open(str(root / rel), "rb") as w:
        if w.getframerate() != SAMPLE_RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{rel}: expected 8 kHz mono 16-bit PCM")
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def as_received(pcm: I16) -> I16:
    """The samples as the server sees them after the caller leg's G.711 mu-law."""
    return ulaw_to_pcm16(pcm16_to_ulaw(pcm))


# --- synthetic line noise ------------------------------------------------------------------------------


def pink_noise(seconds: float, level_dbfs: float, seed: int = 0) -> I16:
    """1/f hiss (spectrally shaped white noise) at an RMS level in dBFS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    freqs[0] = freqs[1]
    return _scale_to_dbfs(np.fft.irfft(spectrum / np.sqrt(freqs), n), level_dbfs)


def mains_hum(
    seconds: float, level_dbfs: float, mains_hz: float = 50.0, harmonics: int = 8, seed: int = 0
) -> I16:
    """Mains hum: the fundamental and its harmonics (odd ones strongest, as from a rectifier/transformer)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = np.zeros_like(t)
    for k in range(1, harmonics + 1):
        amp = (1.0 if k % 2 else 0.4) / k
        x += amp * np.sin(2 * np.pi * mains_hz * k * t + rng.uniform(0, 2 * np.pi))
    return _scale_to_dbfs(x, level_dbfs)


def telephone_band(pcm: I16, low_hz: float = 300.0, high_hz: float = 3400.0) -> I16:
    """A telephone channel's band limit: 2nd-order high-pass and 4th-order low-pass magnitudes, zero phase.

    The corpus was resampled from wideband sources and never band-limited; real phone legs cut the low end
    (which carries most of a voice's pitch fundamental) and Silero is less sure of speech without it.
    """
    x = pcm.astype(np.float64)
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    freqs[0] = 1e-3
    gain = 1 / np.sqrt(1 + (low_hz / freqs) ** 4) / np.sqrt(1 + (freqs / high_hz) ** 8)
    y = np.fft.irfft(np.fft.rfft(x) * gain, len(x))
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def mix_at_snr(speech: I16, noise: I16, snr_db: float, reference: I16 | None = None) -> I16:
    """Speech plus noise (looped to length), the noise snr_db under the active level of `reference`
    (default: the speech itself; pass the bare clip when `speech` is padded with silence)."""
    s = speech.astype(np.float64)
    n = np.resize(noise.astype(np.float64), len(s))
    ref = s if reference is None else reference.astype(np.float64)
    frames = ref[: len(ref) // 160 * 160].reshape(-1, 160)
    energy = (frames**2).mean(axis=1)
    # active level: the louder half of the 20 ms frames, so pauses do not make the noise quieter
    active = float(np.sqrt(energy[energy >= np.median(energy)].mean())) if len(energy) else 0.0
    noise_rms = float(np.sqrt((n**2).mean())) or 1.0
    y = s + n * (active / noise_rms) * 10 ** (-snr_db / 20)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)
