"""The barge-in handling of a call: from a VAD event (or a key) to the provider's clear, and stop or resume.

Theory of operation
-------------------
Every barge-in transition is decided by the pure policy table (`BargeInPolicy`, app/bargein/detector.py);
this module acts on its answers for one call. A VAD event becomes a policy input (`_on_vad`): an onset is a
`Candidate` carrying whether the agent is talking, whether the caller is hearing an uninterruptible span
(`_in_span`, from the playback ledger's heard position) and what the echo guard says of it; the end of the
caller's speech is a `TurnEnd`. While a candidate is open, `_settle` feeds the rest: the caller's pauses, the
second look at the candidate's first window (`_second_look`: the caller, an impulsive noise, or the agent's
own echo), its growing length, the end of a span.

`_decide` carries out each step:
- PAUSE: `_flush` sends the provider's clear before any other await (nothing may delay it, and it never
  waits behind queued audio), takes the heard position as of the clear and drops the queued audio; the agent's
  turn is held (it keeps producing, queues nothing) as a `Held` stop;
- STOP: the caller takes the turn: clear first if nothing was paused, then the turn's TTS stops, its LLM stream
  closes, tool mutations in flight are cancelled, and the agent's turn is cut at the last character the caller
  heard; the caller's turn opens;
- RESUME: the candidate was not the caller taking the turn: the agent goes on from the start of the word the
  caller stopped hearing; short speech is still transcribed (`_late_words`), and its words may stop the agent
  after all ("stop" sounds like "okay" for half a second), also when the second look called it a noise
  (`LATE_WORDS_AFTER`: a bare "stop" opens on hiss and a burst);
- REARM, CALLER_TURN, END_CALLER_TURN: the VAD listens afresh, the caller's turn opens or ends.
A sound that never became a candidate can still stop the agent by its words: a near miss (a bare "stop" that
Silero held just under the bar, app/bargein/near_miss.py) is told by the VAD (`_on_near_miss`) and, within the
call's bounds, its words go down the late words' path (`_late_words`): the clear goes out only once they say stop
(stop and cancellation words only: `NEAR_MISS_KINDS`).
Each barge-in goes on the call's event stream (BargeInDecided, ClearSent, AudioDropped, BargeInHandled) after
its steps are done, so recording never delays the clear.

This is a mixin of `CallSession` (app/call/session.py says why); the session state it uses is declared below.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, assert_never

from app.bargein import first_look, impulse
from app.bargein.detector import (
    Action,
    Candidate,
    Input,
    Paused,
    Progress,
    SpanEnded,
    State,
    TurnEnd,
    Verdict,
    Words,
)
from app.bargein.near_miss import NearMissConfig, NearMissTracker
from app.bargein.playback import HeardPosition
from app.bargein.vad import NearMiss, SpeechStarted, SpeechStopped, VadEvent
from app.bargein.words import Kind, interruption
from app.call.events import (
    AudioDropped,
    BargeInDecided,
    BargeInHandled,
    ClearSent,
    InterruptionHeard,
    PolicyChanged,
    Transcribed,
)
from app.call.going_on import StopLeft, rest_from, whole_sentences
from app.call.turn import AgentTurn

if TYPE_CHECKING:
    import asyncio

    from app.bargein.detector import BargeInPolicy
    from app.bargein.echo import EchoGuard
    from app.bargein.playback import PlaybackLedger
    from app.bargein.vad import CallVad, SpeechPaused
    from app.call.events import CallEvents
    from app.call.hearing import Heard, Hearing
    from app.call.outbox import Outbox
    from app.call.session import CallDeps
    from app.call.tools import ToolRunner
    from app.call.turn import Cut
    from app.clock import Clock
    from app.transcript import CallRecord, Turn
    from providers.telephony.base import TelephonyProtocol

# The resumes after which the utterance's words are still heard (`_late_words`): a short sound the policy let the
# agent talk over. Not "echo" (the agent's own voice) nor "turn_end" / "span_end" (the caller's turn is settled).
LATE_WORDS_AFTER = frozenset({"backchannel", "short", "repeated", "noise"})
# The kinds of words (app/bargein/words.py) a near miss may stop the agent with: the stop and cancellation
# commands only. Decoded, the corpus pool's noise near misses (55 in 158 clips x 5 line conditions) came out as
# "You", "Oh.", "And..." or nothing, and 4 times as "What?" (a cough, a dog's bark): a clarification, which
# stops the agent when a candidate's words say it, but from a sound that was never a candidate it is a guess.
NEAR_MISS_KINDS: frozenset[Kind | None] = frozenset({"stop", "cancellation"})

# The session's log lines keep the session's logger name: this is a part of CallSession, and log filters (and
# tests' caplog) select its lines by that name.
logger = logging.getLogger("app.call.session")


def _pool_busy(stt: object) -> bool:
    """An embedded recognizer's pool (whisper: `pending` jobs on `workers` threads) has a job waiting for every
    worker already. One job ahead is let through: with the default single worker, "idle only" would skip nearly
    every near miss on a server with a few calls talking (measured: 4 of 15 tuning-voice near misses at two calls
    at a time), and one short decode ahead delays the words by about 0.1-0.3 s. A hosted recognizer has no pool."""
    pending, workers = getattr(stt, "pending", None), getattr(stt, "workers", None)
    if not isinstance(pending, int) or not isinstance(workers, int):
        return False
    return pending >= 2 * workers


@dataclass(slots=True)
class Held:
    """A provisional stop: the clear went out, the agent's turn waits to be resumed or ended."""

    id: str
    t0: float  # the deciding frame's arrival
    t_clear: float
    t_drop: float
    heard: HeardPosition
    turn: AgentTurn | None


class BargeInMixin:
    """The barge-in handling of `CallSession`: policy inputs from the VAD, and the policy's actions carried out."""

    # Near-miss decodes (`_on_near_miss`): one in flight at a time, and when the latest started. Class defaults:
    # the session sets them only once a near miss is heard.
    _near_miss_busy: bool = False
    # The open candidate's first look called it doubtful: its second look must also pass first_look.confirms.
    _doubtful: bool = False
    _near_miss_last_at: float = -math.inf

    if TYPE_CHECKING:
        # Held here: the provisional stop, the VAD's latest onset and a count of onsets, the caller's pauses
        # not yet fed to the policy, and what a stop leaves for the caller's turn.
        _held: Held | None
        _candidate: SpeechStarted | None
        _candidate_gen: int
        _pauses: list[SpeechPaused]
        _interrupted_at: float | None
        _late_heard: tuple[float, float, Heard] | None
        _stop_left: StopLeft | None
        _resumed_utt: tuple[float, float] | None
        # The session's (app/call/session.py) and the other parts'.
        deps: CallDeps
        protocol: TelephonyProtocol
        events: CallEvents
        record: CallRecord | None
        policy: BargeInPolicy
        vad: CallVad
        guard: EchoGuard | None
        ledger: PlaybackLedger
        outbox: Outbox
        tools: ToolRunner
        hearing: Hearing | None
        agent: AgentTurn | None
        _agent_record: Turn | None
        _user_record: Turn | None
        _utt_start: float | None
        _speech_end: float | None
        _last_user_speech_ms: float
        _turn_due: float | None
        _clock: Clock
        _log_extra: dict[str, str]

        async def _send(self, text: str) -> None: ...
        def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...
        def _start_user_turn(self, at: float) -> None: ...
        def _end_user_turn(self) -> None: ...
        def _cut_agent_turn(
            self, turn: AgentTurn | None, rec: Turn | None, heard: HeardPosition, interrupted: bool
        ) -> Cut | None: ...

    async def _on_vad(self, event: VadEvent, arrival: float) -> None:
        if isinstance(event, SpeechStarted):
            self._candidate = event
            self._candidate_gen += 1
            start = self.vad.speech_started_at
            speech_start = arrival - event.sustained_ms / 1000.0 if start is None else start
            if self._utt_start is None:
                self._utt_start = speech_start
                # The caller's first words may be a short utterance the agent resumed over a moment ago ("I --
                # I'd like to change my booking"): the turn this sound may open is heard from there.
                resumed = self._resumed_utt
                if resumed is not None and speech_start - resumed[1] <= self.deps.settings.stt_join_resumed_s:
                    self._utt_start = min(resumed[0], speech_start)
            guard = self.guard
            echo_possible = guard is not None and guard.echo_seen and guard.active(arrival)
            agent_speaking = self.agent_active(arrival)
            self._doubtful = agent_speaking and self._first_look()
            await self._decide(Candidate(
                arrival,
                speech_start=speech_start,
                agent_speaking=agent_speaking,
                in_uninterruptible=self._in_span(arrival),
                echo_possible=echo_possible,
                # What the guard says of the candidate so far, if it can be believed: low, it clears at once.
                echo_share=guard.echo_share(speech_start, arrival) if echo_possible and guard and guard.trusted
                else None,
                doubtful=self._doubtful,
            ))
        elif isinstance(event, SpeechStopped):
            self._last_user_speech_ms = event.speech_ms
            self._speech_end = event.last_speech_at
            await self._decide(TurnEnd(arrival))

    async def _settle(self, now: float) -> None:
        """Move an open candidate on: the caller paused, its second look is due, or it has gone on long."""
        while self._pauses:
            pause = self._pauses.pop(0)
            await self._decide(Paused(pause.at, pause.speech_ms))
        policy = self.policy
        # Due once the window's audio is in (counted in samples); by the clock only if frames stopped coming.
        if policy.awaiting_verdict and (self.vad.candidate_samples >= impulse.window_samples()
                                        or policy.needs_verdict(now, impulse.WINDOW_MS / 1000.0 + 0.1)):
            await self._decide(Verdict(now, self._second_look(now)))
        if policy.timing and self.vad.speaking:
            await self._decide(Progress(now, self.vad.speech_ms))
        if policy.state in (State.DEFERRED, State.DEFERRED_ENDED) and not self._in_span(now):
            await self._decide(SpanEnded(now))

    def _second_look(self, now: float) -> Literal["speech", "noise", "echo"]:
        """Is the open candidate the caller, an impulsive noise, or the agent's own echo? (About 0.2 ms.)"""
        s = self.deps.settings
        start = self.policy.speech_start
        guard = self.guard
        # Mostly residual echo, and an echo path is locked or the agent's audio is evidently on the line (a level
        # bound alone cannot tell a quiet caller from an echo before a lock).
        if guard is not None and guard.echo_share(start, now) > s.echo_reject_share and (
                guard.delay is not None or guard.echo_evident(now)):
            return "echo"
        if not s.bargein_second_look:
            return "speech"
        pcm, probs = self.vad.candidate()
        # Windows under the energy gate were not scored (NaN): the stage reads the scored ones.
        scored = [p for p in probs[: impulse.window_probabilities()] if p == p]
        pcm = pcm[: impulse.window_samples()]
        if self._doubtful and not first_look.confirms(pcm, scored):
            return "noise"
        return "speech" if impulse.is_speech(pcm, scored) else "noise"

    def _first_look(self) -> bool:
        """Does the candidate that just fired sound like a cough, a sneeze or a laugh? (About 0.1 ms, before the
        clear: only under `resume`, the one policy whose clear it can hold back.)"""
        s = self.deps.settings
        if not (s.bargein_first_look and s.bargein_second_look and self.policy.config.policy == "resume"):
            return False
        pcm, probs = self.vad.candidate()
        scored = [p for p in probs[: impulse.window_probabilities(first_look.FIRST)] if p == p]
        return first_look.doubtful(pcm[: impulse.window_samples(first_look.FIRST)], scored)

    def _in_span(self, now: float) -> bool:
        """The caller is hearing an uninterruptible span of the agent's turn."""
        turn = self.agent
        if turn is None or not turn.spans:
            return False
        heard = self.ledger.heard(now)
        return heard.turn_id == turn.turn_id and turn.in_span(heard.audio_ms)

    async def _decide(self, event: Input) -> None:
        step = self.policy.feed(event)
        if step.state is not step.previous and self.events.active:
            self.events.emit(PolicyChanged(event.at, step.state.value, step.previous.value,
                                           step.observation.value, step.action.value, step.reason))
        match step.action:
            case Action.NONE:
                pass
            case Action.PAUSE:
                await self._pause(event.at)
            case Action.STOP:
                await self._stop(event.at, step.reason)
                if step.previous is State.DEFERRED_ENDED:  # the caller's turn ended during an uninterruptible span
                    self._end_user_turn()
            case Action.RESUME:
                self._resume(event.at, step.reason)
            case Action.REARM:
                self.vad.rearm(event.at)
                if self._user_record is None:  # the sound was not a turn: its audio is not the next turn's
                    self._utt_start = None
            case Action.CALLER_TURN:
                self._start_user_turn(event.at)
            case Action.END_CALLER_TURN:
                self._end_user_turn()
            case _:
                assert_never(step.action)

    def agent_active(self, now: float) -> bool:
        """The agent is talking, or about to: its turn is producing, audio is queued or still playing, or a
        barge-in candidate holds it."""
        return self.agent is not None and (
            self.agent.running or self.outbox.has_queued or self.ledger.playing(now) or self._held is not None
        )

    async def _flush(self) -> tuple[float, HeardPosition, int]:
        """The provider's flush, before any other await and never behind queued audio; then the heard
        position as of it, and the queued audio dropped. Returns (clear time, heard position, chunks dropped)."""
        await self._send(self.protocol.clear())
        t_clear = self._clock.now()
        heard = self.ledger.clear(t_clear)
        dropped = self.outbox.drop()
        if self.guard is not None:  # what was queued at the edge never played: expect no echo of it
            self.guard.stop_at(t_clear + self.ledger.rtt_s / 2.0)
        return t_clear, heard, dropped

    async def _pause(self, t0: float) -> None:
        """A candidate over the agent: the provider's flush first, then hold the turn (nothing is closed yet)."""
        t_clear, heard, dropped = await self._flush()
        # The turn keeps producing but queues nothing.
        turn = self.agent
        if turn is not None:
            turn.hold(heard.audio_ms if heard.turn_id == turn.turn_id else 0.0)
        t_drop = self._clock.now()
        bargein_id = uuid.uuid4().hex[:12]
        self._held = Held(bargein_id, t0, t_clear, t_drop, heard, turn)
        self._emit_decided(bargein_id, t0, t_clear, t_drop, heard, turn, dropped)

    def _emit_decided(self, bargein_id: str, t0: float, t_clear: float, t_drop: float, heard: HeardPosition,
                      turn: AgentTurn | None, dropped: int) -> None:
        # After every step is done: nothing here delays the clear. The call record's barge-ins and the metrics
        # are kept from these events (app/call/bookkeeping.py), as is a recording.
        c = self._candidate
        emit = self.events.emit
        emit(BargeInDecided(t0, bargein_id, turn.turn_id if turn is not None else None,
                            round(c.confidence, 3) if c else 0.0, round(c.sustained_ms, 1) if c else 0.0,
                            round(c.peak_dbfs, 1) if c else -120.0))
        emit(ClearSent(t_clear, bargein_id, heard.turn_id, round(heard.audio_ms, 1)))
        emit(AudioDropped(t_drop, dropped))

    async def _stop(self, t1: float, reason: str) -> None:
        """The caller takes the turn: end the agent's turn (clear first if the candidate had not paused it)."""
        clock = self._clock
        held, self._held = self._held, None
        if held is None:
            # 1. The provider's flush (nothing paused the turn yet).
            t_clear, heard, dropped = await self._flush()
            t0 = t1
        else:
            t0, t_clear, heard, dropped = held.t0, held.t_clear, held.heard, 0
        # 2. The turn and its record are taken off the session before step 3 awaits: once the turn's task has
        # ended, the timer (on_tick) would see a finished turn with nothing playing and close the record as
        # spoken in full, uncut, before this coroutine resumes.
        turn, rec = self.agent, self._agent_record
        self._agent_record = None
        if turn is not None:
            turn.stop_tts()
        t_tts = clock.now()
        # 3. Close the LLM stream: its socket is shut here, before any await (abort_llm); cancel() then ends the
        # turn's task, whose cleanup closes the HTTP response. Without an open stream to shut (the reply had
        # streamed in full, or the client cannot abort), the close is the cleanup's.
        shut = turn is not None and turn.abort_llm()
        t_shut = clock.now()
        if turn is not None:
            await turn.cancel()
        t_llm = t_shut if shut else clock.now()
        tools = self.tools.on_barge_in()  # mutations in flight cancelled; reads run on, for the next turn
        # 4. Cut the agent's turn at the last character the caller heard.
        cut = self._cut_agent_turn(turn, rec, heard, interrupted=True)
        t_end = clock.now()
        bargein_id = held.id if held is not None else uuid.uuid4().hex[:12]
        # For the caller's turn this opens (its words are this barge-in's kind): what the caller did not hear,
        # said after all if that turn holds no words (going_on.py): all of it when the agent's turn had said
        # everything it would (the LLM done, every sentence synthesised), else up to its last whole sentence.
        rest = ""
        if turn is not None and cut is not None and not turn.used_fallback and not turn.spans:
            rest = rest_from(turn.text, cut.char_offset)
            if not turn.spoken_all:
                rest = whole_sentences(rest)
        self._stop_left = StopLeft(bargein_id, turn.turn_id if turn is not None else -1,
                                   cut.heard_text if cut is not None else "", rest)
        self.outbox.not_before = t_end + self.deps.settings.bargein_hard_silence_ms / 1000.0
        self._interrupted_at = t0
        if self.record is not None:
            self.record.generation = self.ledger.generation
        self._start_user_turn(t1)

        def ms(t: float, since: float) -> float:
            return round((t - since) * 1000.0, 3)

        if held is None:
            self._emit_decided(bargein_id, t0, t_clear, t_tts, heard, turn, dropped)
        self.events.emit(BargeInHandled(
            t_end, bargein_id, ms(t_clear, t0), ms(t_tts, t1), ms(t_llm, t1), ms(t_end, t1),
            cut_word_index=cut.word_index if cut else None,
            cut_char_offset=cut.char_offset if cut else None,
            heard_audio_ms=round(heard.audio_ms, 1) if cut else None,
            outcome="stopped", reason=reason, settled_ms=ms(t1, t0),
            in_flight_tools_canceled=tools.canceled, in_flight_tools_completed=tools.completed,
        ))
        logger.info("barge-in: clear %.2f ms, settled after %.0f ms (%s), total %.2f ms", ms(t_clear, t0),
                    ms(t1, t0), reason, ms(t_end, t1), extra=self._log_extra)

    def _resume(self, t1: float, reason: str) -> None:
        """The candidate was not the caller taking the turn: the agent goes on from where the caller stopped
        hearing it (the start of the word then being spoken), and the VAD listens for a fresh onset."""
        self.vad.rearm(t1)
        held, self._held = self._held, None
        if held is None:
            return
        turn = self.agent
        from_ms: float | None = None
        if turn is not None and turn is held.turn and not turn.tts_stopped:
            heard_ms = held.heard.audio_ms if held.heard.turn_id == turn.turn_id else 0.0
            from_ms = turn.resume_point(heard_ms)
            self.ledger.resume(turn.turn_id, from_ms, self._clock.now())
            turn.resume_from(from_ms)
        t_end = self._clock.now()

        def ms(t: float) -> float:
            return round((t - held.t0) * 1000.0, 3)

        self.events.emit(BargeInHandled(
            t_end, held.id, ms(held.t_clear), ms(held.t_drop), None, ms(t_end),
            heard_audio_ms=round(held.heard.audio_ms, 1),
            outcome="resumed", reason=reason, settled_ms=ms(t1),
            resumed_from_ms=None if from_ms is None else round(from_ms, 1),
        ))
        logger.info("barge-in resumed (%s) after %.0f ms", reason, ms(t1), extra=self._log_extra)
        start, self._utt_start = self._utt_start, None
        self._resumed_utt = None if start is None else (start, t1)
        # Speech too short to be a turn: the agent went on at once, and the words may still stop it ("stop" and
        # "okay" sound alike for half a second). Also when the second look called it a noise ("noise": a short
        # sound that Silero held as speech, then paused): a bare "stop" opens on /s/ and /t/, hiss and a burst,
        # and the first 160 ms the second look reads are noise-like (three of the four tuning voices' low-pitched
        # "stop" resumed as "noise", so its words were never asked). The recognizer's own tests (no-speech
        # probability, the hint's word test) and the words' kind decide; an echo is not asked about.
        # Not a "noise" resume on a line where the guard has heard the agent's echo: there the utterance's audio
        # carries the agent's own words under the noise (speakerphone, report set: noise over echo stopped by
        # words in 2 of 190 calls once "noise" resumes were heard).
        echo_line = self.guard is not None and self.guard.echo_seen
        if self.hearing is not None and start is not None and reason in LATE_WORDS_AFTER and not (
                reason == "noise" and echo_line):
            self._spawn(self._late_words(start, t1, self._candidate_gen, bargein_id=held.id))

    async def _late_words(self, start: float, end: float, gen: int,
                          kinds: frozenset[Kind | None] | None = None, bargein_id: str | None = None) -> None:
        """The words of a short utterance the agent talked over; they may stop it (only words of `kinds`, if
        given) while nothing newer happened. `bargein_id`: the resumed barge-in they followed (its kind)."""
        assert self.hearing is not None
        heard = await self.hearing.hear(start, end)
        now = self._clock.now()
        if bargein_id is not None and heard.error is None:
            self.events.emit(InterruptionHeard(now, bargein_id, interruption(heard.text)))
        if kinds is not None and interruption(heard.text) not in kinds:
            # A near miss's words that could not stop the agent are a guess at a sound ("You", "What?" from a
            # cough): kept off the record and away from the tools (a "correction" there cancels mutations).
            return
        self.events.emit(Transcribed(now, None, heard.text, round(heard.audio_ms, 1), round(heard.stt_ms, 1),
                                     heard.error))
        # Only while nothing newer happened: no later candidate, the agent still talking, no caller turn open.
        if gen != self._candidate_gen or self.policy.state is not State.IDLE or self._user_record is not None \
                or not heard.text or not self.agent_active(now):
            return
        await self._decide(Words(now, heard.text))
        if self._user_record is not None:  # the words stopped the agent: the caller's turn is open
            self._utt_start = start
            self._turn_due = now + self.deps.settings.stt_wait_after_stop_s
            self._late_heard = (start, end, heard)

    def _watch_near_misses(self) -> None:
        """Have the VAD tell near misses (NEAR_MISS_WORDS, with a recognizer): called once, at the session's start."""
        s = self.deps.settings
        if not s.near_miss_words or self.deps.stt is None:
            return
        self.vad.near_miss = NearMissTracker(NearMissConfig(
            threshold=s.near_miss_threshold, min_windows=s.near_miss_min_windows, min_ms=s.near_miss_min_ms,
            max_ms=s.near_miss_max_ms, release=min(self.vad.config.silero_release, s.near_miss_threshold),
        ))
        self.vad.on_near_miss = self._on_near_miss

    def _on_near_miss(self, miss: NearMiss) -> None:
        """A short sound over the agent came close to being a candidate: hear its words, within the call's bounds.

        Called inside the VAD's feed (nothing awaits here): the decode runs as its own task, off the loop on the
        recognizer's pool, and its words go through `_late_words` exactly as a resumed utterance's do."""
        now = miss.at
        guard = self.guard
        if (self.hearing is None or self._near_miss_busy
                or now - self._near_miss_last_at < self.deps.settings.near_miss_spacing_s
                # only a sound said over the agent, with nothing else going on
                or self.policy.state is not State.IDLE or self._user_record is not None
                or not self.agent_active(now) or self._in_span(now)
                # the agent's own words would be heard under it (as for a "noise" resume's late words)
                or (guard is not None and guard.echo_seen)):
            return
        if _pool_busy(self.hearing.stt):
            return  # a queue has formed: a near miss is a guess, and the turns' words come first
        self._near_miss_busy, self._near_miss_last_at = True, now
        self._spawn(self._near_miss_words(miss, self._candidate_gen))

    async def _near_miss_words(self, miss: NearMiss, gen: int) -> None:
        logger.info("near miss heard (%d windows, peak %.2f, %.0f ms): asking its words", miss.windows, miss.peak,
                    (miss.end_at - miss.start_at) * 1000.0, extra=self._log_extra)
        try:
            # to `at`, not `end_at`: the stretch keeps the word's soft tail, under the release
            await self._late_words(miss.start_at, miss.at, gen, NEAR_MISS_KINDS)
        finally:
            self._near_miss_busy = False

    def _stop_held_at_hangup(self, now: float) -> bool:
        """The call ended during a provisional stop: the agent's turn is cut where the caller stopped hearing
        it, at the clear, and the barge-in is over as stopped ("hangup"). False if no stop was held."""
        held, self._held = self._held, None
        if held is None:
            return False
        cut = self._cut_agent_turn(self.agent, self._agent_record, held.heard, interrupted=True)
        ms = round((now - held.t0) * 1000.0, 3)
        self.events.emit(BargeInHandled(
            now, held.id, round((held.t_clear - held.t0) * 1000.0, 3), 0.0, None, 0.0,
            cut_word_index=cut.word_index if cut else None,
            cut_char_offset=cut.char_offset if cut else None,
            heard_audio_ms=round(held.heard.audio_ms, 1) if cut else None,
            outcome="stopped", reason="hangup", settled_ms=ms,
        ))
        return True
