"""The turn-taking table (app/call/turn_taking.py): timelines of silences, words and speech, no clock."""

from __future__ import annotations

from typing import Any

import pytest

from app.call.turn_taking import (
    TRANSITIONS,
    Action,
    Input,
    ModelVerdict,
    Obs,
    Silence,
    Speech,
    State,
    TurnOver,
    TurnTaker,
    TurnTakingConfig,
    WordsIn,
)
from app.settings import Settings

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


# --- the end-of-turn model ------------------------------------------------------------------------
STRICT_MODEL = TurnTakingConfig("strict", model=True, complete_at=0.6, incomplete_below=0.3,
                                strict_silence_ms=700, unfinished_silence_ms=1500)
PROGRESSIVE_MODEL = TurnTakingConfig("progressive", model=True, complete_at=0.6, incomplete_below=0.3,
                                     complete_silence_ms=450, model_complete_silence_ms=300,
                                     unfinished_silence_ms=1500)


def test_strict_with_the_model_ends_a_complete_turn_at_the_pause() -> None:
    taker = TurnTaker(STRICT_MODEL)
    inputs: list[Input] = [
        Silence(END + 0.10, END),  # a word gap: nothing
        Silence(END + 0.25, END),  # the pause: ask the model
        Silence(END + 0.30, END),
        ModelVerdict(END + 0.33, END, 0.9),
    ]
    steps = [taker.feed(e) for e in inputs]
    assert [(s.action, s.state) for s in steps] == [
        (Action.NONE, State.LISTENING), (Action.ASK, State.ASKING), (Action.NONE, State.ASKING),
        (Action.CLOSE, State.LISTENING)]
    assert steps[-1].speech_end == END  # the turn gap runs from the caller's last speech, not the verdict
    assert taker.verdicts["complete"] == 1


def test_strict_with_the_model_holds_an_incomplete_turn_until_the_ceiling() -> None:
    taker = TurnTaker(STRICT_MODEL)
    taker.feed(Silence(END + 0.25, END))
    step = taker.feed(ModelVerdict(END + 0.33, END, 0.1))
    assert (step.action, step.state) == (Action.NONE, State.HOLDING) and step.deadline == pytest.approx(END + 1.5)
    assert taker.feed(Silence(END + 0.7, END)).action is Action.NONE  # the strict silence no longer ends it
    assert taker.feed(Silence(END + 1.49, END)).action is Action.NONE
    step = taker.feed(Silence(END + 1.5, END))
    assert (step.action, step.speech_end) == (Action.CLOSE, END)


def test_strict_with_the_model_unsure_or_silent_ends_at_the_strict_silence() -> None:
    for p in (0.45, None):  # between the thresholds; no answer (busy, failed)
        taker = TurnTaker(STRICT_MODEL)
        taker.feed(Silence(END + 0.25, END))
        assert taker.feed(ModelVerdict(END + 0.3, END, p)).state is State.HOLDING
        assert taker.feed(Silence(END + 0.69, END)).action is Action.NONE
        assert taker.feed(Silence(END + 0.70, END)).action is Action.CLOSE
    late = TurnTaker(STRICT_MODEL)  # the model is later than the strict silence: it ends as without it
    late.feed(Silence(END + 0.25, END))
    assert late.feed(Silence(END + 0.70, END)).action is Action.CLOSE
    assert late.feed(ModelVerdict(END + 0.8, END, 0.1)).action is Action.NONE  # stale


def test_strict_with_the_model_the_caller_going_on_drops_the_ask_and_the_hold() -> None:
    asking = TurnTaker(STRICT_MODEL)
    asking.feed(Silence(END + 0.25, END))
    assert (asking.feed(Speech(END + 0.3)).action, asking.state) == (Action.CANCEL, State.LISTENING)
    assert asking.feed(ModelVerdict(END + 0.35, END, 0.9)).action is Action.NONE  # the old pause's verdict
    holding = TurnTaker(STRICT_MODEL)
    holding.feed(Silence(END + 0.25, END))
    holding.feed(ModelVerdict(END + 0.3, END, 0.1))
    assert (holding.feed(Speech(END + 0.9)).action, holding.state) == (Action.NONE, State.LISTENING)
    # The VAD's backstop still ends a turn the model is stuck on.
    stuck = TurnTaker(STRICT_MODEL)
    stuck.feed(Silence(END + 0.25, END))
    assert stuck.feed(TurnOver(END + 1.5)).action is Action.END


def test_progressive_a_complete_verdict_shortens_the_words_deadline() -> None:
    taker = TurnTaker(PROGRESSIVE_MODEL)
    assert taker.feed(Silence(END + 0.25, END)).action is Action.HEAR  # the session asks the model too
    taker.feed(ModelVerdict(END + 0.32, END, 0.9))  # before the words: kept
    step = taker.feed(WordsIn(END + 0.38, END, "What time do you open?"))
    assert step.action is Action.DRAFT and step.deadline == pytest.approx(END + 0.3)
    assert taker.feed(Silence(END + 0.40, END)).action is Action.SPEAK


def test_progressive_a_verdict_after_the_words_moves_their_deadline() -> None:
    sooner = TurnTaker(PROGRESSIVE_MODEL)
    sooner.feed(Silence(END + 0.25, END))
    assert sooner.feed(WordsIn(END + 0.30, END, "What time do you open?")).deadline == pytest.approx(END + 0.45)
    step = sooner.feed(ModelVerdict(END + 0.35, END, 0.9))  # 300 ms has passed: over now
    assert (step.action, step.state) == (Action.SPEAK, State.LISTENING)
    later = TurnTaker(PROGRESSIVE_MODEL)
    later.feed(Silence(END + 0.25, END))
    later.feed(WordsIn(END + 0.30, END, "He took a resolve after this."))  # complete words
    step = later.feed(ModelVerdict(END + 0.35, END, 0.1))  # the voice says it goes on
    assert (step.action, step.state) == (Action.NONE, State.DRAFTING) and step.deadline == pytest.approx(END + 1.5)
    assert later.feed(Silence(END + 0.5, END)).action is Action.NONE  # past the words' 450 ms: held
    assert later.feed(Speech(END + 0.9)).action is Action.CANCEL  # the caller went on: not talked over


def test_progressive_incomplete_verdict_before_the_words_waits_the_ceiling_and_drafts_late() -> None:
    taker = TurnTaker(PROGRESSIVE_MODEL)
    taker.feed(Silence(END + 0.25, END))
    taker.feed(ModelVerdict(END + 0.30, END, 0.05))
    step = taker.feed(WordsIn(END + 0.40, END, "What time do you open?"))
    assert (step.action, step.state) == (Action.WAIT, State.WAITING)
    assert taker.draft_at == pytest.approx(END + 0.9)


def test_progressive_unfinished_words_win_over_a_complete_verdict() -> None:
    taker = TurnTaker(PROGRESSIVE_MODEL)
    taker.feed(Silence(END + 0.25, END))
    taker.feed(ModelVerdict(END + 0.30, END, 0.95))
    assert taker.feed(WordsIn(END + 0.40, END, "a table for")).deadline == pytest.approx(END + 1.5)


def test_progressive_without_a_verdict_keeps_the_words_rule() -> None:
    for p in (0.45, None):
        taker = TurnTaker(PROGRESSIVE_MODEL)
        taker.feed(Silence(END + 0.25, END))
        taker.feed(ModelVerdict(END + 0.30, END, p))
        assert taker.feed(WordsIn(END + 0.35, END, "What time do you open?")).deadline == pytest.approx(END + 0.45)


def test_the_model_makes_the_vad_turn_end_a_backstop_under_strict_too() -> None:
    assert STRICT_MODEL.vad_turn_end_ms(700) == 1500
    assert STRICT_MODEL.verdict(0.6) == "complete" and STRICT_MODEL.verdict(0.3) == "unsure"
    assert STRICT_MODEL.verdict(0.29) == "incomplete" and STRICT_MODEL.verdict(None) == "unsure"


@pytest.mark.parametrize("bad", [
    {"policy": "eager"},
    {"speculate_silence_ms": 0},
    {"speculate_silence_ms": 500, "complete_silence_ms": 400},
    {"complete_silence_ms": 2000, "unfinished_silence_ms": 1500},
    {"draft_lead_ms": -1},
    {"complete_at": 0.3, "incomplete_below": 0.6},
    {"model": True, "speculate_silence_ms": 250, "model_complete_silence_ms": 200},
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


# --- the model's own operating points (TURN_END_MODEL=prosody brings them; app/call/prosody.py) ------------
def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_a_models_own_thresholds_are_taken_unless_the_settings_name_theirs() -> None:
    own = (0.26, 0.06)
    cfg = TurnTakingConfig.from_settings(_settings(), model=True, thresholds=own)
    assert (cfg.complete_at, cfg.incomplete_below) == own
    assert (cfg.verdict(0.30), cfg.verdict(0.10), cfg.verdict(0.05)) == ("complete", "unsure", "incomplete")
    set_one = _settings(turn_model_complete_at=0.6)
    cfg = TurnTakingConfig.from_settings(set_one, model=True, thresholds=own)
    assert (cfg.complete_at, cfg.incomplete_below) == (0.6, 0.06)
    set_both = _settings(turn_model_complete_at=0.4, turn_model_incomplete_below=0.1)
    cfg = TurnTakingConfig.from_settings(set_both, model=True, thresholds=own)
    assert (cfg.complete_at, cfg.incomplete_below) == (0.4, 0.1)
    smart = TurnTakingConfig.from_settings(_settings(), model=True)
    assert (smart.complete_at, smart.incomplete_below) == (0.5, 0.5)  # no thresholds of its own: the settings'


def test_strict_with_the_prosody_thresholds_a_low_probability_still_ends_a_turn_at_the_pause() -> None:
    """The prosodic model's probabilities sit low (its classes are 1 : 6.6 in the fit): 0.3 is complete."""
    taker = TurnTaker(TurnTakingConfig("strict", speculate_silence_ms=250, complete_silence_ms=450,
                                       unfinished_silence_ms=1500, model=True, complete_at=0.26,
                                       incomplete_below=0.06))
    taker.feed(Silence(END + 0.25, END))
    step = taker.feed(ModelVerdict(END + 0.26, END, 0.3))
    assert (step.action, step.state, step.speech_end) == (Action.CLOSE, State.LISTENING, END)
    taker.feed(Silence(END + 5.0, END + 4.0))
    step = taker.feed(ModelVerdict(END + 4.3, END + 4.0, 0.04))  # a rising end: held to the ceiling
    assert (step.action, step.state) == (Action.NONE, State.HOLDING)
    assert step.deadline == pytest.approx(END + 5.5)
    nan = TurnTaker(taker.config)  # a NaN (too little voice) is no verdict: the strict silence
    nan.feed(Silence(END + 0.25, END))
    assert nan.feed(ModelVerdict(END + 0.3, END, float("nan"))).observation is Obs.SAYS_UNSURE


# --- strict, hearing early (TURN_HEAR_EARLY) and the recognizer's confidence -----------------------------
STRICT_EARLY = TurnTakingConfig("strict", speculate_silence_ms=250, complete_silence_ms=450,
                                unfinished_silence_ms=1500, hear_early=True)


def test_strict_hearing_early_keeps_the_words_for_the_vads_turn_end() -> None:
    taker = TurnTaker(STRICT_EARLY)
    steps = run(taker, [
        Silence(END + 0.10, END),
        Silence(END + 0.25, END),  # the short pause: hear the turn so far
        WordsIn(END + 0.40, END, "What time do you open?"),
        Silence(END + 0.45, END),  # no deadline of its own: the complete silence does not end a strict turn
        Silence(END + 0.69, END),
        TurnOver(END + 0.70),  # the VAD's turn end: the kept words are the turn's
    ])
    assert steps == [
        (Action.NONE, State.LISTENING), (Action.HEAR, State.HEARING), (Action.WAIT, State.HEARD),
        (Action.NONE, State.HEARD), (Action.NONE, State.HEARD), (Action.KEEP, State.LISTENING),
    ]
    assert taker.text == "What time do you open?"
    assert taker.drafts == 0  # nothing is drafted under strict


def test_strict_hearing_early_drops_the_words_when_the_caller_goes_on() -> None:
    taker = TurnTaker(STRICT_EARLY)
    taker.feed(Silence(END + 0.25, END))
    taker.feed(WordsIn(END + 0.40, END, "He took a resolve after this."))
    step = taker.feed(Speech(END + 0.6))
    assert (step.action, step.state) == (Action.CANCEL, State.LISTENING)
    assert taker.text == "" and taker.hearings_dropped == 1
    # the next pause is heard afresh; the VAD's turn end before its words hears the turn again (END)
    assert taker.feed(Silence(END + 1.5, END + 1.25)).action is Action.HEAR
    assert taker.feed(TurnOver(END + 1.95)).action is Action.END


def test_strict_hearing_early_keeps_the_vads_turn_end_where_it_was() -> None:
    assert STRICT_EARLY.takes_turns and STRICT_EARLY.hears_early
    assert STRICT_EARLY.vad_turn_end_ms(700) == 700  # not moved out to the unfinished silence
    assert TurnTakingConfig("strict").vad_turn_end_ms(700) == 700
    assert not TurnTakingConfig("strict").takes_turns
    assert TurnTakingConfig("progressive", hear_early=True).vad_turn_end_ms(700) == 1500
    assert not TurnTakingConfig("progressive", hear_early=True).hears_early


@pytest.mark.parametrize(("text", "confidence", "expected"), [
    ("What time do you open?", 0.95, False),
    ("What time do you open?", None, False),
    ("During the night, the undertakers had executed their melancholy office.", 0.31, True),  # unsure
    ("This meant detention until", 0.9, True),  # a subordinator opens a clause
    ("The steep upgrades it took at a", 0.9, True),  # words.py's list
    ("I would like that.", 0.9, False),
    ("", 0.1, False),
])
def test_looks_unfinished_reads_the_last_word_and_the_recognizers_doubt(
        text: str, confidence: float | None, expected: bool) -> None:
    from app.call.turn_taking import looks_unfinished
    assert looks_unfinished(text, confidence, 0.4) is expected


def test_an_unsure_last_word_waits_the_unfinished_silence() -> None:
    taker = TurnTaker(PROGRESSIVE)
    taker.feed(Silence(END + 0.25, END))
    step = taker.feed(WordsIn(END + 0.4, END, "They had executed their melancholy office.", last_confidence=0.2))
    assert (step.action, step.state) == (Action.WAIT, State.WAITING)
    assert step.deadline == pytest.approx(END + 1.5)
    sure = TurnTaker(PROGRESSIVE)
    sure.feed(Silence(END + 0.25, END))
    assert sure.feed(WordsIn(END + 0.4, END, "They had executed their melancholy office.",
                             last_confidence=0.9)).deadline == pytest.approx(END + 0.45)
