"""Bounds on what one LLM reply can cost: sentence splitting in linear time, a cap on sentence length, a cap on
the reply, and back-pressure from the outbox so queued audio stays bounded. In-process, with small fakes."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
import pytest

from app.bargein.playback import PlaybackLedger
from app.call.outbox import Outbox
from app.call.turn import MAX_SENTENCE_CHARS, AgentTurn, SentenceSplitter, split_sentences
from app.clock import MonotonicClock
from app.edge.llm_server import tokenize
from providers.llm.base import ChatMessage, LlmEvent, TextDelta
from providers.tts.base import Synthesis, WordTiming

MS_PER_CHAR = 10.0

REPLIES = [
    "Sure, I can help with that. Your order left our warehouse yesterday afternoon and it is on the truck now. "
    "The driver usually arrives between nine and eleven in the morning. If nobody is home, the parcel goes to "
    "the pickup point on Main Street. You can also change the address until tonight. Is there anything else?",
    "Dr. Smith sees patients at 3.30 p.m. on weekdays!  Really?! Yes... it's true.\nHere are the steps:\n\n"
    "1. Open the app\n2. Tap 'Orders'\n3. Choose the parcel",
    'He said "stop." Then he left.   She waited\t\tfor a while... and then   called back? No answer',
    "Trailing space after the end. ",
    "no punctuation at all in this reply",
    "   \n\n  ",
]

# A reply of clauses that never ends a sentence: what a broken or hostile model can stream.
CLAUSE = "and then the parcel went back to the depot because nobody was at home to sign for it, "
RUN_ON = (CLAUSE * (80_000 // len(CLAUSE) + 1))[:80_000].rstrip()


def old_split(text: str) -> list[str]:
    """The splitting the turn did before SentenceSplitter, for a whole text."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def stream(splitter: SentenceSplitter, text: str, size: int) -> list[str]:
    out: list[str] = []
    for i in range(0, len(text), size):
        out += splitter.feed(text[i : i + size])
    if (tail := splitter.flush()) is not None:
        out.append(tail)
    return out


def chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# --- SentenceSplitter ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", REPLIES)
@pytest.mark.parametrize("size", [1, 4, 7, 1_000])
def test_sentences_split_exactly_as_before_on_normal_replies(reply: str, size: int) -> None:
    assert stream(SentenceSplitter(), reply, size) == old_split(reply)
    words: list[str] = []
    splitter = SentenceSplitter()
    for token in tokenize(reply):  # the way the scripted model streams: words with their trailing space
        words += splitter.feed(token)
    assert words + ([t] if (t := splitter.flush()) else []) == old_split(reply)


def test_a_sentence_is_emitted_as_soon_as_its_end_arrives() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Hello there") == []
    assert splitter.feed(".") == []  # "3." may be "3.5": a sentence ends at a full stop *and* whitespace
    assert splitter.feed(" How") == ["Hello there."]
    assert splitter.feed(" are you?\n\nFine") == ["How are you?"]
    assert splitter.flush() == "Fine"
    assert splitter.flush() is None


def test_a_run_on_is_cut_at_its_last_space_before_the_bound() -> None:
    sentences = stream(SentenceSplitter(), RUN_ON, 4)
    assert all(len(s) <= MAX_SENTENCE_CHARS for s in sentences)
    # Every cut took one space out, and nothing else: the sentences joined by a space give the reply back.
    assert " ".join(sentences) == RUN_ON
    longest_word = max(len(w) for w in RUN_ON.split())
    assert all(len(s) >= MAX_SENTENCE_CHARS - longest_word - 1 for s in sentences[:-1])
    assert len(sentences) == pytest.approx(len(RUN_ON) / MAX_SENTENCE_CHARS, rel=0.1)


@pytest.mark.parametrize("size", [1, 4, 13, 299, 301, 100_000])
def test_streamed_and_whole_text_splitting_agree(size: int) -> None:
    text = RUN_ON[:5_000] + ". A real sentence. " + "x" * 700 + " and the rest" + RUN_ON[:2_000]
    assert stream(SentenceSplitter(), text, size) == split_sentences(text)


def test_a_word_longer_than_the_bound_is_hard_cut() -> None:
    text = "a" * 700 + " end"
    assert split_sentences(text) == ["a" * 300, "a" * 300, "a" * 100 + " end"]
    assert split_sentences("b" * 600) == ["b" * 300, "b" * 300]
    assert split_sentences("word " * 3, max_chars=4) == ["word", "word", "word"]


def test_splitting_80_kb_arriving_as_4_char_tokens_takes_linear_time() -> None:
    # Before: the whole pending text was split again for every token, 37 s for this on a busy 2-core VM (17.7 s
    # on a quiet one). Now about 20 ms; the bound leaves room for a slow machine.
    splitter = SentenceSplitter()
    tokens = chunks(RUN_ON, 4)
    t0 = time.perf_counter()
    n = sum(len(splitter.feed(token)) for token in tokens)
    elapsed = time.perf_counter() - t0
    assert n >= len(RUN_ON) // MAX_SENTENCE_CHARS - 1
    assert elapsed < 0.5, f"{elapsed * 1000:.0f} ms"


def test_one_huge_piece_is_split_in_linear_time() -> None:
    t0 = time.perf_counter()
    sentences = split_sentences(RUN_ON * 12)  # ~1 MB arriving as one delta
    assert time.perf_counter() - t0 < 0.5
    assert max(len(s) for s in sentences) <= MAX_SENTENCE_CHARS


# --- the turn: fakes -------------------------------------------------------------------------------------------


class FakeTts:
    """Speaks 10 ms per character, with a word timing at each word start."""

    def __init__(self) -> None:
        self.spoken: list[str] = []

    async def synthesize(self, text: str) -> Synthesis:
        self.spoken.append(text)
        words = tuple(WordTiming(m.start(), m.end(), m.start() * MS_PER_CHAR) for m in re.finditer(r"\S+", text))
        pcm = np.full(int(len(text) * MS_PER_CHAR * 8), 1000, dtype=np.int16)
        return Synthesis(text=text, pcm=pcm, sample_rate=8000, words=words)

    async def aclose(self) -> None:
        pass


class FakeLlm:
    """Streams `text` in pieces of `size` characters and counts what it yielded and whether it was closed."""

    def __init__(self, text: str, size: int, pause_every: int = 64) -> None:
        self.text = text
        self.size = size
        self.pause_every = pause_every
        self.yielded = 0
        self.closed = False

    async def stream(self, messages: list[ChatMessage], tools: Any = ()) -> AsyncGenerator[LlmEvent, None]:
        try:
            for i in range(0, len(self.text), self.size):
                if i // self.size % self.pause_every == 0:
                    await asyncio.sleep(0)  # as a network read would, now and then
                self.yielded += min(self.size, len(self.text) - i)
                yield TextDelta(self.text[i : i + self.size])
        finally:
            self.closed = True

    async def aclose(self) -> None:
        pass


class FakeProtocol:
    """The two outbound messages the outbox writes, as plain strings."""

    name = "fake"

    def media(self, ulaw: bytes) -> str:
        return f"media {len(ulaw)}"

    def mark(self, name: str) -> str:
        return f"mark {name}"


def make_outbox(chunk_ms: int = 160, lead_ms: int = 300) -> tuple[Outbox, list[str]]:
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    protocol: Any = FakeProtocol()
    return Outbox(protocol, send, PlaybackLedger(), MonotonicClock(), chunk_ms, lead_ms), sent


def make_turn(
    llm: FakeLlm, outbox: Outbox, tts: FakeTts | None = None, *, max_reply_chars: int = 4_000,
    max_queued_audio_ms: float = 1e9,
) -> AgentTurn:
    return AgentTurn(
        7, outbox=outbox, tts=tts or FakeTts(), tts_timeout_s=5.0, llm=llm, messages=[],
        max_reply_chars=max_reply_chars, max_queued_audio_ms=max_queued_audio_ms,
    )


async def run_turn(turn: AgentTurn, timeout_s: float = 10.0) -> None:
    turn.start()
    assert turn._task is not None
    await asyncio.wait_for(turn._task, timeout_s)


# --- the reply cap ---------------------------------------------------------------------------------------------


def test_a_1_mb_reply_is_cut_at_the_cap_on_a_word_and_its_stream_closed(caplog: pytest.LogCaptureFixture) -> None:
    sentence = "The driver usually arrives between nine and eleven in the morning. "
    reply = sentence * (1_000_000 // len(sentence) + 1)

    async def main() -> None:
        llm = FakeLlm(reply, 4)
        outbox, _ = make_outbox()
        turn = make_turn(llm, outbox)
        with caplog.at_level(logging.WARNING, logger="app.call.turn"):
            await run_turn(turn)
        assert llm.closed and llm.yielded <= 4_000 + 4  # it stopped reading at the cap
        text = turn.llm_text
        assert 4_000 - 20 < len(text) <= 4_000
        assert reply.startswith(text) and reply[len(text)].isspace()  # whole words only
        assert turn.text == text.strip()  # what was synthesised: every word kept, nothing past the cap
        assert not turn.used_fallback
        assert outbox.queued_ms == pytest.approx(turn.audio_ms)  # no pacer here: all of it is still queued
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "LLM_MAX_REPLY_CHARS" in warnings[0].getMessage()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("reply", "size", "cap", "kept"),
    [
        ("alpha beta gamma delta", 3, 13, "alpha beta"),  # the cap falls inside "gamma": it is dropped whole
        ("alpha beta gamma delta", 5, 15, "alpha beta"),  # ... at a piece boundary, inside a word
        ("alpha beta gamma delta", 4, 16, "alpha beta gamma"),  # the cap falls on the space after a word
        ("alpha beta gamma delta", 50, 11, "alpha beta"),  # one piece carries the whole reply
        ("alpha beta. Gamma delta", 2, 14, "alpha beta."),
    ],
)
def test_the_cap_keeps_whole_words(reply: str, size: int, cap: int, kept: str) -> None:
    async def main() -> None:
        outbox, _ = make_outbox()
        tts = FakeTts()
        turn = make_turn(FakeLlm(reply, size), outbox, tts, max_reply_chars=cap)
        await run_turn(turn)
        assert turn.llm_text.rstrip() == kept
        assert turn.text == kept
        assert " ".join(tts.spoken) == kept

    asyncio.run(main())


def test_a_reply_that_ends_exactly_at_the_cap_is_whole_and_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        outbox, _ = make_outbox()
        turn = make_turn(FakeLlm("one two three", 4), outbox, max_reply_chars=13)
        with caplog.at_level(logging.WARNING, logger="app.call.turn"):
            await run_turn(turn)
        assert turn.llm_text == turn.text == "one two three"
        assert not [r for r in caplog.records if r.levelno == logging.WARNING]

    asyncio.run(main())


def test_an_uncapped_80_kb_run_on_goes_through_the_turn_in_linear_time() -> None:
    async def main() -> None:
        outbox, _ = make_outbox()
        turn = make_turn(FakeLlm(RUN_ON, 4), outbox, max_reply_chars=10_000_000)
        t0 = time.perf_counter()
        await turn._produce(asyncio.Queue())
        elapsed = time.perf_counter() - t0
        assert turn.llm_text == RUN_ON
        assert elapsed < 0.5, f"{elapsed * 1000:.0f} ms"  # before: 17.7 s

    asyncio.run(main())


# --- alignment across forced cuts ------------------------------------------------------------------------------


def test_forced_cuts_keep_the_heard_text_exact() -> None:
    reply = RUN_ON[:3_000]

    async def main() -> None:
        outbox, _ = make_outbox()
        turn = make_turn(FakeLlm(reply, 4), outbox, max_reply_chars=10_000)
        await run_turn(turn)
        assert len(turn.segments) >= 10
        # Each cut took out one space and the turn joins its sentences with one: the text is the reply itself.
        assert turn.text == reply
        for seg in turn.segments:
            assert turn.text[seg.char_start : seg.char_start + len(seg.text)] == seg.text
            for within in (0.0, 5.0, 10.0, 333.0, seg.duration_ms - 10.0):
                cut = turn.cut_at(seg.audio_start_ms + within)
                # 10 ms a character: the heard text is exactly the characters whose time has played.
                assert cut.char_offset == seg.char_start + int(within // MS_PER_CHAR)
                assert cut.heard_text == reply[: cut.char_offset]
        assert turn.cut_at(turn.audio_ms).heard_text == reply

    asyncio.run(main())


def test_a_hard_cut_adds_one_space_to_the_turn_text_and_nothing_else() -> None:
    reply = "see " + "x" * 650 + " done"

    async def main() -> None:
        outbox, _ = make_outbox()
        turn = make_turn(FakeLlm(reply, 4), outbox)
        await run_turn(turn)
        # The 650-character word was spoken as three pieces; the turn's text joins them with a space each, so
        # heard_text is off by at most those inserted spaces (one per 300 characters of a word no one speaks).
        assert turn.text == "see " + "x" * 300 + " " + "x" * 300 + " " + "x" * 50 + " done"
        assert turn.text.replace(" ", "") == reply.replace(" ", "")
        seg = turn.segments[1]
        cut = turn.cut_at(seg.audio_start_ms + 1000.0)
        assert cut.heard_text == turn.text[: seg.char_start + 100]

    asyncio.run(main())


# --- the outbox: queued audio and back-pressure ----------------------------------------------------------------


def test_queued_ms_counts_audio_queued_and_not_yet_sent() -> None:
    async def main() -> None:
        outbox, sent = make_outbox(chunk_ms=20, lead_ms=0)
        assert outbox.queued_ms == 0
        outbox.enqueue(1, b"\xff" * 8 * 1000)  # 1 s of mu-law
        outbox.enqueue(1, b"\xff" * 8 * 130)
        assert outbox.queued_ms == 1130
        pacer = asyncio.create_task(outbox.run())
        await asyncio.sleep(0.1)  # lead 0: one 20 ms chunk out, then one more each 20 ms
        assert sent
        assert outbox.queued_ms == 1130 - 20 * outbox.sent_chunks
        assert 0 < outbox.queued_ms < 1130
        outbox.drop()
        assert outbox.queued_ms == 0 and not outbox.has_queued
        pacer.cancel()

    asyncio.run(main())


def test_wait_for_room_returns_once_the_pacer_has_sent_enough() -> None:
    async def main() -> None:
        outbox, _ = make_outbox(chunk_ms=20, lead_ms=0)
        outbox.enqueue(1, b"\xff" * 8 * 200)
        await outbox.wait_for_room(100, 300)  # fits already: returns at once
        waiter = asyncio.create_task(outbox.wait_for_room(100, 200))
        await asyncio.sleep(0.05)
        assert not waiter.done()  # nothing is sent without the pacer
        pacer = asyncio.create_task(outbox.run())
        async with asyncio.timeout(2.0):
            await waiter
        assert outbox.queued_ms + 100 <= 200
        assert outbox.queued_ms >= 60  # it returned as soon as there was room, not once the queue was empty
        # More audio than the limit is let through once the queue is empty, so a waiter always ends.
        async with asyncio.timeout(2.0):
            await outbox.wait_for_room(5_000, 200)
        assert outbox.queued_ms == 0
        pacer.cancel()

    asyncio.run(main())


def test_drop_releases_a_waiter_at_once() -> None:
    async def main() -> None:
        outbox, _ = make_outbox()
        outbox.enqueue(1, b"\xff" * 8 * 5_000)
        waiter = asyncio.create_task(outbox.wait_for_room(1_000, 5_000))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        outbox.drop()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert waiter.done()

    asyncio.run(main())


def test_a_long_reply_queues_no_more_than_the_cap_and_a_barge_in_ends_the_wait() -> None:
    async def main() -> None:
        outbox, _ = make_outbox()
        tts = FakeTts()
        llm = FakeLlm(RUN_ON, 4)
        turn = make_turn(llm, outbox, tts, max_queued_audio_ms=10_000.0)
        turn.start()
        await asyncio.sleep(0.2)  # no pacer: nothing is sent, so the turn fills the queue to the cap and waits
        assert turn.running
        assert 10_000 - MAX_SENTENCE_CHARS * MS_PER_CHAR < outbox.queued_ms <= 10_000
        assert len(tts.spoken) == len(turn.segments) + 1  # one sentence synthesised, waiting for room
        assert llm.closed  # the reply itself was read up to its cap; only synthesis waits
        # Barge-in, in the session's order: (clear written), queue dropped, TTS stopped, turn cancelled.
        outbox.drop()
        turn.stop_tts()
        t0 = time.perf_counter()
        await turn.cancel()
        assert time.perf_counter() - t0 < 0.05
        assert not turn.running and outbox.queued_ms == 0
        segments = len(turn.segments)
        await asyncio.sleep(0.05)
        assert len(turn.segments) == segments and outbox.queued_ms == 0  # the waiting sentence never went out

    asyncio.run(main())


@pytest.mark.parametrize("size", [1, 3, 1_000])
def test_the_first_piece_of_a_reply_may_end_at_a_clause_and_the_rest_splits_into_sentences(size: int) -> None:
    reply = "We are open from nine to five on weekdays, and from ten to two on Saturdays. Sunday, we rest, too."
    pieces = stream(SentenceSplitter(first_clause_chars=20), reply, size)
    assert pieces == ["We are open from nine to five on weekdays,", "and from ten to two on Saturdays.",
                      "Sunday, we rest, too."]
    assert " ".join(pieces) == reply  # the turn's text is the same whatever the pieces


def test_a_clause_shorter_than_the_bound_or_after_the_first_sentence_does_not_end_a_piece() -> None:
    assert stream(SentenceSplitter(first_clause_chars=20), "Sure, I can do that. Yes, it is.", 1) == [
        "Sure, I can do that.", "Yes, it is."]
    assert stream(SentenceSplitter(), "We are open from nine to five on weekdays, and on Saturdays.", 1) == [
        "We are open from nine to five on weekdays, and on Saturdays."]
