"""AgentTurn: one agent reply (LLM stream -> sentences -> TTS -> outbox) as one cancellable unit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

from app.audio import pcm16_to_ulaw
from app.call.outbox import Outbox
from providers.errors import ProviderError
from providers.llm.base import ChatMessage, LlmClient
from providers.tts.base import Synthesis, TtsEngine, WordTiming, char_offset_at

logger = logging.getLogger(__name__)

# A sentence ends at . ! ? (or a newline) followed by whitespace; synthesis starts on the first one.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class Segment:
    """A synthesised sentence placed in the turn: where its text and its audio start, and its word timings.

    The PCM itself is not kept: once encoded and queued, only the alignment is needed to cut the turn.
    """

    char_start: int
    audio_start_ms: float
    text: str
    words: tuple[WordTiming, ...]
    duration_ms: float

    @property
    def audio_end_ms(self) -> float:
        return self.audio_start_ms + self.duration_ms


@dataclass(frozen=True, slots=True)
class Cut:
    char_offset: int
    word_index: int
    heard_text: str


class AgentTurn:
    """Owns the turn's LLM and TTS work. `cancel()` returns only once the LLM stream is closed."""

    def __init__(
        self,
        turn_id: int,
        *,
        outbox: Outbox,
        tts: TtsEngine,
        tts_timeout_s: float,
        llm: LlmClient | None = None,
        messages: list[ChatMessage] | None = None,
        text: str | None = None,
        llm_first_token_timeout_s: float = 5.0,
        fallback: Synthesis | None = None,
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        self.turn_id = turn_id
        self._outbox = outbox
        self._tts = tts
        self._tts_timeout_s = tts_timeout_s
        self._llm = llm
        self._messages = messages or []
        self._fixed_text = text
        self._first_token_timeout_s = llm_first_token_timeout_s
        self._fallback = fallback
        self._on_fallback = on_fallback
        self.segments: list[Segment] = []
        self._starts: list[float] = []
        self.text = ""
        self.llm_text = ""  # everything the LLM produced, synthesised or not
        self.tts_stopped = False
        self.finished = False  # all audio handed to the outbox (or the turn failed)
        self.used_fallback = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"agent-turn-{self.turn_id}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def stop_tts(self) -> None:
        """No more audio from this turn: anything synthesised from now on is discarded."""
        self.tts_stopped = True

    async def cancel(self) -> None:
        """Cancel the turn and wait for its cleanup (the LLM HTTP stream is closed when this returns)."""
        self.stop_tts()
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- the pipeline ----------------------------------------------------------------------------
    async def _run(self) -> None:
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._produce(sentences))
                group.create_task(self._speak(sentences))
        except* ProviderError as errors:
            for exc in errors.exceptions:
                logger.warning("agent turn %s: provider failed: %s", self.turn_id, exc)
            await self._speak_fallback(str(errors.exceptions[0]))
        except* TimeoutError:
            logger.warning("agent turn %s: provider timed out", self.turn_id)
            await self._speak_fallback("timeout")
        finally:
            self.finished = True

    async def _produce(self, sentences: asyncio.Queue[str | None]) -> None:
        if self._fixed_text is not None:
            for sentence in split_sentences(self._fixed_text):
                sentences.put_nowait(sentence)
            sentences.put_nowait(None)
            return
        assert self._llm is not None
        pending = ""
        first = True
        async with contextlib.aclosing(self._llm.stream(self._messages)) as stream:
            while True:
                try:
                    if first:
                        async with asyncio.timeout(self._first_token_timeout_s):
                            piece = await anext(stream)
                        first = False
                    else:
                        piece = await anext(stream)
                except StopAsyncIteration:
                    break
                if self.tts_stopped:
                    return  # a token that arrives after the clear reaches neither TTS nor transcript
                self.llm_text += piece
                pending += piece
                parts = _SENTENCE_END.split(pending)
                for sentence in parts[:-1]:
                    if sentence.strip():
                        sentences.put_nowait(sentence.strip())
                pending = parts[-1]
        if pending.strip():
            sentences.put_nowait(pending.strip())
        sentences.put_nowait(None)

    async def _speak(self, sentences: asyncio.Queue[str | None]) -> None:
        while (sentence := await sentences.get()) is not None:
            async with asyncio.timeout(self._tts_timeout_s):
                synthesis = await self._tts.synthesize(sentence)
            if self.tts_stopped:
                return
            self._add_segment(synthesis)

    def _add_segment(self, synthesis: Synthesis) -> None:
        if synthesis.pcm.size == 0:
            return
        if self.text:
            self.text += " "
        start_ms = self.segments[-1].audio_end_ms if self.segments else 0.0
        self.segments.append(
            Segment(len(self.text), start_ms, synthesis.text, synthesis.words, synthesis.duration_ms)
        )
        self._starts.append(start_ms)
        self.text += synthesis.text
        self._outbox.enqueue(self.turn_id, pcm16_to_ulaw(synthesis.pcm))

    async def _speak_fallback(self, reason: str) -> None:
        if self.tts_stopped:
            return
        self.used_fallback = True
        if self._on_fallback is not None:
            self._on_fallback(reason)
        if self._fallback is not None:
            self._add_segment(self._fallback)

    # -- truncation ------------------------------------------------------------------------------
    @property
    def audio_ms(self) -> float:
        return self.segments[-1].audio_end_ms if self.segments else 0.0

    def cut_at(self, audio_ms: float) -> Cut:
        """The text the caller heard when playback stopped `audio_ms` into the turn."""
        if not self.segments or audio_ms <= 0:
            return Cut(0, 0, "")
        i = bisect_right(self._starts, audio_ms) - 1
        seg = self.segments[max(i, 0)]
        within = audio_ms - seg.audio_start_ms
        local = char_offset_at(seg.words, len(seg.text), within, seg.duration_ms)
        offset = seg.char_start + local
        if i == len(self.segments) - 1 and within >= seg.duration_ms:
            offset = len(self.text)
        heard = self.text[:offset]
        # The index of the word being spoken at the cut: the last word that started before it.
        return Cut(offset, max(0, len(_WORD.findall(heard)) - 1), heard)


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
