"""The speech-recognition interface: the caller's audio in, typed partial and final transcripts out.

Audio is the telephone leg as it arrives: 8 kHz mono, either G.711 mu-law (one byte per sample, the carriers'
wire format; `encoding="mulaw"`) or 16-bit little-endian signed PCM (`encoding="pcm16"`), in frames of any
length (20 ms from Twilio and Plivo). Each frame is fed with `at_ms`, the call-timeline time of its first
sample; every time in a result is on that same timeline, so a word's `start_ms` can be set beside a VAD or
barge-in event without conversion. A session treats the frames it is fed as contiguous audio starting at the
first frame's `at_ms` (a gap in `at_ms` is not silence the engine hears).

A session (`SttSession`) is one stream: for the embedded engine, one caller turn (open when the turn starts,
`finish()` when it ends); for a hosted streaming engine, as long as the caller wants (one per call is fine).
`results()` yields, in order:

- `Partial`: a guess at the words so far, which later results may revise;
- `Final`: the settled words of a stretch of audio, with per-word times and confidence where the engine
  gives them; `speech_final` says the engine also saw the speaker pause there (an end of utterance);
- `UtteranceEnd`: a hosted engine's word-gap end-of-utterance signal (Deepgram `utterance_end_ms`);
- `SttError`: the session failed (socket gone, engine error, busy); it is always the last result.

The iterator ends after `finish()` once the engine has delivered everything, after an `SttError`, or at
`aclose()`. It never hangs on a dead peer: implementations bound every wait.

`SttEngine.transcribe(audio)` is the one-shot form (a whole clip in, one `Final` out) that the embedded
engine implements directly; it raises `ProviderError` instead of returning an `SttError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from providers.mulaw import Pcm16, ulaw_to_pcm16

SAMPLE_RATE = 8000  # every engine here is fed the telephone leg's rate
AudioEncoding = Literal["mulaw", "pcm16"]


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word: its text as the engine wrote it (punctuation attached) and where it was said."""

    text: str
    start_ms: float
    end_ms: float
    confidence: float  # 0-1; the engine's own measure (Whisper: word probability; Deepgram: confidence)


@dataclass(frozen=True, slots=True)
class Partial:
    """An interim guess at the words of the audio from `start_ms` to `end_ms`; later results may change it."""

    text: str
    start_ms: float
    end_ms: float


@dataclass(frozen=True, slots=True)
class Final:
    """The settled transcript of the audio from `start_ms` to `end_ms`.

    `speech_final`: the engine saw the end of an utterance here (a pause), not just a segment boundary.
    """

    text: str
    words: tuple[Word, ...]
    start_ms: float
    end_ms: float
    speech_final: bool


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    """No word for a while after `last_word_end_ms` (Deepgram's gap-based end of utterance)."""

    last_word_end_ms: float


@dataclass(frozen=True, slots=True)
class SttError:
    """The session failed; no result follows. `retryable`: a new session may work (network, busy)."""

    message: str
    retryable: bool


SttResult = Partial | Final | UtteranceEnd | SttError


class SttSession(Protocol):
    """One recognition stream (see the module docstring)."""

    @property
    def encoding(self) -> AudioEncoding:
        """How the bytes given to `feed` are encoded (8 kHz mono either way)."""
        ...

    def feed(self, audio: bytes, at_ms: float) -> None:
        """Queue a frame of audio whose first sample is at `at_ms`; never blocks, never raises for I/O.

        Audio fed after `finish()` or after the session failed is dropped.
        """
        ...

    def results(self) -> AsyncIterator[SttResult]:
        """The results in order; ends after the last one (see the module docstring). Iterate it once."""
        ...

    async def finish(self) -> None:
        """No more audio: the engine settles what it heard; `results()` ends after the last `Final`."""
        ...

    async def aclose(self) -> None:
        """Drop the session now (a barge-in the caller withdrew, a call that ended); idempotent."""
        ...


class SttEngine(Protocol):
    """A speech recogniser: one handle per app, sessions per stream; failures map to ProviderError."""

    async def open(self, encoding: AudioEncoding = "mulaw") -> SttSession:
        """Start a session; returns at once (a hosted engine connects in the background)."""
        ...

    async def transcribe(self, audio: bytes, encoding: AudioEncoding = "mulaw", at_ms: float = 0.0) -> Final:
        """Recognise a whole clip; `speech_final` is True. Raises ProviderError on failure."""
        ...

    async def aclose(self) -> None:
        """Release what the engine holds (worker threads, model)."""
        ...


def to_pcm16(audio: bytes, encoding: AudioEncoding) -> Pcm16:
    """Decode a frame to int16 samples (8 kHz)."""
    if encoding == "mulaw":
        return ulaw_to_pcm16(audio)
    if len(audio) % 2:
        raise ValueError("pcm16 audio must be a whole number of 2-byte samples")
    return np.frombuffer(audio, dtype="<i2").astype(np.int16)


def bytes_per_ms(encoding: AudioEncoding) -> float:
    """How many bytes one millisecond of 8 kHz audio takes in `encoding`."""
    return SAMPLE_RATE / 1000 * (1 if encoding == "mulaw" else 2)
