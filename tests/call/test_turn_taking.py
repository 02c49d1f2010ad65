"""The turn-taking table (app/call/turn_taking.py): timelines of silences, words and speech, no clock."""

from __future__ import annotations

import pytest

from app.call.turn_taking import (
    TRANSITIONS,
    Action,
    Input,
    Obs,
    Silence,
    Speech,
    State,
    TurnOver,
    TurnTaker,
    TurnTakingConfig,
    WordsIn,
)

PROGRESSIVE = TurnTakingConfig("progressive", speculate_silence_ms=250, complete_silence_ms=450,
                               unfinished_silence_ms=1500)
END = 10.0  # the caller's last speech before the pause


def run(taker: TurnTaker, inputs: list[Input]) -> list[tuple[Action, State]]:
    return [(step.action, step.state) for step in map(taker.feed, inputs)]


def test_a_complete_turn_is_heard_at_the_short_pause_and_spoken_at_the_short_deadline() -> None:
    taker = TurnTaker(PROGRESSIVE)
    steps = run(taker, [
        Silence(END + 0.10, END),  # a word gap: nothing
        Silence(END + 0.25, END),  # the short pause: hear the turn so far
        Silence(END + 0.30, END),  # still being heard: nothing more
        WordsIn(END + 0.40, END, "What time do you open?"),
        Silence(END + 0.44, END),
        Silence(END + 0.45, END),  # complete words: over after 450 ms
    ])
    assert steps == [
        (Action.NONE, State.LISTENING), (Action.HEAR, State.HEARING), (Action.NONE, State.HEARING),
        (Action.DRAFT, State.DRAFTING), (Action.NONE, State.DRAFTING), (Action.SPEAK, State.LISTENING),
    ]
    assert taker.text == "What time do you open?"
    assert (taker.drafts, taker.restarts) == (1, 0)


def test_unfinished_words_wait_the_long_silence_and_start_the_reply_only_near_it() -> None:
    taker = TurnTaker(PROGRESSIVE)  # draft_lead_ms 600: the reply starts at 900 ms of silence
    taker.feed(Silence(END + 0.25, END))
    step = taker.feed(WordsIn(END + 0.4, END, "I'd like to book a table for"))
    assert (step.action, step.state) == (Action.WAIT, State.WAITING)
    assert step.deadline == pytest.approx(END + 1.5) and taker.draft_at == pytest.approx(END + 0.9)
    assert taker.feed(Silence(END + 0.8, END)).action is Action.NONE  # past the complete deadline: no answer
    assert taker.feed(Silence(END + 0.9, END)).action is Action.DRAFT
    assert taker.feed(Silence(END + 1.2, END)).action is Action.NONE
    assert taker.feed(Silence(END + 1.5, END)).action is Action.SPEAK
    assert (taker.drafts, taker.restarts) == (1, 0)


def test_going_on_before_the_reply_to_unfinished_words_started_is_not_a_restart() -> None:
    taker = TurnTaker(PROGRESSIVE)
    taker.feed(Silence(END + 0.25, END))
    taker.feed(WordsIn(END + 0.4, END, "a table for"))
    step = taker.feed(Speech(END + 0.7))
    assert (step.action, step.state) == (Action.CANCEL, State.LISTENING)
    assert (taker.drafts, taker.restarts, taker.hearings_dropped) == (0, 0, 1)


def test_the_caller_going_on_cancels_the_held_reply_and_it_starts_again_at_the_next_pause() -> None:
    taker = TurnTaker(PROGRESSIVE)
    taker.feed(Silence(END + 0.25, END))
    taker.feed(WordsIn(END + 0.35, END, "I'd like to book a table"))  # looks complete
    step = taker.feed(Speech(END + 0.40))
    assert (step.action, step.state, step.previous) == (Action.CANCEL, State.LISTENING, State.DRAFTING)
    assert (taker.drafts, taker.restarts, taker.text) == (1, 1, "")
    later = END + 2.0
    assert run(taker, [Silence(later + 0.25, later), WordsIn(later + 0.3, later, "for two, tonight."),
                       Silence(later + 0.45, later)]) == [
        (Action.HEAR, State.HEARING), (Action.DRAFT, State.DRAFTING), (Action.SPEAK, State.LISTENING)]
    assert (taker.drafts, taker.restarts) == (2, 1)


def test_going_on_while_the_words_are_still_being_heard_drops_the_hearing_not_a_draft() -> None:
    taker = TurnTaker(PROGRESSIVE)
    taker.feed(Silence(END + 0.25, END))
    assert taker.feed(Speech(END + 0.3)).action is Action.CANCEL
    assert (taker.restarts, taker.hearings_dropped) == (0, 1)
    # The words of the abandoned pause come in late: they are stale and start nothing.
    assert taker.feed(WordsIn(END + 0.5, END, "Hello.")).action is Action.NONE
    assert taker.state is State.LISTENING


def test_words_for_an_earlier_pause_are_stale() -> None:
    taker = TurnTaker(PROGRESSIVE)
    taker.feed(Silence(END + 0.25, END))
    step = taker.feed(WordsIn(END + 0.3, END - 1.0, "Hello."))
    assert (step.action, step.observation, step.state) == (Action.NONE, Obs.STALE, State.HEARING)


def test_no_words_fall_back_to_the_vads_turn_end() -> None:
    taker = TurnTaker(PROGRESSIVE)
    taker.feed(Silence(END + 0.25, END))
    assert taker.feed(WordsIn(END + 0.5, END, "", ok=False)).state is State.FALLBACK
    assert taker.feed(Silence(END + 1.0, END)).action is Action.NONE  # no deadline without words
    assert taker.feed(TurnOver(END + 1.5)).action is Action.END


def test_the_vads_backstop_speaks_a_draft_and_ends_a_turn_still_being_heard() -> None:
    drafting = TurnTaker(PROGRESSIVE)
    drafting.feed(Silence(END + 0.25, END))
    drafting.feed(WordsIn(END + 0.4, END, "a table for"))
    assert drafting.feed(TurnOver(END + 1.5)).action is Action.SPEAK  # waiting on unfinished words: over
    hearing = TurnTaker(PROGRESSIVE)
    hearing.feed(Silence(END + 0.25, END))
    assert hearing.feed(TurnOver(END + 1.5)).action is Action.END


def test_strict_never_speculates() -> None:
    taker = TurnTaker(TurnTakingConfig("strict"))
    assert run(taker, [Silence(END + 0.25, END), Silence(END + 0.6, END), TurnOver(END + 0.7)]) == [
        (Action.NONE, State.LISTENING), (Action.NONE, State.LISTENING), (Action.END, State.LISTENING)]


def _row_key(row: tuple[State, Obs]) -> tuple[str, str]:
    return row[0].value, row[1].value


ROWS: list[tuple[State, Obs]] = sorted(TRANSITIONS, key=_row_key)


@pytest.mark.parametrize(("state", "obs"), ROWS)
def test_every_row_names_a_real_move(state: State, obs: Obs) -> None:
    # A row that keeps the state must do something, else it would only repeat the default.
    new, action = TRANSITIONS[(state, obs)]
    assert new is not state or action is not Action.NONE


def test_the_vad_turn_end_is_a_backstop_only_under_progressive() -> None:
    assert TurnTakingConfig("strict").vad_turn_end_ms(700) == 700
    assert PROGRESSIVE.vad_turn_end_ms(700) == 1500


@pytest.mark.parametrize("bad", [
    {"policy": "eager"},
    {"speculate_silence_ms": 0},
    {"speculate_silence_ms": 500, "complete_silence_ms": 400},
    {"complete_silence_ms": 2000, "unfinished_silence_ms": 1500},
    {"draft_lead_ms": -1},
])
def test_config_rejects_impossible_silences(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TurnTakingConfig(**bad)  # type: ignore[arg-type]


def test_a_far_deadline_starts_the_reply_only_draft_lead_before_it() -> None:
    taker = TurnTaker(TurnTakingConfig("progressive", complete_silence_ms=1000, unfinished_silence_ms=1500))
    taker.feed(Silence(END + 0.25, END))
    step = taker.feed(WordsIn(END + 0.35, END, "What time do you open?"))  # complete, but over only at 1000 ms
    assert (step.action, step.state) == (Action.WAIT, State.WAITING)
    assert taker.draft_at == pytest.approx(END + 0.4)
    assert taker.feed(Silence(END + 0.4, END)).action is Action.DRAFT
    assert taker.feed(Silence(END + 1.0, END)).action is Action.SPEAK


def test_words_later_than_the_draft_time_start_the_reply_at_once() -> None:
    taker = TurnTaker(TurnTakingConfig("progressive", complete_silence_ms=1000, unfinished_silence_ms=1500))
    taker.feed(Silence(END + 0.25, END))
    assert taker.feed(WordsIn(END + 0.7, END, "What time do you open?")).action is Action.DRAFT
