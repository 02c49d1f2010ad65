"""The interruption kinds from the caller's words (app/bargein/words.py), on the phrases its rules were
written against. The held-out phrases are app/bench/phrases.py's, measured by the bench, not asserted here."""

from __future__ import annotations

import pytest

from app.bargein.words import interruption, normalize, unfinished

DEV = [
    ("Mm-hmm.", "backchannel"), ("uh-huh", "backchannel"), ("Yeah.", "backchannel"), ("Okay.", "backchannel"),
    ("Right.", "backchannel"), ("I see.", "backchannel"), ("Got it.", "backchannel"), ("Thank you.", "backchannel"),
    ("go on", "backchannel"),
    ("Stop!", "stop"), ("Wait.", "stop"), ("No.", "stop"), ("Hold on.", "stop"), ("Okay, wait.", "stop"),
    ("one moment please", "stop"), ("excuse me", "stop"), ("Yeah but what about Sunday", "stop"),
    ("Never mind.", "cancellation"), ("Cancel that please.", "cancellation"), ("forget it", "cancellation"),
    ("No, I said Tuesday.", "correction"), ("I meant the blue one", "correction"),
    ("no no I said four", "correction"),
    ("Sorry, what?", "clarification"), ("Say that again?", "clarification"), ("what", "clarification"),
    ("What do you mean by that?", "clarification"),
    ("Can you tell me about your opening hours?", "redirect"), ("what time do you open", "redirect"),
    ("sorry to bother you, is the shop open", "redirect"),
]


@pytest.mark.parametrize(("text", "kind"), DEV)
def test_the_kind_of_an_interruption_comes_from_its_words(text: str, kind: str) -> None:
    assert interruption(text) == kind


@pytest.mark.parametrize("text", ["", "  ", "...", "?!"])
def test_no_words_is_no_kind(text: str) -> None:
    assert interruption(text) is None


def test_normalize_keeps_hyphenated_and_apostrophed_words_and_drops_punctuation() -> None:
    assert normalize("Uh-huh, that\u2019s WRONG!  - ok") == "uh-huh that's wrong ok"


def test_a_backchannel_word_opening_a_request_is_not_a_backchannel() -> None:
    assert interruption("okay so what about delivery to Leeds") == "redirect"
    assert interruption("yeah okay") == "backchannel"


@pytest.mark.parametrize(("text", "expected"), [
    ("I'd like to book a table for", True), ("I'd like to book a table for.", True), ("My number is, um", True),
    ("So the thing is,", True), ("and then...", True), ("I want to", True),
    ("I'd like to book a table for two.", False), ("What time do you open?", False), ("I want that.", False),
    ("", False),
])
def test_words_that_stop_mid_clause_are_an_unfinished_turn(text: str, expected: bool) -> None:
    assert unfinished(text) is expected


@pytest.mark.parametrize(("text", "kind"), [
    ("Way.", "stop"), ("Weight!", "stop"), ("wake up", "stop"), ("Stopped.", "stop"), ("Top!", "stop"),
    ("Know.", "stop"), ("Hole on.", "stop"), ("Watt?", "clarification"), ("Counsel.", "cancellation"),
    ("Hold it.", "stop"), ("Nope.", "stop"),
])
def test_a_half_heard_command_word_in_a_short_utterance_is_the_command(text: str, kind: str) -> None:
    assert interruption(text) == kind


@pytest.mark.parametrize(("text", "kind"), [
    ("way to go", "redirect"), ("know what I mean", "redirect"), ("the top one please", "redirect"),
    ("Okay.", "backchannel"), ("whole", "redirect"), ("Council tax.", "redirect"),
])
def test_sound_alikes_do_not_reach_past_short_utterances_or_backchannels(text: str, kind: str) -> None:
    assert interruption(text) == kind


def test_top_floor_is_not_stop() -> None:
    assert interruption("Top floor.") == "redirect"


@pytest.mark.parametrize(("text", "kind"), [
    ("Um, wait.", "stop"), ("Sorry, can you repeat?", "clarification"), ("Actually, cancel it.", "cancellation"),
    ("Okay, enough.", "stop"), ("Actually, I meant eight.", "correction"),
])
def test_an_opener_takes_the_kind_of_what_follows_it(text: str, kind: str) -> None:
    assert interruption(text) == kind


@pytest.mark.parametrize(("text", "kind"), [
    ("No, forget it.", "cancellation"), ("No, stop.", "stop"), ("No, the blue one.", "correction"),
    ("No, Thursday.", "correction"), ("No, no, no.", "stop"), ("No problem.", "backchannel"),
])
def test_no_takes_the_kind_of_its_own_words_and_otherwise_corrects(text: str, kind: str) -> None:
    assert interruption(text) == kind


@pytest.mark.parametrize("text", ["Sounds good.", "Of course.", "Fair enough.", "That's fine.", "Yes, please."])
def test_listener_phrases_are_backchannels(text: str) -> None:
    assert interruption(text) == "backchannel"


@pytest.mark.parametrize(("text", "kind"), [
    ("That's not correct.", "correction"), ("That's enough.", "stop"), ("Can I book for tomorrow?", "redirect"),
    ("okay so what about delivery to Leeds", "redirect"), ("sorry to bother you, is the shop open", "redirect"),
])
def test_a_phrase_that_opens_like_a_command_is_read_whole(text: str, kind: str) -> None:
    assert interruption(text) == kind


def test_no_written_backchannel_stops_the_agent() -> None:
    from app.bench.kind_texts import KIND_TEXTS, score

    _, misses = score(KIND_TEXTS)
    assert not [m for m in misses if m[1] == "backchannel"], misses
