"""The embedded demo LLM: answers from its intent table for the caller's words, the demo script without them."""

from __future__ import annotations

from typing import Any

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


# -- the demo tools (app/call/demo_tools.py) -------------------------------------------------------------------
def test_offered_the_demo_tools_it_reads_the_hours_and_books_a_named_day_before_answering() -> None:
    from providers.llm.base import ToolCall
    from providers.llm.scripted import BOOKING_TOOL, HOURS_TOOL, scripted_turn

    tools = {HOURS_TOOL, BOOKING_TOOL}
    hours = convo("When are you open on Saturday?")
    assert scripted_turn(hours, tools) == ToolCall("call_hours_1", HOURS_TOOL, {})
    assert scripted_turn(hours, ()) == ANSWERS["hours"]  # not offered: answers from the table
    assert scripted_turn(convo("book a table please"), tools) == ANSWERS["booking"]  # no day: asks for one
    booking = convo("hi", "Book a table for tomorrow")
    call = scripted_turn(booking, tools)
    assert call == ToolCall("call_book_2", BOOKING_TOOL, {"day": "Tomorrow"})

    def answered(result: str, name: str = BOOKING_TOOL) -> str | ToolCall:
        asked = {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c9", "type": "function", "function": {"name": name, "arguments": "{}"}}]}
        return scripted_turn([*booking, asked, {"role": "tool", "tool_call_id": "c9", "content": result}], tools)

    assert answered('{"booked":true,"day":"Tomorrow","reference":"B7"}') == (
        "Done, you are booked for Tomorrow. Your reference is B 7.")
    assert str(answered('{"status":"cancelled","detail":"the caller interrupted"}')).startswith("All right, I have not")
    assert answered('{"monday to friday":"9:00-17:00"}', HOURS_TOOL) == ANSWERS["hours"]
    # A tool exchange in the history is not something the agent said: "say that again" skips it.
    again: list[dict[str, Any]] = [*booking, {"role": "assistant", "content": "", "tool_calls": [{"id": "x"}]},
             {"role": "tool", "tool_call_id": "x", "content": "{}"}, {"role": "assistant", "content": "Done."},
             {"role": "user", "content": "say that again"}]
    assert scripted_turn(again, tools) == "Of course. Done."
