"""The TTS interface: text in, audio plus a text-to-audio alignment out.

The alignment is what lets the playback ledger say which characters the caller heard before a barge-in:
the ledger knows how many ms of a synthesis were played, and `char_offset_at` turns that into a prefix of
the text.

A word's audio can end well before the next word starts: a sentence's last word is followed by a pause. A word
whose audio has ended counts as heard in full, however far into the pause the cut lands; so each word also
carries where its sound ends (`WordTiming.audio_end_ms`). An engine may give it; otherwise `Synthesis` finds it
in the audio: the last voiced 10 ms frame before a trailing silence of at least `_MIN_PAUSE_MS` (a shorter
gap is a stop consonant's closure, not a pause).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from math import floor
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from providers.mulaw import pcm16_to_ulaw

# Guards the floor() in char_offset_at against 0.99999.. when a time produced by audio_ms_at is mapped back.
_EPS = 1e-6
_FRAME_MS = 10
_MIN_PAUSE_MS = 60.0  # trailing silence that ends a word before the next one starts
_VOICED_FLOOR = 20.0  # frame RMS (int16 units, about -64 dBFS) below which a frame is silent...
_VOICED_RELATIVE = 0.005  # ...or below this fraction of the loudest frame's RMS


@dataclass(frozen=True, slots=True)
class WordTiming:
    """Where a word sits in the synthesised text (0-based, end exclusive) and when it starts in the audio."""

    char_start: int
    char_end: int
    audio_ms: float
    audio_end_ms: float | None = None  # where its sound ends, if before the next word starts (a pause follows)


@dataclass(frozen=True, eq=False, slots=True)
class Synthesis:
    """One synthesised text: int16 mono audio at `sample_rate`, and word timings in text and audio order."""

    text: str
    pcm: npt.NDArray[np.int16]
    sample_rate: int
    words: tuple[WordTiming, ...]
    # The audio as the providers carry it (8-bit mu-law), made once here: a line every call speaks (the
    # greeting, the fallback, from the TTS cache) is then one buffer shared by all of them, not a copy a call.
    ulaw: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Frozen: the word ends found in the audio are filled in once, here.
        object.__setattr__(self, "words", word_ends(self.words, self.pcm, self.sample_rate))
        object.__setattr__(self, "ulaw", pcm16_to_ulaw(self.pcm))

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


@runtime_checkable
class PacedTts(Protocol):
    """An engine that can speak slower or faster than its configured rate (a clarification is said slower)."""

    def paced(self, factor: float) -> TtsEngine:
        """A handle on the same engine at `factor` x its speaking rate (0.8: a fifth slower); its word timings
        are of the paced audio, so the heard position stays exact. The handle lives as long as this one."""
        ...


def at_pace(engine: TtsEngine, factor: float) -> TtsEngine:
    """`engine` at `factor` x its speaking rate where it can change it; otherwise `engine` itself."""
    if abs(factor - 1.0) < 1e-9 or not isinstance(engine, PacedTts):
        return engine
    return engine.paced(factor)


def word_ends(
    words: Sequence[WordTiming], pcm: npt.NDArray[np.int16], sample_rate: int
) -> tuple[WordTiming, ...]:
    """`words` with `audio_end_ms` set where the audio shows a pause after the word (see the module docstring).

    Words that already have an end are kept as they are; a word with no voiced frame at all gets none.
    """
    words = tuple(words)
    frame = max(1, sample_rate * _FRAME_MS // 1000)
    n = int(pcm.shape[0]) // frame
    if n == 0 or all(w.audio_end_ms is not None for w in words):
        return words
    samples = pcm[: n * frame].astype(np.float64).reshape(n, frame)
    rms = np.sqrt(np.mean(samples * samples, axis=1))
    voiced = rms > max(_VOICED_FLOOR, _VOICED_RELATIVE * float(rms.max()))
    total_ms = int(pcm.shape[0]) * 1000.0 / sample_rate
    out: list[WordTiming] = []
    for k, word in enumerate(words):
        if word.audio_end_ms is not None:
            out.append(word)
            continue
        span_end = words[k + 1].audio_ms if k + 1 < len(words) else total_ms
        first = max(0, int(word.audio_ms // _FRAME_MS))
        last = min(n, int(span_end // _FRAME_MS))
        hits = np.flatnonzero(voiced[first:last])
        if hits.size == 0:
            out.append(word)
            continue
        end_ms = (first + int(hits[-1]) + 1) * float(_FRAME_MS)
        out.append(replace(word, audio_end_ms=end_ms) if span_end - end_ms >= _MIN_PAUSE_MS else word)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Anchors:
    times: list[float]  # each word's start, then the end of the audio
    chars: list[int]  # each word's first character, then the end of the text
    voice_ends: list[float]  # per word: where its sound ends (the next anchor's time if it runs on)
    char_ends: list[int]  # per word: the characters its sound covers (the next anchor's if it runs on)


def _anchors(words: Sequence[WordTiming], text_len: int, total_ms: float) -> _Anchors:
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
    # A word whose sound ends before the next anchor: its characters spread over its sound only, and the rest
    # of the segment (punctuation, space) counts as heard once the sound has ended.
    voice_ends: list[float] = []
    char_ends: list[int] = []
    for i, word in enumerate(words):
        end = word.audio_end_ms
        if end is not None and times[i] < end < times[i + 1] and chars[i] < word.char_end <= chars[i + 1]:
            voice_ends.append(end)
            char_ends.append(word.char_end)
        else:
            voice_ends.append(times[i + 1])
            char_ends.append(chars[i + 1])
    return _Anchors(times, chars, voice_ends, char_ends)


def char_offset_at(words: Sequence[WordTiming], text_len: int, audio_ms: float, total_ms: float) -> int:
    """Map a playback position to the number of characters heard, `text[:result]`.

    Inside a word the position is interpolated linearly between that word's start and the next word's start
    (the last word runs to the end of the audio and the text), so a cut can land mid-word; a character counts
    once its whole share of time has played. A word with `audio_end_ms` is interpolated over its sound only:
    once that has played, the word and what follows it up to the next word count as heard, so a cut in the
    pause after a word never clips it. Before the first word the result is 0; at or past the end of the
    audio it is `text_len`. Non-decreasing in `audio_ms`.
    """
    a = _anchors(words, text_len, total_ms)
    times, chars = a.times, a.chars
    if audio_ms >= times[-1]:
        return text_len
    i = bisect_right(times, audio_ms) - 1
    if i < 0:
        return 0
    if audio_ms >= a.voice_ends[i]:
        return chars[i + 1]
    # times[i] <= audio_ms < voice_ends[i] <= times[i + 1] here, so the span is never zero.
    fraction = (audio_ms - times[i]) / (a.voice_ends[i] - times[i])
    return min(chars[i] + floor(fraction * (a.char_ends[i] - chars[i]) + _EPS), a.char_ends[i])


def audio_ms_at(words: Sequence[WordTiming], char_offset: int, text_len: int, total_ms: float) -> float:
    """Inverse of `char_offset_at`: the earliest `audio_ms` at which `char_offset` characters are heard.

    0 for `char_offset <= 0`, the end of the audio for offsets past the text. Non-decreasing in `char_offset`.
    """
    a = _anchors(words, text_len, total_ms)
    times, chars = a.times, a.chars
    if char_offset <= 0:
        return 0.0
    if char_offset > chars[-1]:
        return times[-1]
    # First anchor whose char position reaches the offset; the offset lies in the segment ending there.
    j = next(k for k, c in enumerate(chars) if c >= char_offset)
    if j == 0:
        return times[0]
    i = j - 1
    if char_offset > a.char_ends[i]:
        return a.voice_ends[i]  # past the word's sound: heard once the sound has ended
    span = a.char_ends[i] - chars[i]
    return times[i] + (char_offset - chars[i]) / span * (a.voice_ends[i] - times[i])


def word_spans(text: str) -> list[tuple[int, int, int]]:
    """(start, end without trailing punctuation, end of the token) of each whitespace-separated token: the words
    an engine's alignment is read into, for engines that time characters or nothing at all."""
    spans: list[tuple[int, int, int]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        while i < n and not text[i].isspace():
            i += 1
        end = i
        while end - 1 > start and not text[end - 1].isalnum():
            end -= 1
        spans.append((start, end, i))
    return spans
