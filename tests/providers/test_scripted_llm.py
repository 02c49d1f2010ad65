"""The embedded demo LLM: answers from its intent table for the caller's words, the demo script without them."""

from __future__ import annotations

import pytest

from app.call.session import NO_TRANSCRIPT
from providers.llm.scripted import DEFAULT_ANSWER, INTENTS, REPLIES, scripted_reply

ANSWERS = {intent.name: intent.answer for intent in INTENTS}


def convo(*said: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "be brief"}, {"role": "assistant", "content": "Hello, how can I help?"}]
    for text in said:
        messages.append({"role": "user", "content": text})
    return messages


@pytest.mark.parametrize(("said", "intent"), [
    ("What time do you open on Saturday?", "hours"), ("are you open on sundays", "hours"),
    ("I'd like to book a table for two", "booking"), ("Can I cancel my booking?", "cancel"),
    ("Okay, thanks, goodbye.", "goodbye"), ("thank you", "thanks"),
])
def test_the_callers_words_pick_the_answer(said: str, intent: str) -> None:
    assert scripted_reply(convo(said)) == ANSWERS[intent]


def test_say_that_again_repeats_the_agents_last_words() -> None:
    assert scripted_reply(convo("Sorry, can you say that again?")) == "Of course. Hello, how can I help?"


def test_anything_else_gets_the_polite_default() -> None:
    assert scripted_reply(convo("my cat is called Felix")) == DEFAULT_ANSWER


def test_without_words_the_demo_script_cycles_and_keys_are_read_back() -> None:
    assert scripted_reply(convo(NO_TRANSCRIPT)) == REPLIES[1]  # one agent turn so far
    assert scripted_reply(convo("")) == REPLIES[1]
    assert scripted_reply(convo("[the caller pressed the keys: 1 2 #]")).startswith("You pressed 1 2 #.")
