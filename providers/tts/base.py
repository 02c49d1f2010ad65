"""The TTS interface: text in, audio plus a text-to-audio alignment out.

The alignment is what lets the playback ledger say which characters the caller heard before a barge-in:
the ledger knows how many ms of a synthesis were played, and `char_offset_at` turns that into a prefix of
the text.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from math import floor
from typing import Protocol

import numpy as np
import numpy.typing as npt

# Guards the floor() in char_offset_at against 0.99999.. when a time produced by audio_ms_at is mapped back.
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class WordTiming:
    """Where a word sits in the synthesised text (0-based, end exclusive) and when it starts in the audio."""

    char_start: int
    char_end: int
    audio_ms: float


@dataclass(frozen=True, eq=False, slots=True)
class Synthesis:
    """One synthesised text: int16 mono audio at `sample_rate`, and word timings in text and audio order."""

    text: str
    pcm: npt.NDArray[np.int16]
    sample_rate: int
    words: tuple[WordTiming, ...]

    @property
    def duration_ms(self) -> float:
        """Length of the audio in milliseconds."""
        return int(self.pcm.shape[0]) * 1000.0 / self.sample_rate

    def char_offset_at(self, audio_ms: float) -> int:
        """How many characters of `text` had been heard once `audio_ms` of the audio played."""
        return char_offset_at(self.words, len(self.text), audio_ms, self.duration_ms)

    def audio_ms_at(self, char_offset: int) -> float:
        """The earliest playback position at which `text[:char_offset]` has been heard."""
        return audio_ms_at(self.words, char_offset, len(self.text), self.duration_ms)


class TtsEngine(Protocol):
    """A text-to-speech engine; implementations map their failures to ProviderError."""

    async def synthesize(self, text: str) -> Synthesis:
        """Synthesise `text` whole; cancelling the awaiting task discards the result."""
        ...

    async def aclose(self) -> None:
        """Release what this handle holds."""
        ...


def _anchors(words: Sequence[WordTiming], text_len: int, total_ms: float) -> tuple[list[float], list[int]]:
    # Piecewise-linear map through each word start, ending at (end of audio, end of text). Times are made
    # non-decreasing so a slightly late last word (or a short total) cannot make the map run backwards.
    times: list[float] = []
    chars: list[int] = []
    for word in words:
        times.append(max(word.audio_ms, times[-1]) if times else word.audio_ms)
        chars.append(max(word.char_start, chars[-1]) if chars else word.char_start)
    last_time = times[-1] if times else 0.0
    times.append(max(total_ms, last_time))
    chars.append(max(text_len, chars[-1]) if chars else text_len)
    return times, chars


def char_offset_at(words: Sequence[WordTiming], text_len: int, audio_ms: float, total_ms: float) -> int:
    """Map a playback position to the number of characters heard, `text[:result]`.

    Inside a word the position is interpolated linearly between that word's start and the next word's start
    (the last word runs to the end of the audio and the text), so a cut can land mid-word; a character counts
    once its whole share of time has played. Before the first word the result is 0; at or past the end of the
    audio it is `text_len`. Non-decreasing in `audio_ms`.
    """
    times, chars = _anchors(words, text_len, total_ms)
    if audio_ms >= times[-1]:
        return text_len
    i = bisect_right(times, audio_ms) - 1
    if i < 0:
        return 0
    # times[i] <= audio_ms < times[i + 1] here, so the span is never zero.
    fraction = (audio_ms - times[i]) / (times[i + 1] - times[i])
    return min(chars[i] + floor(fraction * (chars[i + 1] - chars[i]) + _EPS), chars[i + 1])


def audio_ms_at(words: Sequence[WordTiming], char_offset: int, text_len: int, total_ms: float) -> float:
    """Inverse of `char_offset_at`: the earliest `audio_ms` at which `char_offset` characters are heard.

    0 for `char_offset <= 0`, the end of the audio for offsets past the text. Non-decreasing in `char_offset`.
    """
    times, chars = _anchors(words, text_len, total_ms)
    if char_offset <= 0:
        return 0.0
    if char_offset > chars[-1]:
        return times[-1]
    # First anchor whose char position reaches the offset; the offset lies in the segment ending there.
    j = next(k for k, c in enumerate(chars) if c >= char_offset)
    if j == 0:
        return times[0]
    span = chars[j] - chars[j - 1]
    return times[j - 1] + (char_offset - chars[j - 1]) / span * (times[j] - times[j - 1])
