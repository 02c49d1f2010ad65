"""Turn taking: when the caller's turn is over, and what becomes of a reply prepared before it was.

Theory of operation
-------------------
The caller's turn ends on silence, but silence alone is a poor judge: a caller who stops for breath in the
middle of "I'd like to book a table for ... two" has not finished, and one who said "What time do you open?"
has. Waiting the same long silence after both costs every complete turn its whole length in dead air; a short
one talks over every mid-sentence pause. The words tell the two apart better than the silence does (not
perfectly: a phrase boundary such as "He took a resolve after this." reads as complete), so the policy
`TURN_POLICY` chooses how they are used:

- `strict`: the turn ends after the VAD's turn-end silence (`TURN_END_SILENCE_MS`); then the recognizer hears
  it, and an unfinished clause waits `TURN_UNFINISHED_WAIT_MS` more before the answer (the session's
  `_answer_due`). Nothing is prepared early. This module then only passes the VAD's turn end through.
- `progressive`: at a short pause (`speculate_silence_ms`) the turn so far is transcribed. The words set the
  deadline: `complete_silence_ms` of silence after the caller's last speech when they look complete,
  `unfinished_silence_ms` when they stop mid-clause. The reply (LLM and synthesis) is started on them, held:
  nothing of it reaches the caller. It starts `draft_lead_ms` before the deadline, or at once when the words
  come later than that (no LLM request is spent on a pause the caller is likely to go on from). At
  the deadline the turn is over and the held reply is spoken (ready by then, or as soon as it is). If the
  caller speaks again first, the held reply is cancelled (no token or audio of it was sent, nothing of it is
  in the context) and the whole thing starts again at the next pause: a restart.

The VAD's own turn end stays as the backstop: under `progressive` the session sets it to
`unfinished_silence_ms` at least, so it fires only when speculation could not decide (the recognizer failed
or heard nothing, or answered later than the deadline).

States (one caller turn at a time; the session feeds the inputs only while the caller has the turn and the
agent is silent)::

    LISTENING  the caller is talking, or no turn is open: nothing prepared
    HEARING    the caller paused: the turn so far is being transcribed
    WAITING    its words are in; the reply starts `draft_lead_ms` before their deadline
    DRAFTING   the reply is being prepared, held, until the deadline
    FALLBACK   the words could not be had: the turn ends the strict way (the VAD's turn end)

Inputs carry their time; nothing here reads a clock or does I/O. Every transition is a row of TRANSITIONS;
`_classify` holds the conditions. Actions tell the session what to do:

    HEAR    transcribe the turn so far (to `speech_end`)
    WAIT    keep the words; the reply starts later (DRAFT)
    DRAFT   start the held reply on the words
    CANCEL  the caller went on: drop the hearing in flight or the held reply (a restart if it was drafted)
    SPEAK   the turn is over: end it with these words and let the held reply play
    END     the turn is over the strict way: drop anything speculative, hear the turn and answer as `strict`
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from app.bargein.words import unfinished

if typing.TYPE_CHECKING:
    from app.settings import Settings

Policy = Literal["strict", "progressive"]
POLICIES: tuple[Policy, ...] = ("strict", "progressive")


@dataclass(frozen=True)
class TurnTakingConfig:
    """The policy and its silences (settings TURN_*)."""

    policy: Policy = "strict"
    # The pause at which the turn so far is transcribed. Shorter pauses are between words; 250 ms is past
    # most stop consonants and word gaps, and leaves the recognizer, the LLM and synthesis the time until
    # the deadline.
    speculate_silence_ms: float = 250.0
    # Silence after the caller's last speech that ends a turn whose words look complete / unfinished.
    complete_silence_ms: float = 450.0
    unfinished_silence_ms: float = 1500.0
    # How long before its deadline a reply is started: about what the LLM's first clause and its synthesis
    # take, with room (the embedded LLM's first clause, paced, about 300 ms). Starting it later than the words
    # when the deadline is far saves the LLM request in the pauses a caller goes on from (a restart costs a
    # cancelled request).
    draft_lead_ms: float = 600.0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}")
        if not 0 < self.speculate_silence_ms <= self.complete_silence_ms <= self.unfinished_silence_ms:
            raise ValueError("want 0 < speculate_silence_ms <= complete_silence_ms <= unfinished_silence_ms")
        if self.draft_lead_ms < 0:
            raise ValueError("draft_lead_ms must be >= 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> TurnTakingConfig:
        return cls(
            policy=settings.turn_policy,
            speculate_silence_ms=settings.turn_speculate_silence_ms,
            complete_silence_ms=settings.turn_complete_silence_ms,
            unfinished_silence_ms=settings.turn_unfinished_silence_ms,
        )

    def vad_turn_end_ms(self, strict_ms: float) -> float:
        """The VAD's turn-end silence under this policy: under `progressive` a backstop past every deadline."""
        return strict_ms if self.policy == "strict" else max(strict_ms, self.unfinished_silence_ms)


def looks_unfinished(text: str) -> bool:
    """The words stop mid-clause (app/bargein/words.py `unfinished`: a trailing comma or ellipsis, or a last
    word a sentence does not end on)."""
    return unfinished(text)


# --- inputs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Silence:
    """The caller has been silent since `speech_end` (their last speech), as of `at`."""

    at: float
    speech_end: float


@dataclass(frozen=True)
class Speech:
    """The caller spoke again after the pause the state is about."""

    at: float


@dataclass(frozen=True)
class WordsIn:
    """The recognizer's words for the turn up to `speech_end`; `ok` False when it failed."""

    at: float
    speech_end: float
    text: str
    ok: bool = True


@dataclass(frozen=True)
class TurnOver:
    """The VAD's turn-end silence passed (the strict end)."""

    at: float


Input = Silence | Speech | WordsIn | TurnOver


class State(Enum):
    LISTENING = "listening"
    HEARING = "hearing"
    WAITING = "waiting"
    DRAFTING = "drafting"
    FALLBACK = "fallback"


class Obs(Enum):
    QUIET = "quiet"  # silence, nothing due
    PAUSED = "paused"  # silence reached speculate_silence_ms
    DUE = "due"  # silence reached the words' deadline
    DRAFT_DUE = "draft_due"  # silence reached the time to start the reply
    RESUMED = "resumed"
    WORDS_NOW = "words_now"  # words whose reply is due to start (their deadline is near, or passed)
    WORDS_LATER = "words_later"  # words whose deadline is far: the reply starts draft_lead_ms before it
    NO_WORDS = "no_words"  # the recognizer failed or heard nothing
    STALE = "stale"  # words for a pause that is no longer the current one
    TURN_OVER = "turn_over"


class Action(Enum):
    NONE = "none"
    HEAR = "hear"
    WAIT = "wait"
    DRAFT = "draft"
    CANCEL = "cancel"
    SPEAK = "speak"
    END = "end"


S, O, A = State, Obs, Action  # noqa: E741 - short names keep the table one row per line
TRANSITIONS: dict[tuple[State, Obs], tuple[State, Action]] = {
    (S.LISTENING, O.PAUSED): (S.HEARING, A.HEAR),
    (S.LISTENING, O.TURN_OVER): (S.LISTENING, A.END),
    (S.HEARING, O.RESUMED): (S.LISTENING, A.CANCEL),
    (S.HEARING, O.WORDS_NOW): (S.DRAFTING, A.DRAFT),
    (S.HEARING, O.WORDS_LATER): (S.WAITING, A.WAIT),
    (S.HEARING, O.NO_WORDS): (S.FALLBACK, A.NONE),
    # The recognizer is later than the backstop: the strict path hears the turn again.
    (S.HEARING, O.TURN_OVER): (S.LISTENING, A.END),
    (S.WAITING, O.DRAFT_DUE): (S.DRAFTING, A.DRAFT),
    (S.WAITING, O.DUE): (S.LISTENING, A.SPEAK),  # a lead of 0 (or a late tick): over, with words only
    (S.WAITING, O.TURN_OVER): (S.LISTENING, A.SPEAK),
    (S.WAITING, O.RESUMED): (S.LISTENING, A.CANCEL),
    (S.DRAFTING, O.DUE): (S.LISTENING, A.SPEAK),
    (S.DRAFTING, O.TURN_OVER): (S.LISTENING, A.SPEAK),
    (S.DRAFTING, O.RESUMED): (S.LISTENING, A.CANCEL),
    (S.FALLBACK, O.RESUMED): (S.LISTENING, A.NONE),
    (S.FALLBACK, O.TURN_OVER): (S.LISTENING, A.END),
}
# Every pair not in the table keeps the state and does nothing (QUIET anywhere, STALE words, a PAUSED that
# is already being heard).
del S, O, A


@dataclass(frozen=True)
class Step:
    """The answer to one input."""

    action: Action
    state: State
    previous: State
    observation: Obs
    deadline: float | None  # while DRAFTING: when the turn is over if the caller stays silent


class TurnTaker:
    """One call's turn-taking state (see the module docstring). `feed` every input; act on `Step.action`."""

    def __init__(self, config: TurnTakingConfig) -> None:
        self.config = config
        self.state = State.LISTENING
        self.speech_end: float | None = None  # the pause being heard or drafted on: the caller's last speech
        self.deadline: float | None = None
        self.text = ""  # the drafted words
        # Counters for the restart rate: drafts started, and those cancelled because the caller went on.
        self.drafts = 0
        self.restarts = 0
        self.spoken = 0  # drafts spoken (counted by the session, which does the speaking)
        self.hearings_dropped = 0  # transcriptions abandoned before their words came (cheap: no LLM yet)

    @property
    def draft_at(self) -> float | None:
        """While WAITING: when the reply is started if the caller stays silent."""
        if self.state is not State.WAITING or self.deadline is None:
            return None
        return self.deadline - self.config.draft_lead_ms / 1000.0

    def feed(self, event: Input) -> Step:
        obs = self._classify(event)
        previous = self.state
        state, action = TRANSITIONS.get((previous, obs), (previous, Action.NONE))
        if action is Action.HEAR:
            assert isinstance(event, Silence)
            self.speech_end = event.speech_end
        elif isinstance(event, WordsIn) and action in (Action.DRAFT, Action.WAIT):
            self.deadline = self._deadline(event)
            self.text = event.text
        if action is Action.DRAFT:
            self.drafts += 1
        elif action is Action.CANCEL:
            if previous is State.DRAFTING:
                self.restarts += 1
            else:
                self.hearings_dropped += 1
        if state is State.LISTENING:
            self.speech_end = self.deadline = None
            if action is not Action.SPEAK:
                self.text = ""
        self.state = state
        return Step(action, state, previous, obs, self.deadline)

    def _classify(self, event: Input) -> Obs:
        cfg = self.config
        match event:
            case Silence(at=at, speech_end=speech_end):
                if self.state in (State.WAITING, State.DRAFTING) and self.deadline is not None:
                    if at >= self.deadline - 1e-6:
                        return Obs.DUE
                    if self.state is State.WAITING and at >= self.deadline - cfg.draft_lead_ms / 1000.0 - 1e-6:
                        return Obs.DRAFT_DUE
                if cfg.policy == "progressive" and (at - speech_end) * 1000.0 >= cfg.speculate_silence_ms - 1e-6:
                    return Obs.PAUSED
                return Obs.QUIET
            case Speech():
                return Obs.RESUMED
            case WordsIn(speech_end=speech_end, text=text, ok=ok):
                if self.state is not State.HEARING or self.speech_end is None \
                        or abs(speech_end - self.speech_end) > 1e-9:
                    return Obs.STALE
                if not ok or not text.strip():
                    return Obs.NO_WORDS
                draft_at = self._deadline(event) - cfg.draft_lead_ms / 1000.0
                return Obs.WORDS_NOW if event.at >= draft_at - 1e-6 else Obs.WORDS_LATER
            case TurnOver():
                return Obs.TURN_OVER
            case _:
                typing.assert_never(event)

    def _deadline(self, words: WordsIn) -> float:
        """When the turn is over if the caller stays silent: the silence its words call for."""
        cfg = self.config
        silence = cfg.unfinished_silence_ms if looks_unfinished(words.text) else cfg.complete_silence_ms
        return words.speech_end + silence / 1000.0

    def reset(self) -> None:
        """The turn ended some other way (a key, the call): forget any pause in hand."""
        self.state = State.LISTENING
        self.speech_end = self.deadline = None
        self.text = ""
