"""The short encoder window for Whisper: how many mel frames to encode for a clip, and when not to trust the result.

Theory of operation
-------------------
Whisper was trained on 30 s windows (3000 mel frames of 10 ms; the encoder halves them to 1500 positions) and
faster-whisper pads every clip to that, so a 2 s caller turn costs as much encoder work as a 30 s one. The
CTranslate2 encoder takes fewer frames, and the decoder reads the shorter encoder output fine *if* the speech is
followed by some padding: with the window barely longer than the speech the decoder tends to start the sentence
again after its end (a 5.5 s LibriSpeech clip in a 6 s window came back with its last sentence repeated). So:

- `ShortWindow.frames_for(content)` encodes the clip's frames plus `margin_frames` of padding, never fewer than
  `min_frames`, rounded up to a multiple of `step_frames` (a few sizes rather than one per clip, so runs are
  repeatable and a window's behaviour can be measured); a clip that would need the whole 30 s gets `None`
  (the ordinary full window).
- `ShortWindow.token_budget(content)` bounds the decoder: a caller says at most a few words a second, so a
  transcription that runs into `tokens_per_s` tokens per second of audio (plus `base_tokens`) is a loop, and it
  stops there instead of running to Whisper's 448-token limit (in the pool's full-window transcripts no clip
  came within 14 tokens of that budget).
- `is_suspect(...)` says when the short window's text must not be used and the clip is decoded again in the full
  window: the decoder hit its token budget, its text gzips too well (Whisper's own compression-ratio test), it
  has more words than anyone says in that time (`max_words`: `base_words` + `words_per_s` a second; read speech
  in the pool peaks at 4.9 words/s, and in tiny clips the loops are short: "three, two, three, two, three" for
  a 0.55 s "three"), or a run of words repeats back to back (`repeats_back_to_back`: four or more words twice,
  one to three words three times). Real callers repeat themselves too ("no, no, no"); then the fallback only
  costs the full window's CPU for that turn, it does not change the words.

The figures (margin, minimum, budget) are tuned on the corpus pool only; see providers/stt/whisper.py.
Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

FULL_FRAMES = 3000  # Whisper's 30 s window, in 10 ms mel frames
FRAMES_PER_S = 100
# Whisper's own repetition test (openai/whisper `compression_ratio_threshold`): text that gzips this well loops.
MAX_COMPRESSION_RATIO = 2.4


@dataclass(frozen=True, slots=True)
class ShortWindow:
    """How the short encoder window is sized for a clip, and how long its transcription may be."""

    margin_frames: int = 300
    min_frames: int = 1000
    step_frames: int = 100
    tokens_per_s: float = 8.0
    base_tokens: int = 16
    words_per_s: float = 5.0
    base_words: int = 2
    max_tail_frames: int = 100

    def __post_init__(self) -> None:
        if self.margin_frames < 0 or self.step_frames < 1 or not 0 < self.min_frames <= FULL_FRAMES:
            raise ValueError("margin_frames >= 0, step_frames >= 1, 0 < min_frames <= 3000")

    def frames_for(self, content_frames: int) -> int | None:
        """Mel frames to encode for a clip of `content_frames`; None when only the full window would do."""
        want = max(self.min_frames, content_frames + self.margin_frames)
        frames = math.ceil(want / self.step_frames) * self.step_frames
        return None if frames >= FULL_FRAMES else frames

    def token_budget(self, content_frames: int) -> int:
        """The most tokens (text and timestamps) the decoder may write for a clip this long."""
        return self.base_tokens + math.ceil(self.tokens_per_s * content_frames / FRAMES_PER_S)

    def max_words(self, content_frames: int) -> float:
        """More words than this in a clip this long were not said: the decoder looped or made them up."""
        return self.base_words + self.words_per_s * content_frames / FRAMES_PER_S


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def repeats_back_to_back(text: str) -> bool:
    """A run of words said again straight after itself more often than a caller would (see the module doc)."""
    words = _words(text)
    for n in range(1, len(words) // 2 + 1):
        needed = 3 if n <= 3 else 2
        for start in range(len(words) - n * needed + 1):
            gram = words[start : start + n]
            if all(words[start + k * n : start + (k + 1) * n] == gram for k in range(1, needed)):
                return True
    return False


def is_suspect(text: str, tokens: int, budget: int, compression_ratio: float, max_words: float) -> bool:
    """The short window's transcription is not to be trusted: decode the clip again in the full window."""
    # CTranslate2 stops a beam search at the limit a token or two short of it (seen: 3 tokens for a budget of 5).
    return (
        tokens + 2 >= budget
        or compression_ratio > MAX_COMPRESSION_RATIO
        or len(_words(text)) > max_words
        or repeats_back_to_back(text)
    )
