"""Going on after a caller turn without words: the decision, the rest of the cut turn, and what the LLM reads."""

from __future__ import annotations

import pytest

from app.call.going_on import StopLeft, go_on, go_on_at_pause, rest_from, whole_sentences
from app.call.llm_context import CUT_MARK, NO_TRANSCRIPT, llm_messages
from app.call.tools import ToolLedger
from app.transcript import CallRecord

TEXT = "Our opening hours are nine to five on weekdays."


@pytest.mark.parametrize(("offset", "rest"), [
    (0, TEXT),
    (4, "opening hours are nine to five on weekdays."),  # at a word's first letter
    (8, "opening hours are nine to five on weekdays."),  # inside "opening": said again whole
    (11, "hours are nine to five on weekdays."),  # in the space after "opening": the next word
    (len(TEXT) - 3, "weekdays."),
    (len(TEXT), ""),  # heard to the end: nothing left
])
def test_the_rest_starts_at_the_word_being_said(offset: int, rest: str) -> None:
    assert rest_from(TEXT, offset) == rest


@pytest.mark.parametrize(("text", "whole"), [
    ("hours are nine to five. We are closed on Sun", "hours are nine to five."),
    ("hours are nine to five! Open on Saturdays? Yes. And", "hours are nine to five! Open on Saturdays? Yes."),
    ('it says "closed." Then', 'it says "closed."'),
    ("hours are nine to five", ""),  # no whole sentence: nothing to say
    ("version 2.5 is out. And", "version 2.5 is out."),  # a decimal point is not a sentence's end
])
def test_a_reply_cut_while_streaming_goes_on_to_its_last_whole_sentence(text: str, whole: str) -> None:
    assert whole_sentences(text) == whole


def _rest(heard: str = "Our opening") -> StopLeft:
    return StopLeft("b1", 1, heard, rest_from(TEXT, len(heard)))


@pytest.mark.parametrize(("words", "error", "keys", "reason"), [
    ("", None, "", "no_words"),
    ("...", None, "", "no_words"),  # punctuation is no words
    ("Pup pup pup pup!", None, "", "no_words"),  # Whisper's babble for a bark or a sneeze
    ("Buh-buh-buh-buh-buh!", None, "", "no_words"),
    ("No, no, no.", None, "", None),  # a command said three times is words
    ("Pup pup.", None, "", None),  # twice is not babble
    ("You", None, "", "no_words"),  # a knock, rain, wind: Whisper's commonest guess at a sound
    ("Ow! Ahhhhhh!", None, "", "no_words"),
    ("Oh. Ow.", None, "", "listener_words"),
    ("Thank you.", None, "", "listener_words"),
    ("Are you there?", None, "", None),
    ("5.", None, "", None),  # a number is words, though the word rules drop digits
    ("2013.", None, "", None),
    ("Mm-hmm.", None, "", "listener_words"),
    ("Yeah, okay.", None, "", "listener_words"),
    ("What time do you open?", None, "", None),  # a question: answered
    ("Wait.", None, "", None),  # a stop word: answered
    ("hahahaha", None, "", "no_words"),  # laughter written as one word
    ("Hehehe! Ha ha.", None, "", "no_words"),
    ("Aha.", None, "", "listener_words"),  # a word (a listener's), not a laugh
    ("Thank you for watching!", None, "", "no_words"),  # Whisper's sign-off for music, a siren, a bird
    ("Thank you so much for watching, and I'll see you in the next video. Bye!", None, "", "no_words"),
    ("Book me for Monday. Thanks for watching.", None, "", None),  # the words before it are the turn's
    ("See you next time, bye!", None, "", None),  # a caller's goodbye is words
    ("", "timeout", "", None),  # the recognizer failed: it does not know that nothing was said
    ("", None, "12", None),  # keys are a turn
])
def test_only_a_turn_without_words_or_with_listener_words_goes_on(
        words: str, error: str | None, keys: str, reason: str | None) -> None:
    assert go_on(_rest(), words, error, keys) == reason


@pytest.mark.parametrize(("words", "now"), [
    ("", True), ("Ha ha ha!", True), ("hahahaha", True), ("Ow! Ahhhhhh!", True), ("You", True),
    ("Um.", False),  # a caller gathering their words: listener words at the turn's end, not at a pause
    ("So", False), ("Okay.", False), ("Mm-hmm.", False), ("Wait.", False), ("What time do you open?", False),
    ("I", False),  # "I ..." opens a turn: a word at the pause, though Whisper also writes it for a knock
])
def test_at_a_pause_only_sounds_alone_let_the_agent_go_on(words: str, now: bool) -> None:
    assert go_on_at_pause(_rest(), words, None, "") is now
    assert not go_on_at_pause(_rest(), words, "timeout", "")  # nor when the recognizer failed
    assert not go_on_at_pause(StopLeft("b1", 1, TEXT, ""), words, None, "")  # nor with nothing left to say


def test_no_rest_no_going_on_and_a_question_heard_makes_yeah_an_answer() -> None:
    assert go_on(None, "", None, "") is None
    assert go_on(StopLeft("b1", 1, TEXT, ""), "", None, "") is None  # heard to the end
    asked = StopLeft("b1", 1, "Would you like to book? I", "can also")
    assert go_on(asked, "Yeah.", None, "") is None
    assert go_on(asked, "", None, "") == "no_words"


def test_the_llm_reads_a_continued_turn_uncut_and_not_the_wordless_turn_between() -> None:
    record = CallRecord("c", "twilio", 0.0)
    cut = record.new_turn("agent", 0.0)
    cut.text, cut.interrupted = "Our opening", True
    noise = record.new_turn("user", 0.0)
    noise.went_on, noise.ended_at = True, 1.0
    rest = record.new_turn("agent", 0.0)
    rest.text, rest.continues = "opening hours are nine to five.", cut.id
    asked = record.new_turn("user", 0.0)
    asked.text = "Thanks."
    messages = llm_messages("sys", record.history(), ToolLedger(), None)
    assert [m["content"] for m in messages[1:]] == ["Our opening", "opening hours are nine to five.", "Thanks."]
    # without the continuation the cut is marked and the turn without words says so
    rest.continues, noise.went_on = None, False
    contents = [m["content"] for m in llm_messages("sys", record.history(), ToolLedger(), None)[1:]]
    assert contents[:2] == [f"Our opening{CUT_MARK}", NO_TRANSCRIPT]
