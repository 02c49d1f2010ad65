"""Barge-in policy: what the agent does about the caller's speech, as one state table.

Theory of operation
-------------------
`CallVad` says when the caller makes speech-like sound; this module decides what it means for the
conversation. It holds the state of one candidate at a time (from the VAD's SpeechStarted until it is
settled), reads no clock (every input carries its time) and does no I/O: it returns actions, and the
session carries them out (`app/call/session.py`).

A candidate is first a guess: Silero has been sure for 64 ms, which a cough, the agent's own echo or an
"uh-huh" can also do. Three things settle it:

- the **second look** (`Verdict`): once `WINDOW_MS` of the candidate has arrived, the session runs the
  impulsive-noise stage (`impulse.py`) and the echo guard's residual check (`echo.py`) over it: speech,
  noise or echo;
- the **length** of the utterance: speech that pauses (the VAD's `SpeechPaused`) before
  `backchannel_max_ms` is a backchannel ("mm-hmm", "yeah"); speech that goes on past it is the caller
  taking the turn (`Long`);
- the **words**, once a recognizer gives them (`Words`): "wait", "stop", "no" take the turn at once, a
  backchannel word never does. Until then the acoustic decision stands.

A keypress (`Keypress`, DTMF) over the talking agent is as sure as words: it stops the agent at once
(setting `DTMF_INTERRUPTS`), except inside an uninterruptible span. The keys themselves are the session's
to collect into the caller's turn.

Policies (settings `BARGEIN_POLICY`) differ only in what a candidate does while the agent talks:

- `immediate`: stop the agent at once and end its turn (no second look; the fastest, the most false stops);
- `resume`: pause at once (the provider's clear goes out as before), then settle: the caller taking the
  turn ends the agent's turn; echo, a too-short sound or a backchannel resume it from where the caller
  stopped hearing it (a short pause, not a lost turn). A sound the second look calls noise is resumed
  when it ends, and counts as the caller after all if it goes on past `doubt_max_ms` (a quiet or muffled
  talker can look like noise for 160 ms; a noise that goes on a whole second is rarely one the second
  look catches anyway);
- `confirm`: send nothing until the second look says speech (or a sound it called noise outlasts
  `doubt_max_ms`), then pause as `resume` does: slower by the second look's window, but echo and the
  noise it catches never cause a clear.

On a line where the agent's own echo comes back (the echo guard has locked onto an echo path in this call),
for `cautious_s` after a stop that turned out to be noise or echo, and for a candidate the first look
(`first_look.py`, its first 64 ms as it fires) calls doubtful, `resume` confirms before it clears,
as `confirm` does: echo that gets past the guard must not cause a clear. On such a line a repeated short
utterance does not escalate either: the echo of the resumed audio would look exactly like one.

... unless the guard vouches for the candidate (`Candidate.echo_share`: its estimate is trustworthy, and the
share of echo in the candidate so far is under `echo_clear_share`): then the candidate is not the agent's
echo, and both `resume` and `confirm` pause at once, as `resume` does on a plain line, and settle it the same
way (the second look still runs: a too-short sound resumes). Waiting for the second look cost every
caller on a speakerphone ~160 ms of candidate plus the check (issue 12: double talk onset->clear p50
~400 ms live), and the echo it guards against is what the guard has just ruled out. What the vouching does
not rule out is noise over the echo: a noise the guard calls "not echo" pauses at once too, and is resumed
when the second look calls it noise (a false clear that `confirm` alone would not send). Not within
`cautious_s` after a stop that turned out to be noise or echo (that sound tends to go on). When the second look
then calls a vouched candidate echo, the guard has said both: the candidate is doubted as a noise is (resumed
when it pauses, the caller's if it goes on past `doubt_max_ms`), not resumed at once. The clear has stopped
the agent's audio, so its echo dies away within the echo path's delay and tail and pauses; a caller goes on.
(Live, resuming at once resumed the agent over callers the guard had vouched for, then read as echo: the
filter adapting on a caller near the echo's level, see echo.py's limits.)

Measured (bench, speakerphone preset, report set, 20 calls at once, twilio / plivo; ECHO_CLEAR_SHARE=0 is the
table before vouching): echo-only self-stops 0/30 each in every run, vouching or not; double talk, sentences
(read and oration) detected 31+33 and 34+34 of 41+41 without vouching (two runs) against 36+38 and 31+37 with
it (34+35 before the echo-doubted row), onset->clear p50 338-394 ms against 312-374 ms, clears within 250 ms
15/164 against 45/246. Vouching cleared first on most detected sentences (53 of 74 in one run), but the
candidate itself comes late on such a line (vouched clears: p50 320 ms from the onset mark): the guard
attenuates the caller's first frames it reads as echo, and the VAD hears the caller late (offline, without the
attenuation: -6 dB p50 235 -> 166 ms, but noise over the echo cleared in 56/96 calls against 10/96). Noise over
the echo: 5 and 6 calls of 190 with a clear without vouching, 5, 8 and 8 with; of those, 2 and 1 (the two runs
recorded) were noise only the vouching cleared (the second look called it noise), the rest the second look
called speech (they clear under `confirm` too). On the tuning pool (echo_eval --live-checks, caller 0.3 s into
the reply): -6 dB p50 235 -> 144 ms, the rest unchanged (see PolicyConfig.echo_clear_share).

A candidate while the agent is inside an uninterruptible span (a legal notice, a read-back) is either
ignored or acted on when the span ends (`uninterruptible`). A short utterance soon after a resume
(`escalate_s`) is not a second backchannel: a caller who says "stop" twice is heard the second time.

States (of the candidate; the agent's own talking is the session's to know)::

    IDLE       no candidate open
    PENDING    confirm policy: a candidate is being examined, nothing sent yet
    PAUSED     the clear went out; the second look is not in yet
    HEARING    the clear went out; it is speech: a backchannel, or the caller taking the turn?
    DOUBTED    the clear went out; the second look said noise (or echo, of a vouched candidate): over soon
               (resume), or the caller after all
    DOUBTED_PENDING  the same under `confirm`, with nothing sent yet
    DEFERRED   speech during an uninterruptible span: acted on when the span ends
    DEFERRED_ENDED  ... and that speech was a whole turn, already over: the agent answers it at the span's end
    CALLER     the caller has the turn; it ends on the VAD's turn-end silence

Every transition is a row of TRANSITIONS (with ON_CANDIDATE choosing the policy's row for a candidate over
the agent). Inputs are first classified (`_classify`) into an Observation; conditions live there and
nowhere else.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from app.bargein.words import STOPS_THE_AGENT, interruption

if typing.TYPE_CHECKING:
    from app.settings import Settings

Policy = Literal["immediate", "confirm", "resume"]
POLICIES: tuple[Policy, ...] = ("immediate", "confirm", "resume")


@dataclass(frozen=True)
class PolicyConfig:
    """Every threshold of the decision (settings BARGEIN_*; presets pick them by channel)."""

    policy: Policy = "resume"
    # Speech shorter than this that pauses is a backchannel. Measured on the tuning pool: isolated digits
    # (the nearest stand-in for "yeah", "okay") last 250-550 ms of speech; read sentences pass 700 ms.
    backchannel_max_ms: float = 600.0
    # A candidate the second look called noise is still the caller's if it goes on this long: a quiet or
    # muffled talker can look like noise for 160 ms, and a noise that lasts a second is rare (music is the
    # usual one, and the second look does not catch it anyway).
    doubt_max_ms: float = 1000.0
    # A second short utterance this soon after a resume stops the agent: "stop ... stop!".
    escalate_s: float = 4.0
    # After a stop that turned out to be noise or echo, candidates are confirmed before any clear for this
    # long: a sound that fooled the detector once (music, dishes, a fan) tends to go on, and a clear every
    # quarter second would stutter the agent.
    cautious_s: float = 3.0
    uninterruptible: Literal["ignore", "defer"] = "defer"
    # On an echo line, a candidate whose echo share (from a trusted guard) is under this is vouched for: it
    # pauses at once under `resume` and `confirm`. 0: never. Measured on the tuning pool (echo_eval
    # --live-checks --clear-share, caller 0.3 s into the reply): echo-only candidates of a trusted guard read
    # 1.00 when raised (29 of 29, 72 calls), so 0.5 (the caller carries most of the energy) leaves a wide
    # margin; double talk at -6 dB p50 235 -> 223 ms at 0.35, 144 ms at 0.5 and 0.6, detection 18/20 all;
    # noise over echo 10/96 calls with a clear at 0, 0.35, 0.5 and 0.6 alike; echo-only 0/54 all.
    echo_clear_share: float = 0.5

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}")
        if min(self.backchannel_max_ms, self.doubt_max_ms, self.escalate_s, self.cautious_s) < 0:
            raise ValueError("backchannel_max_ms, doubt_max_ms, escalate_s and cautious_s must be >= 0")
        if not 0.0 <= self.echo_clear_share <= 1.0:
            raise ValueError("echo_clear_share must be in [0, 1]")

    @classmethod
    def from_settings(cls, settings: Settings) -> PolicyConfig:
        return cls(
            policy=settings.bargein_policy,
            backchannel_max_ms=settings.bargein_backchannel_max_ms,
            doubt_max_ms=settings.bargein_doubt_max_ms,
            escalate_s=settings.bargein_escalate_s,
            cautious_s=settings.bargein_cautious_s,
            uninterruptible=settings.bargein_uninterruptible,
            echo_clear_share=settings.echo_clear_share,
        )


# --- inputs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """The VAD's SpeechStarted: sustained speech-like sound began at `speech_start`."""

    at: float
    speech_start: float
    agent_speaking: bool
    in_uninterruptible: bool = False
    echo_possible: bool = False  # the agent's own echo is on the line (the echo guard has locked onto it)
    # The share of echo in the candidate so far (EchoGuard.echo_share from speech_start), when the guard's
    # estimate is trustworthy (EchoGuard.trusted); None: no guard, or not trusted. Low: the guard vouches.
    echo_share: float | None = None
    # The first look (first_look.py) at the candidate's first 64 ms, as it fires, says it sounds like a cough, a
    # sneeze or a laugh: `resume` confirms it before it clears, as `confirm` does.
    doubtful: bool = False


@dataclass(frozen=True)
class Verdict:
    """The second look at the candidate's first window: what the sound is."""

    at: float
    kind: Literal["speech", "noise", "echo"]


@dataclass(frozen=True)
class Paused:
    """The caller's speech stopped (VAD SpeechPaused) after `speech_ms` of speech."""

    at: float
    speech_ms: float


@dataclass(frozen=True)
class Progress:
    """Time passes with the caller still speaking (`speech_ms` so far): checked on every frame and tick."""

    at: float
    speech_ms: float


@dataclass(frozen=True)
class TurnEnd:
    """The VAD's turn-end silence (SpeechStopped): the caller's turn is over."""

    at: float


@dataclass(frozen=True)
class SpanEnded:
    """The agent's uninterruptible span finished playing."""

    at: float


@dataclass(frozen=True)
class Words:
    """The seam for the recognizer: what the caller said in the candidate so far."""

    at: float
    text: str


@dataclass(frozen=True)
class Keypress:
    """A DTMF key from the caller (`interrupts`: DTMF_INTERRUPTS is on)."""

    at: float
    agent_speaking: bool
    in_uninterruptible: bool = False
    interrupts: bool = True


Input = Candidate | Verdict | Paused | Progress | TurnEnd | SpanEnded | Words | Keypress


# --- the table --------------------------------------------------------------------------------------
class State(Enum):
    IDLE = "idle"
    PENDING = "pending"
    PAUSED = "paused"
    HEARING = "hearing"
    DOUBTED = "doubted"
    DOUBTED_PENDING = "doubted_pending"
    DEFERRED = "deferred"
    DEFERRED_ENDED = "deferred_ended"
    CALLER = "caller"


class Obs(Enum):
    CANDIDATE = "candidate"  # over the agent
    CANDIDATE_CAUTIOUS = "candidate_cautious"  # ... soon after a stop that was noise or echo, or doubtful
    CANDIDATE_VOUCHED = "candidate_vouched"  # ... on an echo line, and the echo guard vouches it is not echo
    CANDIDATE_QUIET_AGENT = "candidate_quiet_agent"  # the agent is silent: the caller simply speaks
    CANDIDATE_IN_SPAN = "candidate_in_span"  # the agent is in an uninterruptible span, speech is deferred
    CANDIDATE_IGNORED = "candidate_ignored"  # ... and such speech is ignored
    SPEECH = "speech"
    NOISE = "noise"  # the second look: not speech
    ECHO = "echo"  # the second look: the agent's own voice
    ECHO_DOUBTED = "echo_doubted"  # ... of a candidate the guard had vouched for: doubted, not resumed at once
    SHORT = "short"  # the speech paused before backchannel_max_ms
    SHORT_AGAIN = "short_again"  # ... within escalate_s of the last resume
    LONG = "long"  # the speech went on past backchannel_max_ms (doubt_max_ms once called noise)
    STOP_WORDS = "stop_words"
    BACKCHANNEL_WORDS = "backchannel_words"
    KEY = "key"  # a DTMF key while the agent talks (and keys interrupt)
    TURN_END = "turn_end"
    SPAN_END = "span_end"
    NOTHING = "nothing"


class Action(Enum):
    NONE = "none"
    PAUSE = "pause"  # send the clear, hold the agent's turn (its LLM and TTS go on, its audio waits)
    STOP = "stop"  # end the agent's turn: clear (if not yet), stop TTS, close the LLM, cut at the heard text
    RESUME = "resume"  # send the unheard rest again, re-arm the VAD: the candidate was not the caller's turn
    REARM = "rearm"  # nothing was sent: forget the candidate, re-arm the VAD
    CALLER_TURN = "caller_turn"  # the caller started a turn (the agent was silent)
    END_CALLER_TURN = "end_caller_turn"  # the caller's turn is over: the agent may answer


S, O, A = State, Obs, Action  # noqa: E741 - short names keep the table one row per line

# What a candidate over the talking agent does, by policy (the one row that differs between them).
ON_CANDIDATE: dict[Policy, tuple[State, Action]] = {
    "immediate": (S.CALLER, A.STOP),
    "resume": (S.PAUSED, A.PAUSE),
    "confirm": (S.PENDING, A.NONE),
}

_SETTLE_AS_CALLER = (S.CALLER, A.STOP)
TRANSITIONS: dict[tuple[State, Obs], tuple[State, Action]] = {
    # no candidate open
    (S.IDLE, O.CANDIDATE_QUIET_AGENT): (S.CALLER, A.CALLER_TURN),
    (S.IDLE, O.CANDIDATE_CAUTIOUS): (S.PENDING, A.NONE),
    # resume and confirm alike: the echo they wait to rule out is ruled out; settled as resume settles
    (S.IDLE, O.CANDIDATE_VOUCHED): (S.PAUSED, A.PAUSE),
    (S.IDLE, O.CANDIDATE_IGNORED): (S.IDLE, A.REARM),
    (S.IDLE, O.CANDIDATE_IN_SPAN): (S.DEFERRED, A.NONE),
    (S.IDLE, O.TURN_END): (S.IDLE, A.END_CALLER_TURN),
    # A key stops the agent; the caller's turn is the keys', ended by the session when they stop coming.
    (S.IDLE, O.KEY): (S.IDLE, A.STOP),
    # Words that come after the agent resumed over a short utterance ("stop" sounds like "okay"): stop now.
    (S.IDLE, O.STOP_WORDS): (S.IDLE, A.STOP),
    # confirm: examined before anything is sent
    (S.PENDING, O.SPEECH): (S.HEARING, A.PAUSE),
    (S.PENDING, O.NOISE): (S.DOUBTED_PENDING, A.NONE),
    (S.PENDING, O.ECHO): (S.IDLE, A.REARM),
    (S.PENDING, O.SHORT): (S.IDLE, A.REARM),  # over before the second look: too short to be a turn
    (S.PENDING, O.SHORT_AGAIN): (S.IDLE, A.REARM),
    (S.PENDING, O.STOP_WORDS): _SETTLE_AS_CALLER,
    (S.PENDING, O.KEY): _SETTLE_AS_CALLER,
    (S.PENDING, O.BACKCHANNEL_WORDS): (S.IDLE, A.REARM),
    (S.PENDING, O.TURN_END): (S.IDLE, A.REARM),
    # paused at once (resume), second look not in yet
    (S.PAUSED, O.SPEECH): (S.HEARING, A.NONE),
    (S.PAUSED, O.NOISE): (S.DOUBTED, A.NONE),
    (S.PAUSED, O.ECHO): (S.IDLE, A.RESUME),  # echo goes on while the agent talks: waiting would not end it
    (S.PAUSED, O.ECHO_DOUBTED): (S.DOUBTED, A.NONE),  # the guard said both: echo pauses once cleared, a caller not
    (S.PAUSED, O.SHORT): (S.IDLE, A.RESUME),
    (S.PAUSED, O.SHORT_AGAIN): _SETTLE_AS_CALLER,
    (S.PAUSED, O.STOP_WORDS): _SETTLE_AS_CALLER,
    (S.PAUSED, O.KEY): _SETTLE_AS_CALLER,
    (S.PAUSED, O.BACKCHANNEL_WORDS): (S.IDLE, A.RESUME),
    (S.PAUSED, O.TURN_END): (S.IDLE, A.RESUME),
    # paused, and it is speech: a backchannel or the caller's turn
    (S.HEARING, O.SHORT): (S.IDLE, A.RESUME),
    (S.HEARING, O.SHORT_AGAIN): _SETTLE_AS_CALLER,
    (S.HEARING, O.LONG): _SETTLE_AS_CALLER,
    (S.HEARING, O.STOP_WORDS): _SETTLE_AS_CALLER,
    (S.HEARING, O.KEY): _SETTLE_AS_CALLER,
    (S.HEARING, O.BACKCHANNEL_WORDS): (S.IDLE, A.RESUME),
    (S.HEARING, O.TURN_END): (S.IDLE, A.RESUME),
    # called noise: resumed when it ends, the caller's after all if it goes on
    (S.DOUBTED, O.SHORT): (S.IDLE, A.RESUME),
    (S.DOUBTED, O.SHORT_AGAIN): (S.IDLE, A.RESUME),
    (S.DOUBTED, O.LONG): _SETTLE_AS_CALLER,
    (S.DOUBTED, O.STOP_WORDS): _SETTLE_AS_CALLER,
    (S.DOUBTED, O.KEY): _SETTLE_AS_CALLER,
    (S.DOUBTED, O.BACKCHANNEL_WORDS): (S.IDLE, A.RESUME),
    (S.DOUBTED, O.TURN_END): (S.IDLE, A.RESUME),
    (S.DOUBTED_PENDING, O.SHORT): (S.IDLE, A.REARM),
    (S.DOUBTED_PENDING, O.SHORT_AGAIN): (S.IDLE, A.REARM),
    (S.DOUBTED_PENDING, O.LONG): _SETTLE_AS_CALLER,
    (S.DOUBTED_PENDING, O.STOP_WORDS): _SETTLE_AS_CALLER,
    (S.DOUBTED_PENDING, O.KEY): _SETTLE_AS_CALLER,
    (S.DOUBTED_PENDING, O.BACKCHANNEL_WORDS): (S.IDLE, A.REARM),
    (S.DOUBTED_PENDING, O.TURN_END): (S.IDLE, A.REARM),
    # speech during an uninterruptible span, acted on when the span ends (a backchannel is let go)
    (S.DEFERRED, O.SHORT): (S.IDLE, A.REARM),
    (S.DEFERRED, O.BACKCHANNEL_WORDS): (S.IDLE, A.REARM),
    (S.DEFERRED, O.SPAN_END): _SETTLE_AS_CALLER,
    (S.DEFERRED, O.TURN_END): (S.DEFERRED_ENDED, A.NONE),
    (S.DEFERRED_ENDED, O.SPAN_END): (S.IDLE, A.STOP),  # IDLE after STOP: the caller's turn is already over
    # the caller has the turn until the turn-end silence
    (S.CALLER, O.TURN_END): (S.IDLE, A.END_CALLER_TURN),
}
# Every pair not in the table leaves the state as it is and does nothing (e.g. a verdict that comes in after
# the candidate settled, or the VAD's progress while nothing is open).
del S, O, A



@dataclass(frozen=True)
class Step:
    """The policy's answer to one input."""

    action: Action
    state: State
    previous: State
    observation: Obs
    reason: str  # why a candidate settled the way it did: "noise", "echo", "backchannel", "short", ...


class BargeInPolicy:
    """One call's barge-in decision: feed inputs, carry out the returned action."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self.state = State.IDLE
        self.speech_start = 0.0  # of the open candidate
        self.candidate_at = 0.0
        self.verdict: str | None = None  # the open candidate's second look, once in
        self._last_resume_at: float | None = None
        self._last_false_at: float | None = None  # the last resume for noise or echo
        self._echo_line = False  # the open candidate came while the agent's echo could be on the line
        self._vouched = False  # the open candidate was vouched for by the echo guard (CANDIDATE_VOUCHED)

    @property
    def open(self) -> bool:
        """A candidate over the agent is being settled (the agent's turn must not be closed meanwhile)."""
        return self.state in (State.PENDING, State.PAUSED, State.HEARING, State.DOUBTED, State.DOUBTED_PENDING,
                              State.DEFERRED, State.DEFERRED_ENDED)

    @property
    def holding(self) -> bool:
        """The clear went out and the agent's turn waits to be resumed or ended."""
        return self.state in (State.PAUSED, State.HEARING, State.DOUBTED)

    @property
    def timing(self) -> bool:
        """The open candidate settles on how long it goes on: feed Progress while the caller speaks."""
        return self.state in (State.HEARING, State.DOUBTED, State.DOUBTED_PENDING)

    @property
    def awaiting_verdict(self) -> bool:
        """The open candidate still needs its second look."""
        return self.state in (State.PENDING, State.PAUSED) and self.verdict is None

    def needs_verdict(self, now: float, window_s: float) -> bool:
        """The open candidate's second look is due by the clock: its first window should have arrived."""
        return self.awaiting_verdict and now - self.speech_start >= window_s - 1e-9

    def feed(self, event: Input) -> Step:
        obs, reason = self._classify(event)
        previous = self.state
        if obs is Obs.CANDIDATE and previous is State.IDLE:
            self.state, action = ON_CANDIDATE[self.config.policy]
        else:
            self.state, action = TRANSITIONS.get((previous, obs), (previous, Action.NONE))
        if isinstance(event, Candidate) and previous is State.IDLE:
            self.speech_start, self.candidate_at, self.verdict = event.speech_start, event.at, None
            self._echo_line = event.echo_possible
            self._vouched = obs is Obs.CANDIDATE_VOUCHED
        if isinstance(event, Verdict) and previous in (State.PENDING, State.PAUSED):
            self.verdict = event.kind
        if action is Action.RESUME:
            self._last_resume_at = event.at
        if action is Action.RESUME and (previous is State.DOUBTED or reason == "echo"):
            self._last_false_at = event.at
        if action is Action.STOP or self.state is State.CALLER:
            self._last_resume_at = None
        return Step(action, self.state, previous, obs, reason)

    @property
    def _long_ms(self) -> float:
        """How long the open candidate must go on to be the caller taking the turn."""
        doubted = self.verdict == "noise" or (self.verdict == "echo" and self._vouched)
        return self.config.doubt_max_ms if doubted else self.config.backchannel_max_ms

    def _classify(self, event: Input) -> tuple[Obs, str]:
        cfg = self.config
        match event:
            case Candidate(agent_speaking=False):
                return Obs.CANDIDATE_QUIET_AGENT, "caller"
            case Candidate(in_uninterruptible=True):
                if self.state is not State.IDLE:
                    return Obs.NOTHING, ""
                # "ignore" lets the span finish and forgets the speech; "defer" acts on it at the span's end
                ignored = cfg.uninterruptible == "ignore"
                return (Obs.CANDIDATE_IGNORED if ignored else Obs.CANDIDATE_IN_SPAN), "uninterruptible"
            case Candidate():
                burnt = self._last_false_at is not None and event.at - self._last_false_at <= cfg.cautious_s
                if (event.echo_possible and not burnt and cfg.policy != "immediate"
                        and event.echo_share is not None and event.echo_share < cfg.echo_clear_share):
                    return Obs.CANDIDATE_VOUCHED, "vouched"
                if cfg.policy == "resume" and (event.echo_possible or burnt):
                    return Obs.CANDIDATE_CAUTIOUS, "cautious"
                if cfg.policy == "resume" and event.doubtful:
                    return Obs.CANDIDATE_CAUTIOUS, "doubtful"
                return Obs.CANDIDATE, "candidate"
            case Verdict(kind="speech"):
                return Obs.SPEECH, "speech"
            case Verdict(kind="echo"):
                if self._vouched and self.state is State.PAUSED:
                    return Obs.ECHO_DOUBTED, "echo"
                return Obs.ECHO, "echo"
            case Verdict():
                return Obs.NOISE, "noise"
            case Paused(speech_ms=speech_ms):
                if speech_ms >= self._long_ms:
                    return Obs.NOTHING, ""  # a long utterance pausing: LONG already settled it
                if self.verdict == "noise":
                    return Obs.SHORT, "noise"
                if self.verdict == "echo" and self._vouched:
                    return Obs.SHORT, "echo"
                again = (not self._echo_line and self._last_resume_at is not None
                         and event.at - self._last_resume_at <= cfg.escalate_s)
                if again:
                    return Obs.SHORT_AGAIN, "repeated"
                return Obs.SHORT, "backchannel" if self.verdict == "speech" else "short"
            case Progress(speech_ms=speech_ms):
                return (Obs.LONG, "caller") if speech_ms >= self._long_ms else (Obs.NOTHING, "")
            case TurnEnd():
                return Obs.TURN_END, "turn_end"
            case SpanEnded():
                return Obs.SPAN_END, "span_end"
            case Keypress(agent_speaking=True, in_uninterruptible=False, interrupts=True):
                return Obs.KEY, "dtmf"
            case Keypress():
                return Obs.NOTHING, ""
            case Words(text=text):
                # The kinds are words.py's; a redirect (a new question) is left to the sound (LONG), so a
                # recognizer's guess at a noise never stops the agent by itself.
                kind = interruption(text)
                if kind == "backchannel":
                    return Obs.BACKCHANNEL_WORDS, kind
                if kind in STOPS_THE_AGENT:
                    return Obs.STOP_WORDS, kind
                return Obs.NOTHING, ""
        return Obs.NOTHING, ""  # pragma: no cover - every input type is matched above
