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
  `_answer_due`). With `hear_early` (TURN_HEAR_EARLY) the turn so far is transcribed at the short pause
  (`speculate_silence_ms`) and its words kept (HEARD): when the VAD's turn end comes with no speech since, they
  are the turn's words (KEEP) and the recognizer's time is out of the gap; the turn still ends when it always
  did, so no answer comes sooner than the silence allows. Without it nothing is prepared early, and this module
  only passes the VAD's turn end through.
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

With an end-of-turn model (`TURN_END_MODEL`, app/call/end_of_turn.py; `model` here) the voice is heard too,
since the words alone cannot tell a mid-sentence pause ("... after this." at a phrase boundary) from an end.
At the same short pause the model is asked for P(complete); `complete_at` and `incomplete_below` turn it into
a verdict: complete, incomplete, or unsure (between them, or no answer: busy, failed). (The prosodic model,
TURN_END_MODEL=prosody, app/call/prosody.py, brings its own pair, picked with its fit: `from_settings`.)

- `strict`: the pause asks only the model (ASKING). Complete ends the turn at once (CLOSE: then it is heard
  and answered as always, the words' unfinished-clause wait included); incomplete holds it until the ceiling
  (`unfinished_silence_ms`); unsure until the strict silence (`strict_silence_ms`), as without the model.
  The VAD's turn end becomes the backstop at the ceiling, as under `progressive`.
- `progressive`: the pause hears the words and asks the model at once. The deadline takes both: unfinished
  words or an incomplete verdict wait the ceiling; complete words with a complete verdict end the turn after
  `model_complete_silence_ms`; complete words with an unsure verdict (or none yet) after
  `complete_silence_ms`, as without the model. A verdict that comes after the words moves their deadline.

States (one caller turn at a time; the session feeds the inputs only while the caller has the turn and the
agent is silent)::

    LISTENING  the caller is talking, or no turn is open: nothing prepared
    HEARING    the caller paused: the turn so far is being transcribed
    WAITING    its words are in; the reply starts `draft_lead_ms` before their deadline
    DRAFTING   the reply is being prepared, held, until the deadline
    FALLBACK   the words could not be had: the turn ends the strict way (the VAD's turn end)
    HEARD      strict, hearing early: the words of the turn so far are in, kept for the VAD's turn end
    ASKING     strict with the model: the caller paused, the model is being asked
    HOLDING    strict with the model: its verdict is in; the turn ends at the deadline it set

Inputs carry their time; nothing here reads a clock or does I/O. Every transition is a row of TRANSITIONS;
`_classify` holds the conditions. Actions tell the session what to do:

    HEAR    transcribe the turn so far (to `speech_end`)
    WAIT    keep the words; the reply starts later (DRAFT)
    DRAFT   start the held reply on the words
    CANCEL  the caller went on: drop the hearing in flight or the held reply (a restart if it was drafted)
    SPEAK   the turn is over: end it with these words and let the held reply play
    END     the turn is over the strict way: drop anything speculative, hear the turn and answer as `strict`
    KEEP    strict, hearing early: the turn is over the strict way, and the kept words are its words
    ASK     strict with the model: ask it whether the turn is over (to `speech_end`)
    CLOSE   strict with the model: the turn is over now (as the VAD's turn end would end it), speech ended
            at `Step.speech_end`
(Under `progressive` with the model, HEAR asks the model too.)
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from app.bargein.words import normalize, unfinished

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
    # The end-of-turn model (TURN_END_MODEL): asked at the pause when on. P(complete) at or above
    # `complete_at` is a complete verdict, below `incomplete_below` an incomplete one, between them unsure.
    # Picked on the tuning pool at phone quality (python -m app.offline.eot_eval).
    model: bool = False
    complete_at: float = 0.5
    incomplete_below: float = 0.5
    # The recognizer's confidence in the words' last word under which they count as unfinished: Whisper writes
    # a full stop after most stretches cut mid-sentence ("... executed their melancholy office."), but it is
    # less sure of that last word there. On the pool (80 read sentences at phone quality, whole and cut at the
    # bench's pause point): below 0.4 are 3/80 whole sentences and 11/76 cut ones. 0 turns the cue off.
    unsure_confidence: float = 0.4
    # progressive: silence that ends a turn whose words and verdict both say complete.
    model_complete_silence_ms: float = 300.0
    # strict: the VAD's turn-end silence (TURN_END_SILENCE_MS), the deadline when the verdict is unsure.
    strict_silence_ms: float = 700.0
    # strict without the model: transcribe at the short pause, so the words are in when the turn ends.
    hear_early: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}")
        if not 0 < self.speculate_silence_ms <= self.complete_silence_ms <= self.unfinished_silence_ms:
            raise ValueError("want 0 < speculate_silence_ms <= complete_silence_ms <= unfinished_silence_ms")
        if self.draft_lead_ms < 0:
            raise ValueError("draft_lead_ms must be >= 0")
        if not 0.0 <= self.unsure_confidence <= 1.0:
            raise ValueError("unsure_confidence must be within 0-1")
        if not 0.0 <= self.incomplete_below <= self.complete_at <= 1.0:
            raise ValueError("want 0 <= incomplete_below <= complete_at <= 1")
        if self.model and not self.speculate_silence_ms <= self.model_complete_silence_ms \
                <= self.unfinished_silence_ms:
            raise ValueError("want speculate_silence_ms <= model_complete_silence_ms <= unfinished_silence_ms")

    @classmethod
    def from_settings(cls, settings: Settings, *, model: bool = False,
                      thresholds: tuple[float, float] | None = None) -> TurnTakingConfig:
        """`model`: an end-of-turn model is there to ask (the session's deps have one). `thresholds`: its own
        operating points (complete_at, incomplete_below), taken unless TURN_MODEL_COMPLETE_AT /
        TURN_MODEL_INCOMPLETE_BELOW were set (the defaults, 0.5, suit Smart Turn; the prosodic model's
        probabilities sit lower, and its fit picks its points, app/call/prosody.py)."""
        complete_at, incomplete_below = settings.turn_model_complete_at, settings.turn_model_incomplete_below
        if thresholds is not None:
            chosen = settings.model_fields_set
            if "turn_model_complete_at" not in chosen:
                complete_at = thresholds[0]
            if "turn_model_incomplete_below" not in chosen:
                incomplete_below = min(thresholds[1], complete_at)
        return cls(
            policy=settings.turn_policy,
            speculate_silence_ms=settings.turn_speculate_silence_ms,
            complete_silence_ms=settings.turn_complete_silence_ms,
            unfinished_silence_ms=settings.turn_unfinished_silence_ms,
            draft_lead_ms=settings.turn_draft_lead_ms,
            unsure_confidence=settings.turn_unsure_confidence,
            model=model,
            complete_at=complete_at,
            incomplete_below=incomplete_below,
            model_complete_silence_ms=max(settings.turn_speculate_silence_ms,
                                          settings.turn_model_complete_silence_ms),
            strict_silence_ms=settings.turn_end_silence_ms,
            hear_early=settings.turn_hear_early,
        )

    @property
    def takes_turns(self) -> bool:
        """The table has work to do: `progressive`, or `strict` with the model or hearing early."""
        return self.policy == "progressive" or self.model or self.hear_early

    @property
    def hears_early(self) -> bool:
        """`strict` without the model, hearing at the pause: the VAD's turn end is the turn's end."""
        return self.policy == "strict" and not self.model and self.hear_early

    def vad_turn_end_ms(self, strict_ms: float) -> float:
        """The VAD's turn-end silence under this policy: a backstop past every deadline, unless the VAD's turn
        end is the turn's end (`strict` without the model)."""
        if not self.takes_turns or self.hears_early:
            return strict_ms
        return max(strict_ms, self.unfinished_silence_ms)

    def verdict(self, p_complete: float | None) -> Literal["complete", "incomplete", "unsure"]:
        """The model's probability as a verdict (None: no answer)."""
        if p_complete is None or p_complete != p_complete:
            return "unsure"
        if p_complete >= self.complete_at:
            return "complete"
        return "incomplete" if p_complete < self.incomplete_below else "unsure"


# Last words a sentence does not end on, beyond app/bargein/words.py's (its list serves the barge-in side too):
# subordinators and relatives that open a clause, quantifiers and determiners that need a noun, auxiliaries and
# subject pronouns that need a verb, prepositions. Not the ones a sentence ends on ("what is this", "I'm done",
# "come in", "before").
UNFINISHED_EXTRA = frozenset({
    "until", "till", "unless", "whether", "which", "whose", "whom", "who", "where", "while", "when", "as",
    "although", "though", "since", "very", "such", "these", "those", "each", "every", "both", "either",
    "neither", "not", "be", "been", "being", "had", "has", "have", "will", "would", "could", "should", "can",
    "may", "might", "must", "shall", "he", "she", "they", "through", "toward", "towards", "between", "across",
    "against", "upon", "during", "without", "within", "among", "onto", "via", "per", "nor", "yet",
})


def looks_unfinished(text: str, last_confidence: float | None = None, unsure_confidence: float = 0.0) -> bool:
    """The words stop mid-clause: app/bargein/words.py `unfinished` (a trailing comma or ellipsis, or a last
    word a sentence does not end on), a last word of UNFINISHED_EXTRA, or the recognizer unsure of the last
    word (`last_confidence` under `unsure_confidence`: see TurnTakingConfig)."""
    if not text.strip():
        return False
    if unfinished(text):
        return True
    words = normalize(text).split()
    if words and words[-1] in UNFINISHED_EXTRA:
        return True
    return last_confidence is not None and last_confidence < unsure_confidence


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
    last_confidence: float | None = None  # the recognizer's in the last word (app/call/hearing.py)


@dataclass(frozen=True)
class TurnOver:
    """The VAD's turn-end silence passed (the strict end)."""

    at: float


@dataclass(frozen=True)
class ModelVerdict:
    """The end-of-turn model's P(complete) for the turn up to `speech_end`; None when it gave none."""

    at: float
    speech_end: float
    p_complete: float | None


Input = Silence | Speech | WordsIn | TurnOver | ModelVerdict


class State(Enum):
    LISTENING = "listening"
    HEARING = "hearing"
    WAITING = "waiting"
    DRAFTING = "drafting"
    FALLBACK = "fallback"
    ASKING = "asking"
    HOLDING = "holding"
    HEARD = "heard"


class Obs(Enum):
    QUIET = "quiet"  # silence, nothing due
    PAUSED = "paused"  # silence reached speculate_silence_ms
    DUE = "due"  # silence reached the words' deadline
    DRAFT_DUE = "draft_due"  # silence reached the time to start the reply
    RESUMED = "resumed"
    WORDS_NOW = "words_now"  # words whose reply is due to start (their deadline is near, or passed)
    WORDS_LATER = "words_later"  # words whose deadline is far: the reply starts draft_lead_ms before it
    WORDS_KEPT = "words_kept"  # strict, hearing early: words for the current pause
    NO_WORDS = "no_words"  # the recognizer failed or heard nothing
    STALE = "stale"  # words for a pause that is no longer the current one
    TURN_OVER = "turn_over"
    ASK_DUE = "ask_due"  # strict with the model: silence reached speculate_silence_ms
    SAYS_COMPLETE = "says_complete"  # the model's verdict for the current pause (strict)
    SAYS_INCOMPLETE = "says_incomplete"
    SAYS_UNSURE = "says_unsure"


class Action(Enum):
    NONE = "none"
    HEAR = "hear"
    WAIT = "wait"
    DRAFT = "draft"
    CANCEL = "cancel"
    SPEAK = "speak"
    END = "end"
    ASK = "ask"
    CLOSE = "close"
    KEEP = "keep"


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
    # strict with the model (under progressive the verdict only moves the words' deadline: DUE, DRAFT_DUE)
    (S.LISTENING, O.ASK_DUE): (S.ASKING, A.ASK),
    (S.ASKING, O.SAYS_COMPLETE): (S.LISTENING, A.CLOSE),
    (S.ASKING, O.SAYS_INCOMPLETE): (S.HOLDING, A.NONE),  # deadline: the ceiling
    (S.ASKING, O.SAYS_UNSURE): (S.HOLDING, A.NONE),  # deadline: the strict silence
    (S.ASKING, O.DUE): (S.LISTENING, A.CLOSE),  # the model is later than the strict silence: as without it
    (S.ASKING, O.RESUMED): (S.LISTENING, A.CANCEL),
    (S.ASKING, O.TURN_OVER): (S.LISTENING, A.END),
    (S.HOLDING, O.DUE): (S.LISTENING, A.CLOSE),
    (S.HOLDING, O.RESUMED): (S.LISTENING, A.NONE),
    (S.HOLDING, O.TURN_OVER): (S.LISTENING, A.END),
    # strict, hearing early: the words wait for the VAD's turn end (the recognizer later than it: heard again)
    (S.HEARING, O.WORDS_KEPT): (S.HEARD, A.WAIT),
    (S.HEARD, O.RESUMED): (S.LISTENING, A.CANCEL),
    (S.HEARD, O.TURN_OVER): (S.LISTENING, A.KEEP),
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
    speech_end: float | None = None  # CLOSE: the caller's last speech (the turn gap runs from it)


class TurnTaker:
    """One call's turn-taking state (see the module docstring). `feed` every input; act on `Step.action`."""

    def __init__(self, config: TurnTakingConfig) -> None:
        self.config = config
        self.state = State.LISTENING
        self.speech_end: float | None = None  # the pause being heard or drafted on: the caller's last speech
        self.deadline: float | None = None
        self.text = ""  # the drafted words
        self.last_confidence: float | None = None  # ... and the recognizer's confidence in their last word
        # Counters for the restart rate: drafts started, and those cancelled because the caller went on.
        self.drafts = 0
        self.restarts = 0
        self.spoken = 0  # drafts spoken (counted by the session, which does the speaking)
        self.hearings_dropped = 0  # transcriptions abandoned before their words came (cheap: no LLM yet)
        self.p_complete: float | None = None  # the model's answer for the pause in hand (None: none yet)
        self.verdicts: dict[str, int] = {"complete": 0, "incomplete": 0, "unsure": 0}  # verdicts taken

    @property
    def draft_at(self) -> float | None:
        """While WAITING: when the reply is started if the caller stays silent."""
        if self.state is not State.WAITING or self.deadline is None:
            return None
        return self.deadline - self.config.draft_lead_ms / 1000.0

    def feed(self, event: Input) -> Step:
        if isinstance(event, ModelVerdict) and self._current(event.speech_end):
            self._take_verdict(event)
        obs = self._classify(event)
        previous = self.state
        state, action = TRANSITIONS.get((previous, obs), (previous, Action.NONE))
        speech_end = self.speech_end
        if action in (Action.HEAR, Action.ASK):
            assert isinstance(event, Silence)
            self.speech_end = speech_end = event.speech_end
            self.p_complete = None
            if action is Action.ASK:  # until the verdict: the strict silence, as without the model
                self.deadline = event.speech_end + self.config.strict_silence_ms / 1000.0
        elif isinstance(event, WordsIn) and action in (Action.DRAFT, Action.WAIT):
            self.text, self.last_confidence = event.text, event.last_confidence
            if state is not State.HEARD:  # strict: the VAD's turn end is the deadline
                self.deadline = self._deadline(event.speech_end, event.text)
        if action is Action.DRAFT:
            self.drafts += 1
        elif action is Action.CANCEL:
            if previous is State.DRAFTING:
                self.restarts += 1
            elif previous is not State.ASKING:
                self.hearings_dropped += 1
        if state is State.LISTENING:
            self.speech_end = self.deadline = self.p_complete = None
            if action not in (Action.SPEAK, Action.KEEP):
                self.text, self.last_confidence = "", None
        self.state = state
        return Step(action, state, previous, obs, self.deadline, speech_end if action is Action.CLOSE else None)

    def _current(self, speech_end: float) -> bool:
        return self.speech_end is not None and abs(speech_end - self.speech_end) <= 1e-9

    def _take_verdict(self, event: ModelVerdict) -> None:
        """The model answered for the pause in hand: keep it, and move the deadline it sets."""
        self.p_complete = event.p_complete
        verdict = self.config.verdict(event.p_complete)
        self.verdicts[verdict] += 1
        cfg = self.config
        if self.state is State.ASKING:
            ceiling = max(cfg.unfinished_silence_ms, cfg.strict_silence_ms)  # never sooner than without the model
            wait = ceiling if verdict == "incomplete" else cfg.strict_silence_ms
            self.deadline = event.speech_end + wait / 1000.0
        elif self.state in (State.WAITING, State.DRAFTING):
            self.deadline = self._deadline(event.speech_end, self.text)

    def _classify(self, event: Input) -> Obs:
        cfg = self.config
        match event:
            case Silence(at=at, speech_end=speech_end):
                if self.state in (State.WAITING, State.DRAFTING) and self.deadline is not None:
                    if at >= self.deadline - 1e-6:
                        return Obs.DUE
                    if self.state is State.WAITING and at >= self.deadline - cfg.draft_lead_ms / 1000.0 - 1e-6:
                        return Obs.DRAFT_DUE
                if self.state in (State.ASKING, State.HOLDING) and self.deadline is not None \
                        and at >= self.deadline - 1e-6:
                    return Obs.DUE
                if (at - speech_end) * 1000.0 >= cfg.speculate_silence_ms - 1e-6:
                    if cfg.policy == "progressive" or cfg.hears_early:
                        return Obs.PAUSED
                    if cfg.model:
                        return Obs.ASK_DUE
                return Obs.QUIET
            case Speech():
                return Obs.RESUMED
            case WordsIn(speech_end=speech_end, text=text, ok=ok, last_confidence=confidence):
                if self.state is not State.HEARING or not self._current(speech_end):
                    return Obs.STALE
                if not ok or not text.strip():
                    return Obs.NO_WORDS
                if cfg.hears_early:
                    return Obs.WORDS_KEPT
                draft_at = self._deadline(speech_end, text, confidence) - cfg.draft_lead_ms / 1000.0
                return Obs.WORDS_NOW if event.at >= draft_at - 1e-6 else Obs.WORDS_LATER
            case ModelVerdict(at=at, speech_end=speech_end):
                if not self._current(speech_end):
                    return Obs.STALE
                if self.state is State.ASKING:
                    return {"complete": Obs.SAYS_COMPLETE, "incomplete": Obs.SAYS_INCOMPLETE,
                            "unsure": Obs.SAYS_UNSURE}[cfg.verdict(self.p_complete)]
                # progressive: the deadline it moved may be here already, or the time to start the reply
                if self.state in (State.WAITING, State.DRAFTING) and self.deadline is not None:
                    if at >= self.deadline - 1e-6:
                        return Obs.DUE
                    if self.state is State.WAITING and at >= self.deadline - cfg.draft_lead_ms / 1000.0 - 1e-6:
                        return Obs.DRAFT_DUE
                return Obs.QUIET
            case TurnOver():
                return Obs.TURN_OVER
            case _:
                typing.assert_never(event)

    def _deadline(self, speech_end: float, text: str, confidence: float | None = None) -> float:
        """When the turn is over if the caller stays silent: the silence its words (and the model's verdict,
        if there is one yet) call for. `confidence`: the last word's, when not the kept words'."""
        cfg = self.config
        verdict = cfg.verdict(self.p_complete) if cfg.model else "unsure"
        if confidence is None and text == self.text:
            confidence = self.last_confidence
        if looks_unfinished(text, confidence, cfg.unsure_confidence) or verdict == "incomplete":
            silence = cfg.unfinished_silence_ms
        elif verdict == "complete":
            silence = cfg.model_complete_silence_ms
        else:
            silence = cfg.complete_silence_ms
        return speech_end + silence / 1000.0

    def reset(self) -> None:
        """The turn ended some other way (a key, the call): forget any pause in hand."""
        self.state = State.LISTENING
        self.speech_end = self.deadline = self.p_complete = None
        self.text, self.last_confidence = "", None
