"""AgentTurn: one agent reply (LLM stream -> sentences -> TTS -> outbox) as one cancellable unit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from bisect import bisect_right
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from app.call.events import (
    AudioQueued,
    CallEvents,
    LlmClosed,
    LlmOpened,
    LlmToken,
    TtsFinished,
    TtsStarted,
)
from app.call.outbox import Outbox
from app.call.tools import LedgerEntry, ToolRunner, exchange
from app.clock import Clock, MonotonicClock
from providers.errors import ProviderError
from providers.llm.base import Abortable, ChatMessage, LlmClient, LlmEvent, ToolCall
from providers.tts.base import Synthesis, TtsEngine, WordTiming, char_offset_at

logger = logging.getLogger(__name__)

# A sentence ends at . ! ? (or a newline) followed by whitespace; synthesis starts on the first one.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"\S+")
_SPACE = re.compile(r"\s")
# Where a clause ends inside a sentence: the first piece of a reply may stop here (see SentenceSplitter).
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")

# The longest sentence handed to TTS; a longer run with no sentence end is cut. A sentence is synthesised only
# once it is complete, and espeak-ng's time grows faster than the text (measured here: 200 chars 13 ms, 350
# chars 26 ms, 700 chars 62 ms, 1,400 chars 188 ms, 2,800 chars 1.4 s, which is past TTS_TIMEOUT_S's reach),
# so a run-on reply would hold back the first audio for as long as the LLM takes to stream it, then synthesise
# slowly or time out. 300 characters is about 15 s of speech (more than any sentence a phone agent should
# say) and about 20 ms of synthesis; real sentences stay well under it.
MAX_SENTENCE_CHARS = 300

# A piece that is already buffered comes out of the LLM stream without the event loop running, so a server
# that floods has a whole socket read (64 KB, some 350 SSE events through h11, httpx and json) parsed and split
# in one stretch: 7-8 ms of CPU on this VM, measured. Letting the loop run every 32 pieces brings the longest
# stretch to 1-1.5 ms; a model that streams at speaking pace waits on the socket for every piece anyway.
_PIECES_PER_YIELD = 32

# LLM requests one turn may make for tool results: the model asks for tools, gets their results, answers (or
# asks again). Past this the turn answers with what it has: a model looping on tools must not hold the caller.
MAX_TOOL_ROUNDS = 3


class SentenceSplitter:
    """Streamed text in, sentences out, in time linear in the text.

    Sentences end where `_SENTENCE_END` matches, as splitting the whole text at once would put them (leading
    and trailing whitespace stripped, empty ones dropped). The pending text never holds a sentence end, and
    the pattern looks back one character only, so each `feed` scans just the text it brings, with the one
    character before it as look-behind. A run of more than `max_chars` with no sentence end is cut at its last
    whitespace within the bound, or at the bound itself when it has none (a word split in two: the turn then
    joins the halves with a space, as it joins any two sentences). The pending text therefore never holds more
    than `max_chars` characters, and a feed costs the length of its piece plus at most that.
    """

    def __init__(self, max_chars: int = MAX_SENTENCE_CHARS, first_clause_chars: int = 0) -> None:
        if max_chars < 1:
            raise ValueError("max_chars must be at least 1")
        self.max_chars = max_chars
        # The reply's first piece may end at a clause (a comma, semicolon or colon) once it holds this many
        # characters: synthesis starts on "We are open from nine to five on weekdays," instead of waiting for
        # the sentence's end, so a slow LLM does not leave the caller in silence. 0: sentences only.
        self.first_clause_chars = first_clause_chars
        self._first = first_clause_chars > 0
        self._pending = ""

    def feed(self, piece: str) -> list[str]:
        """The sentences completed by `piece`, in order."""
        text = self._pending + piece
        out: list[str] = []
        start = 0
        if self._first:
            start = self._first_clause(text, out)
        # `finditer(text, pos)` still sees the character before `pos` for the look-behind.
        for end in _SENTENCE_END.finditer(text, len(self._pending)):
            self._emit(text, start, end.start(), out)
            start = end.end()
        start = self._emit(text, start, len(text), out, keep_tail=True)
        self._pending = text[start:]
        if out:
            self._first = False
        return out

    def _first_clause(self, text: str, out: list[str]) -> int:
        """Before any sentence has gone out: a clause end at or past `first_clause_chars`, ahead of any sentence
        end, ends the first piece. Returns where the rest starts (0 when there is no such clause yet)."""
        sentence = _SENTENCE_END.search(text, max(0, len(self._pending) - 1))
        limit = sentence.start() if sentence is not None else len(text)
        for clause in _CLAUSE_END.finditer(text, 0, limit):
            if clause.start() >= self.first_clause_chars:
                _append(out, text[: clause.start()])
                self._first = False
                return clause.end()
        return 0

    def flush(self) -> str | None:
        """The text after the last sentence end (the reply ended), or None if there is none."""
        tail, self._pending = self._pending.strip(), ""
        return tail or None

    def _emit(self, text: str, start: int, end: int, out: list[str], keep_tail: bool = False) -> int:
        """Append `text[start:end]` to `out` in sentences of at most `max_chars`; return where the rest starts.

        With `keep_tail` the last `max_chars` characters or fewer stay behind: a sentence end may yet follow.
        """
        limit = self.max_chars
        while end - start > limit:
            window = text[start : start + limit + 1]
            space = _SPACE.search(window[::-1])
            if space is None:  # one word longer than the bound: a hard cut
                _append(out, window[:limit])
                start += limit
            else:
                cut = limit - space.start()  # the last whitespace, so the sentence before it is <= limit
                _append(out, window[:cut])
                start += cut + 1
        if keep_tail:
            return start
        _append(out, text[start:end])
        return end


def _append(out: list[str], sentence: str) -> None:
    sentence = sentence.strip()
    if sentence:
        out.append(sentence)


def _without_last_word(text: str) -> str:
    """`text` minus its last word and the whitespace before it ("" if it is one word)."""
    i = len(text)
    while i and not text[i - 1].isspace():
        i -= 1
    return text[:i].rstrip()


# An uninterruptible span in the agent's text: "[[This call is recorded.]]". The markers are never spoken.
SPAN_OPEN, SPAN_CLOSE = "[[", "]]"


@dataclass(frozen=True, slots=True)
class Segment:
    """A synthesised sentence placed in the turn: where its text and its audio start, and its word timings.

    The encoded audio is kept with it until the turn ends: a barge-in that turns out to be a cough or an
    "mm-hmm" resumes the turn by sending the unheard rest again (the provider's buffer can only be cleared).
    """

    char_start: int
    audio_start_ms: float
    text: str
    words: tuple[WordTiming, ...]
    duration_ms: float
    ulaw: bytes = b""

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
        max_reply_chars: int,
        max_queued_audio_ms: float,
        events: CallEvents | None = None,
        clock: Clock | None = None,
        prefix: str | None = None,
        first_clause_chars: int = 0,
        tools: ToolRunner | None = None,
        context: Callable[[], list[ChatMessage]] | None = None,
        holding_text: str = "",
        holding_after_s: float = 1.0,
        settle_tools_s: float = 0.0,
        held_reply: bool = False,
    ) -> None:
        """`max_reply_chars` caps the LLM's reply (not a fixed `text`); `max_queued_audio_ms` caps the audio
        this turn keeps queued in the outbox ahead of playback (synthesis waits for room). `prefix` is a
        sentence said first (the acknowledgement after a long interruption).

        `tools`: the call's tool runner; the model is offered its tools and the turn runs the calls it makes,
        saying `holding_text` (once) when they take longer than `holding_after_s`. `context` builds the
        request's messages instead of `messages`: it is called once the tool calls still in flight when the
        turn starts (a read a barge-in let finish) have settled, `settle_tools_s` at most, so their results
        are in the request. `held_reply`: a reply prepared before the caller's turn is over (app/call/draft.py):
        it streams and synthesises while held, but runs no tool call before its first release (`resume_from`),
        so a reply the caller never gets has done nothing."""
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
        self._max_reply_chars = max_reply_chars
        self._max_queued_audio_ms = max_queued_audio_ms
        self.segments: list[Segment] = []
        self._starts: list[float] = []
        self.text = ""
        # Everything the LLM produced (up to the cap), synthesised or not. Kept as pieces: `+=` on an attribute
        # copies the whole string each time, which made a long reply cost time quadratic in its length.
        self._llm_parts: list[str] = []
        self._llm_chars = 0
        self.tts_stopped = False
        self._llm_stream: AsyncGenerator[LlmEvent, None] | None = None  # the LLM request in progress (abort_llm)
        self.first_token_at: float | None = None  # the LLM's first token (call clock)
        self.finished = False  # all audio handed to the outbox (or the turn failed)
        # Every sentence of the reply was synthesised (the LLM had ended): the turn's text is all it would say.
        self.spoken_all = False
        self.used_fallback = False
        self._task: asyncio.Task[None] | None = None
        self._prefix = prefix
        self._first_clause_chars = first_clause_chars
        # Held: a barge-in paused the turn. Synthesis goes on into `segments`; nothing is queued until
        # `resume_from` (the candidate was not the caller's turn) or `cancel` (it was).
        self.held = False
        self._held_at_ms = 0.0  # the heard position when the turn was held
        self._released = asyncio.Event()  # set when a hold ends
        self._in_span = False  # inside "[[ ... ]]" across sentences
        self.spans: list[tuple[float, float]] = []  # uninterruptible audio ranges (ms into the turn)
        self._events = events if events is not None else CallEvents()
        self._clock = clock if clock is not None else MonotonicClock()
        self._tools = tools
        self._context = context
        self._holding_text = holding_text
        self._holding_after_s = holding_after_s
        self._settle_tools_s = settle_tools_s
        self.holding_said = False  # the holding line went out in this turn
        self.tool_calls: list[LedgerEntry] = []  # the calls this turn asked for, in order
        # Set once the turn may act: at once, or for a held reply when it is first released (spoken).
        self._may_act = asyncio.Event()
        if not held_reply:
            self._may_act.set()

    @property
    def llm_text(self) -> str:
        """Everything the LLM produced so far (never more than `max_reply_chars`)."""
        if len(self._llm_parts) > 1:
            self._llm_parts[:] = ["".join(self._llm_parts)]
        return self._llm_parts[0] if self._llm_parts else ""

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"agent-turn-{self.turn_id}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def stop_tts(self) -> None:
        """No more audio from this turn: anything synthesised from now on is discarded."""
        self.tts_stopped = True

    def abort_llm(self) -> bool:
        """Shut the open LLM connection now, without waiting for the loop (providers/llm/base.py, Abortable):
        True when one was open and is now shut. `cancel()` does it first anyway; the barge-in calls it apart to
        know when the connection closed."""
        stream = self._llm_stream
        return isinstance(stream, Abortable) and stream.abort()

    async def cancel(self) -> None:
        """Cancel the turn and wait for its cleanup (the LLM HTTP stream is closed when this returns)."""
        self.stop_tts()
        self.abort_llm()
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
        if self._prefix:
            sentences.put_nowait(self._prefix)
        if self._fixed_text is not None:
            for sentence in split_sentences(self._fixed_text):
                sentences.put_nowait(sentence)
            sentences.put_nowait(None)
            return
        assert self._llm is not None
        events, clock = self._events, self._clock
        events.emit(LlmOpened(clock.now(), self.turn_id))
        outcome = "cancelled"  # unless the stream ends, is capped, fails or times out below
        try:
            outcome = await self._stream_reply(sentences)
        except TimeoutError:
            outcome = "timeout"
            raise
        except ProviderError:
            outcome = "error"
            raise
        finally:
            events.emit(LlmClosed(clock.now(), self.turn_id, outcome, self.first_token_at))

    async def _stream_reply(self, sentences: asyncio.Queue[str | None]) -> str:
        """Stream the LLM's reply into sentences; returns how it ended: "done", "capped" or "stopped".

        A reply that asks for tools is followed by another request with their results, up to MAX_TOOL_ROUNDS
        times; the sentences of every round are one turn."""
        assert self._llm is not None
        messages = self._messages
        if self._context is not None:
            if self._tools is not None and self._tools.in_flight():
                # A read the last barge-in let run: its result belongs in this request. The wait is a tool's
                # wait like any other, with the holding line if it is a long one.
                if not await self._tools.settle_in_flight(self._holding_after_s):
                    self._say_holding_line(None, sentences)
                    await self._tools.settle_in_flight(self._settle_tools_s)
            messages = self._context()
        splitter = SentenceSplitter(first_clause_chars=self._first_clause_chars)
        outcome = "done"
        for round_no in range(MAX_TOOL_ROUNDS + 1):
            calls: list[ToolCall] = []
            start_chars = self._llm_chars
            outcome = await self._stream_round(messages, splitter, sentences, calls)
            if outcome != "done" or not calls or self._tools is None:
                break
            said = self.llm_text[start_chars:]
            if round_no == MAX_TOOL_ROUNDS:
                logger.warning("agent turn %s: the LLM still asks for tools after %d rounds; answering without",
                               self.turn_id, MAX_TOOL_ROUNDS)
                break
            entries = await self._run_tools(calls, splitter, sentences)
            messages = [*messages, *exchange(entries, said)]
        if outcome == "stopped":
            return outcome
        if (tail := splitter.flush()) is not None:  # None after a cap: _cap_reply took the pending text
            sentences.put_nowait(tail)
        sentences.put_nowait(None)
        return outcome

    async def _stream_round(
        self, messages: list[ChatMessage], splitter: SentenceSplitter, sentences: asyncio.Queue[str | None],
        calls: list[ToolCall],
    ) -> str:
        """One LLM request: its text into sentences, its tool calls into `calls`; "done", "capped" or "stopped"."""
        assert self._llm is not None
        events, clock = self._events, self._clock
        first = True
        pieces = 0
        schemas = self._tools.schemas if self._tools is not None else []
        # Offered only when there are tools: a plain request stays exactly what it was.
        stream = self._llm.stream(messages, schemas) if schemas else self._llm.stream(messages)
        self._llm_stream = stream
        async with contextlib.aclosing(stream) as stream:
            while True:
                pieces += 1
                if pieces % _PIECES_PER_YIELD == 0:
                    await asyncio.sleep(0)
                event: LlmEvent
                try:
                    if first:
                        async with asyncio.timeout(self._first_token_timeout_s):
                            event = await anext(stream)
                        first = False
                        if self.first_token_at is None:
                            self.first_token_at = clock.now()
                    else:
                        event = await anext(stream)
                except StopAsyncIteration:
                    return "done"
                if self.tts_stopped:
                    return "stopped"  # a token that arrives after the clear reaches neither TTS nor transcript
                if isinstance(event, ToolCall):
                    calls.append(event)
                    continue
                piece = event.text
                if events.active:
                    events.emit(LlmToken(clock.now(), self.turn_id, piece))
                room = self._max_reply_chars - self._llm_chars
                if len(piece) > room:
                    self._cap_reply(piece, room, splitter, sentences)
                    return "capped"  # leaving the `async with` closes the HTTP stream, so the LLM stops generating
                self._llm_parts.append(piece)
                self._llm_chars += len(piece)
                for sentence in splitter.feed(piece):
                    sentences.put_nowait(sentence)

    async def _run_tools(
        self, calls: list[ToolCall], splitter: SentenceSplitter, sentences: asyncio.Queue[str | None]
    ) -> list[LedgerEntry]:
        """Run the round's tool calls (each id at most once per call) and wait for their results; the holding
        line goes out, once per turn, if they take longer than `holding_after_s`."""
        assert self._tools is not None
        # A held reply's tool calls wait for the caller's turn to be over; cancelled before it, none ran. The
        # wait is in the gap the caller hears, as a tool's run would be after the turn's end without a draft.
        await self._may_act.wait()
        entries = [self._tools.start(call, self.turn_id) for call in calls]
        self.tool_calls.extend(entries)
        if not await self._tools.wait(entries, self._holding_after_s):
            self._say_holding_line(splitter, sentences)
        await self._tools.wait(entries)
        return entries

    def _say_holding_line(self, splitter: SentenceSplitter | None, sentences: asyncio.Queue[str | None]) -> None:
        """The holding line, once per turn, after what the model said before asking for the tool."""
        if not self._holding_text or self.holding_said:
            return
        self.holding_said = True
        if splitter is not None and (said := splitter.flush()) is not None:
            sentences.put_nowait(said)
        sentences.put_nowait(self._holding_text)

    def _cap_reply(
        self, piece: str, room: int, splitter: SentenceSplitter, sentences: asyncio.Queue[str | None]
    ) -> None:
        """The reply runs past `max_reply_chars`: keep it up to the cap, cut back to a whole word."""
        head = piece[:room]
        self._llm_parts.append(head)
        for sentence in splitter.feed(head):
            sentences.put_nowait(sentence)
        tail = splitter.flush() or ""
        text = self.llm_text
        if text and not text[-1].isspace() and not piece[room].isspace():
            # The cap fell inside a word. Its first part is still in the splitter's pending text (a sentence is
            # only ever cut at whitespace, bar a hard cut of a word longer than MAX_SENTENCE_CHARS), so drop it
            # there and the same characters from the end of llm_text.
            kept = _without_last_word(tail)
            text = text[: len(text) - (len(tail) - len(kept))]
            tail = kept
        self._llm_parts[:] = [text]
        self._llm_chars = len(text)
        if tail:
            sentences.put_nowait(tail)
        logger.warning(
            "agent turn %s: LLM reply cut at %d characters (LLM_MAX_REPLY_CHARS); stream closed",
            self.turn_id, self._max_reply_chars,
        )

    async def _speak(self, sentences: asyncio.Queue[str | None]) -> None:
        events, clock = self._events, self._clock
        while (marked := await sentences.get()) is not None:
            sentence, spans = self._unmark(marked)
            if not sentence:
                continue
            events.emit(TtsStarted(clock.now(), self.turn_id, sentence))
            async with asyncio.timeout(self._tts_timeout_s):
                synthesis = await self._tts.synthesize(sentence)
            events.emit(TtsFinished(clock.now(), self.turn_id, synthesis.duration_ms))
            if self.tts_stopped:
                return
            # Back-pressure: queue this sentence only once it fits under MAX_QUEUED_AUDIO_S (or the queue is empty),
            # and synthesise the next only after that: the outbox holds at most the cap, and one more sentence
            # waits here. A barge-in drops the queue and cancels this task, which ends the wait at once.
            await self._outbox.wait_for_room(synthesis.duration_ms, self._max_queued_audio_ms)
            # Held by a barge-in candidate, the queue is empty: bound what is made meanwhile by the same cap.
            while self.held and self.audio_ms - self._held_at_ms + synthesis.duration_ms > self._max_queued_audio_ms:
                self._released.clear()
                await self._released.wait()
            if self.tts_stopped:
                return
            start_ms = self.audio_ms
            self._add_segment(synthesis)
            for a, b in spans:
                self.spans.append((start_ms + synthesis.audio_ms_at(a), start_ms + synthesis.audio_ms_at(b)))
        self.spoken_all = True

    def _unmark(self, sentence: str) -> tuple[str, list[tuple[int, int]]]:
        """The sentence without span markers, and the character ranges of it that are uninterruptible."""
        if SPAN_OPEN not in sentence and SPAN_CLOSE not in sentence and not self._in_span:
            return sentence, []
        out: list[str] = []
        spans: list[tuple[int, int]] = []
        pos, length, start = 0, 0, 0
        while pos < len(sentence):
            token = SPAN_CLOSE if self._in_span else SPAN_OPEN
            found = sentence.find(token, pos)
            piece = sentence[pos:] if found < 0 else sentence[pos:found]
            out.append(piece)
            length += len(piece)
            if found < 0:
                break
            if self._in_span:
                spans.append((start, length))
            else:
                start = length
            self._in_span = not self._in_span
            pos = found + len(token)
        if self._in_span:
            spans.append((start, length))
        text = "".join(out)
        stripped = text.strip()
        lead = len(text) - len(text.lstrip())
        return stripped, [(max(0, a - lead), max(0, min(len(stripped), b - lead))) for a, b in spans if b > a]

    def in_span(self, audio_ms: float) -> bool:
        """The turn's audio at `audio_ms` is inside an uninterruptible span."""
        return any(a <= audio_ms < b for a, b in self.spans)

    def _add_segment(self, synthesis: Synthesis) -> None:
        if synthesis.pcm.size == 0:
            return
        if self.text:
            self.text += " "
        start_ms = self.segments[-1].audio_end_ms if self.segments else 0.0
        ulaw = synthesis.ulaw  # shared with every other call speaking the same cached line
        self.segments.append(
            Segment(len(self.text), start_ms, synthesis.text, synthesis.words, synthesis.duration_ms, ulaw)
        )
        self._starts.append(start_ms)
        self.text += synthesis.text
        if not self.held:
            self._outbox.enqueue(self.turn_id, ulaw)
        self._events.emit(AudioQueued(self._clock.now(), self.turn_id, synthesis.duration_ms, synthesis.text))

    async def _speak_fallback(self, reason: str) -> None:
        if self.tts_stopped:
            return
        self.used_fallback = True
        if self._on_fallback is not None:
            self._on_fallback(reason)
        if self._fallback is not None:
            self._add_segment(self._fallback)

    # -- pause and resume -------------------------------------------------------------------------
    def hold(self, heard_ms: float) -> None:
        """A barge-in candidate: keep producing, queue nothing (the session dropped what was queued).

        What is made meanwhile stays within the queue's cap past `heard_ms`, the caller's heard position: that
        is what a resume would queue again.
        """
        self.held = True
        self._held_at_ms = heard_ms

    def resume_point(self, heard_ms: float) -> float:
        """Where to resume after the caller heard `heard_ms`: the start of the word being spoken then.

        At most one word back: a word cut in the middle is said again whole; a cut in the pause after a
        word resumes at the next word, so nothing heard in full is repeated.
        """
        if not self.segments or heard_ms <= 0:
            return 0.0
        i = max(0, bisect_right(self._starts, heard_ms) - 1)
        seg = self.segments[i]
        within = heard_ms - seg.audio_start_ms
        if within >= seg.duration_ms:
            return seg.audio_end_ms
        point = 0.0
        for word in seg.words:
            if word.audio_ms > within:
                break
            end = word.audio_end_ms
            # in the pause after a finished word: resume from the next word (or the pause itself)
            point = end if end is not None and end <= within else word.audio_ms
        return seg.audio_start_ms + point

    def resume_from(self, audio_ms: float) -> int:
        """Queue the turn's audio from `audio_ms` (a `resume_point`) on; later sentences queue as usual.

        Returns how many bytes were queued again. The ledger must have been told first (`PlaybackLedger.resume`)
        so the chunks keep their positions in the turn.
        """
        self.held = False
        self._released.set()
        self._may_act.set()
        if self.tts_stopped:
            return 0
        start = int(round(audio_ms * 8))  # mu-law at 8 kHz: 8 bytes per ms
        queued = 0
        for seg in self.segments:
            first = int(round(seg.audio_start_ms * 8))
            last = first + len(seg.ulaw)
            if last <= start:
                continue
            piece = seg.ulaw[max(0, start - first):]
            self._outbox.enqueue(self.turn_id, piece)
            queued += len(piece)
        return queued

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


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """A whole text's sentences, as a turn speaks them."""
    splitter = SentenceSplitter(max_chars)
    sentences = splitter.feed(text)
    if (tail := splitter.flush()) is not None:
        sentences.append(tail)
    return sentences
