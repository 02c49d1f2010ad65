"""What the caller said: one call's ear on the recognizer.

Theory of operation
-------------------
The session knows when the caller's speech started (the detector's onset) and when a turn or a short
utterance over the agent ended; `Hearing` turns such a stretch of call time into words. It keeps the caller's
audio (`CallerAudio`), cuts out the stretch with a pre-roll before the onset (`STT_PREROLL_MS`: the detector
fires after the first syllables, and "wait" is one syllable), and hands it to the recognizer, which runs off
the event loop (providers/stt/). Every failure is an answer, not an exception: the turn goes on without words
(the LLM is told the caller was not understood), the call is untouched.

The embedded recognizer (Whisper) takes a whole stretch at a time and costs about the same whatever its length,
so it is asked three times per interruption at most: once for a short utterance the agent resumed over (its words
may still stop the agent: "stop" sounds like "okay"), once at the first pause of a turn the interruption opened
(without words the agent goes on then: app/call/going_on.py, BARGEIN_GO_ON_AT_PAUSE_MS), and once for the
caller's whole turn when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from app.call.caller_audio import CallerAudio
from providers.errors import ProviderError
from providers.stt.base import SttEngine

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Heard:
    """The words of a stretch of the caller's audio; `error` says why there are none when it failed."""

    text: str
    audio_ms: float
    stt_ms: float  # from the request to the words (queue wait included)
    error: str | None = None
    # The recognizer's confidence in the last word (Whisper: its probability, the punctuation after it
    # included); None when the engine gives no words. Low on a stretch cut mid-sentence (turn_taking.py).
    last_confidence: float | None = None


class Hearing:
    """One call's recognizer front: the caller's audio kept, stretches of it transcribed."""

    def __init__(self, stt: SttEngine, now: Callable[[], float], preroll_s: float, keep_s: float,
                 timeout_s: float) -> None:
        self.stt = stt
        self._now = now  # the call's clock
        self.preroll_s = preroll_s
        self.timeout_s = timeout_s
        self.audio = CallerAudio(keep_s)

    def push(self, ulaw: bytes, at: float) -> None:
        self.audio.push(ulaw, at)

    async def hear(self, start: float, end: float) -> Heard:
        """The words the caller said from `start` (the detector's onset; the pre-roll is added here) to `end`."""
        ulaw = self.audio.between(start - self.preroll_s, end)
        audio_ms = len(ulaw) / 8.0
        t0 = self._now()
        if not ulaw:
            return Heard("", 0.0, 0.0, "no audio")
        try:
            final = await asyncio.wait_for(self.stt.transcribe(ulaw, "mulaw"), self.timeout_s)
        except (ProviderError, TimeoutError, OSError) as exc:
            stt_ms = (self._now() - t0) * 1000.0
            reason = "timeout" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            logger.warning("speech recognition failed after %.0f ms (%s): the turn goes on without words",
                           stt_ms, reason)
            return Heard("", audio_ms, stt_ms, reason)
        last = final.words[-1].confidence if final.words else None
        return Heard(final.text.strip(), audio_ms, (self._now() - t0) * 1000.0, None, last)
