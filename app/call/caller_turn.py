"""The caller's turn in a call: opened, ended, heard, answered; and progressive turn taking.

Theory of operation
-------------------
A caller's turn opens on the policy's word (a barge-in, or speech while the agent is silent) or on a key
(`_on_key`), and ends on the policy's word too: the VAD's end of speech, the keys' inter-digit time, or a turn
end confirmed early by the turn-taking table. Its record turn is opened at once (`_start_user_turn`); at its end
(`_end_user_turn`) its audio is heard by the recognizer off the event loop (`_hear_turn`, app/call/hearing.py),
and only once the words are in does the turn go on record and the agent answer (`_words_in`, `_answer`): not
at once when the words sound unfinished ("a table for"), not while the agent talks, another caller turn is open
or one is still being heard (that one's end answers both). An answer after a long interruption may start with
an acknowledgement line (`_acknowledgement`, spread evenly over the turns, not drawn at random).

Under progressive turn taking (TURN_POLICY, app/call/turn_taking.py) the caller's pauses go into the
turn-taking table (`_take_turn`), and its actions are carried out in `_turn_step`: the words so far are heard
at a pause (`_speculate`), the end-of-turn model may be asked about it (`_ask_model`), a reply to the words is
started and held (`_start_reply`, app/call/draft.py), and once the silence the words call for has passed the
turn ends (`_confirm_turn`) and its end speaks the held reply (`_speak_draft`); when the caller goes on, the
held reply and the hearing are dropped (`_drop_draft`).

Under strict turn taking with TURN_HEAR_EARLY the same table hears the turn at the short pause and keeps the
words: the VAD's turn end then takes them (`_turn_over`: KEEP) instead of hearing the turn again, or, when the
recognizer is not done yet, waits for that hearing (`_hear_taken`) rather than starting a second one.

When the call ends, the turn still open is heard too and what is being heard gets the recognizer's timeout to
finish (`_hear_before_close`); none of it is answered.

This is a mixin of `CallSession` (app/call/session.py says why); the session state it uses is declared below.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, assert_never

from app.audio import ulaw_to_pcm16
from app.bargein.detector import Keypress, State, TurnEnd
from app.bargein.vad import VadState
from app.bargein.words import interruption
from app.call.draft import DRAFT_TURN_ID, Draft, EventGate
from app.call.end_of_turn import EndOfTurn
from app.call.events import AgentWentOn, InterruptionHeard, KeyPressed, Transcribed, TurnStarted
from app.call.going_on import go_on, go_on_at_pause
from app.call.hearing import Heard
from app.call.turn import AgentTurn
from app.call.turn_taking import Action as TurnAction
from app.call.turn_taking import ModelVerdict, Silence, Speech, Step, TurnOver, WordsIn, looks_unfinished
from app.call.turn_taking import State as TurnState
from app.transcript import Turn

if TYPE_CHECKING:
    from app.bargein.detector import BargeInPolicy, Input
    from app.bargein.vad import CallVad
    from app.call.events import CallEvents
    from app.call.going_on import StopLeft
    from app.call.hearing import Hearing
    from app.call.outbox import Outbox
    from app.call.session import CallDeps
    from app.call.tools import ToolRunner
    from app.call.turn_taking import TurnTaker
    from app.clock import Clock
    from app.metrics import Metrics
    from app.transcript import CallRecord
    from providers.llm.base import ChatMessage
    from providers.tts.base import TtsEngine

# The session's log lines keep the session's logger name: this is a part of CallSession, and log filters (and
# tests' caplog) select its lines by that name.
logger = logging.getLogger("app.call.session")

# How long a call's end waits for the caller's last words beyond the recognizer's own bound (STT_TIMEOUT_S, which
# each hearing already has): past it they go on record without words. Not a fixed few seconds: with the
# recognizer's pool busy (several calls ending at once on a loaded machine) a 2 s turn waited out 3 s in CI and
# lost its words; a hang-up must not lose what the caller said while the recognizer still has it.
HEARING_AT_CLOSE_S = 0.5
# strict, heard early: the kept words are the turn's when their end of speech is the VAD's (the same frames, up
# to a frame or two of its smoothing); a later one means speech the words do not hold.
KEPT_WORDS_SLACK_S = 0.06


class CallerTurnMixin:
    """The caller's turns of `CallSession`: open, end, hear, answer; speculation and held replies."""

    # The hearing of the pause in hand (its end of speech, the recognizer's task), apart from the speculation
    # that waits on it: strict, hearing early, a turn that ends before its words are in takes it over instead
    # of hearing the turn again (a second recognizer's time in the gap). Set per call; None until the first pause.
    _early: tuple[float, asyncio.Task[Heard]] | None = None
    # ... taken over by the turn's end (`_turn_over`), for `_end_user_turn`.
    _early_taken: asyncio.Task[Heard] | None = None
    # Going on at the pause (`_watch_go_on`): the hearing in flight (its end of speech, its task), and the caller
    # turn whose pause was heard to hold words (not checked again: it ends and is answered as always).
    _go_on_check: tuple[float, asyncio.Task[Heard]] | None = None
    _go_on_words_in: Turn | None = None

    if TYPE_CHECKING:
        # Held here: the caller's open turn and its timing, its keys, the turns being heard, the answer due,
        # the acknowledgement credit, and the progressive turn taking's draft, hearing and model request.
        _user_record: Turn | None
        _utt_start: float | None
        _speech_end: float | None
        _last_user_speech_ms: float
        _keys: str
        _turn_due: float | None
        _answer_due: tuple[float, str | None] | None
        _hearing_turns: list[Turn]
        _hear_tasks: set[asyncio.Task[None]]
        _turn_speech_end: dict[int, float]
        _ack_credit: float
        _closing: bool
        _draft: Draft | None
        _spoken: Draft | None
        _speculation: asyncio.Task[None] | None
        _asking: asyncio.Task[None] | None
        # The session's (app/call/session.py) and the other parts'.
        deps: CallDeps
        events: CallEvents
        record: CallRecord | None
        policy: BargeInPolicy
        vad: CallVad
        outbox: Outbox
        tools: ToolRunner
        hearing: Hearing | None
        turn_taker: TurnTaker | None
        agent: AgentTurn | None
        _agent_record: Turn | None
        _interrupted_at: float | None
        _late_heard: tuple[float, float, Heard] | None
        _stop_left: StopLeft | None
        _left_for: dict[int, StopLeft]
        _tasks: list[asyncio.Task[None]]
        _clock: Clock
        _metrics: Metrics
        _log_extra: dict[str, str]

        def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...
        def _forget_task(self, task: asyncio.Task[None]) -> None: ...
        async def _decide(self, event: Input) -> None: ...
        def _in_span(self, now: float) -> bool: ...
        def agent_active(self, now: float) -> bool: ...
        def _start_agent_turn(self, text: str | None = None, prefix: str | None = None,
                              continues: int | None = None) -> None: ...
        def _finalize_agent_turn(self) -> None: ...
        def _turn_ended(self, rec: Turn, audio_ms: float | None) -> None: ...
        def _reply_tts(self) -> TtsEngine: ...
        def _messages(self, current: Turn | None = None) -> list[ChatMessage]: ...

    # -- the caller's turn -----------------------------------------------------------------------
    async def _on_key(self, digit: str, at: float) -> None:
        """A DTMF key: it may stop the agent (the policy's call), and it goes into the caller's turn, which the
        keys end after DTMF_INTERDIGIT_MS without a new one or at once on DTMF_TERMINATOR."""
        s = self.deps.settings
        if self.events.active:
            self.events.emit(KeyPressed(at, digit))
        self._metrics.dtmf_total.inc()
        await self._decide(Keypress(at, agent_speaking=self.agent_active(at), in_uninterruptible=self._in_span(at),
                                    interrupts=s.dtmf_interrupts))
        self._start_user_turn(at)
        self._keys += digit
        self._speech_end = at  # a turn of keys ends with its last key
        self._turn_due = at if s.dtmf_terminator and digit == s.dtmf_terminator else at + s.dtmf_interdigit_ms / 1000.0

    def _start_user_turn(self, at: float) -> None:
        self._answer_due = None  # the caller went on: the end of this turn answers both
        if self._user_record is None and self.record is not None:
            self._user_record = self.record.new_turn("user", self.deps.wall())
            self.events.emit(TurnStarted(at, self._user_record.id, "user"))

    def _end_user_turn(self) -> None:
        if self.record is None:
            return
        if self._user_record is None:
            self._user_record = self.record.new_turn("user", self.deps.wall())
        rec, self._user_record = self._user_record, None
        ended_at = self.deps.wall()
        speech_end, self._speech_end = self._speech_end, None
        self._turn_speech_end[rec.id] = speech_end if speech_end is not None else self._clock.now()
        rec.keys += self._keys
        self._keys, self._turn_due = "", None
        interrupted, self._interrupted_at = self._interrupted_at, None
        left, self._stop_left = self._stop_left, None
        if interrupted is not None and self.hearing is not None and left is not None:
            # The rest is said instead of an answer if the turn holds no words (_words_in); the barge-in's record
            # gets the kind of the words (_turn_heard).
            self._left_for[rec.id] = left
        start, self._utt_start = self._utt_start, None
        late, self._late_heard = self._late_heard, None
        prefix = self._acknowledgement(interrupted is not None)
        spoken = self._turn_over(speech_end)
        if spoken is not None and spoken.turn is None and self.turn_taker is not None \
                and self.turn_taker.config.hears_early:
            # strict, heard early: the words of the turn, in before its end; answered as if heard now
            self._words_in(rec, spoken.heard, ended_at, prefix)
            return
        at_pause = self._take_go_on_check(speech_end)
        taken, self._early_taken = self._early_taken, None
        if taken is not None and self.hearing is not None:  # strict, heard early: the words are on their way
            self._hearing_turns.append(rec)
            self._hear(self._hear_taken(rec, taken, ended_at, prefix))
            return
        if spoken is not None:  # progressive: the words are in, and the reply to them is ready or coming
            self._turn_heard(rec, spoken.heard, ended_at)
            self._speak_draft(spoken, prefix)
            return
        if self.hearing is not None and start is not None:
            if late is not None and late[0] == start and (speech_end is None or speech_end <= late[1] + 1e-6):
                # Nothing said since the words that stopped the agent ("stop please"): they are the turn's
                # words, heard already; a second pass would only add its delay.
                self._words_in(rec, late[2], ended_at, prefix)
                return
            if at_pause is not None:  # a turn a stop opened, heard at its pause: those words first (_watch_go_on)
                self._hearing_turns.append(rec)
                self._hear(self._hear_after_pause(rec, at_pause, start, self._clock.now(), ended_at, prefix))
                return
            # The words first: the turn's record and the agent's answer wait for them (off the event loop).
            self._hearing_turns.append(rec)
            self._hear(self._hear_turn(rec, start, self._clock.now(), ended_at, prefix))
            return
        rec.ended_at = ended_at
        self._turn_ended(rec, None)
        self._answer(prefix)

    async def _hear_turn(self, rec: Turn, start: float, end: float, ended_at: float, prefix: str | None) -> None:
        """A caller turn's words; the turn is complete (ended, on record, answered) once they are in."""
        assert self.hearing is not None
        heard = await self.hearing.hear(start, end)
        self._hearing_turns.remove(rec)
        self._words_in(rec, heard, ended_at, prefix)

    async def _hear_taken(self, rec: Turn, hearing: asyncio.Task[Heard], ended_at: float,
                          prefix: str | None) -> None:
        """A caller turn's words from the hearing started at its pause (strict, heard early)."""
        try:
            heard = await hearing
        except asyncio.CancelledError:
            if not hearing.cancelled():
                raise  # this task itself is being cancelled
            heard = Heard("", 0.0, 0.0, "cancelled")
        self._hearing_turns.remove(rec)
        self._words_in(rec, heard, ended_at, prefix)

    async def _hear_after_pause(self, rec: Turn, at_pause: asyncio.Task[Heard], start: float, end: float,
                                ended_at: float, prefix: str | None) -> None:
        """A turn that ended with its pause heard (or being heard) and nothing said since: the pause's words if they
        let the agent go on (sounds alone), else the turn heard whole, as any turn is. That hearing starts at once,
        beside the pause's, so a turn with words is answered no later than without the pause's hearing, and with the
        same words (a clip's trailing silence changes what Whisper writes)."""
        assert self.hearing is not None
        again = None if at_pause.done() else asyncio.ensure_future(self.hearing.hear(start, end))
        try:
            heard = await asyncio.shield(at_pause)
        except asyncio.CancelledError:
            if not at_pause.cancelled():  # this task itself is being cancelled
                if again is not None:
                    again.cancel()
                raise
            heard = Heard("", 0.0, 0.0, "cancelled")
        if go_on_at_pause(self._left_for.get(rec.id), heard.text, heard.error, rec.keys):
            if again is not None:
                again.cancel()
        else:
            heard = await (again if again is not None else self.hearing.hear(start, end))
        self._hearing_turns.remove(rec)
        self._words_in(rec, heard, ended_at, prefix)

    def _hear(self, work: Coroutine[Any, Any, None]) -> None:
        task = self._spawn(work)
        self._hear_tasks.add(task)
        task.add_done_callback(self._hear_tasks.discard)

    def _words_in(self, rec: Turn, heard: Heard, ended_at: float, prefix: str | None) -> None:
        """A caller turn's words are in: on record; the agent answers (later if the words sound unfinished), or,
        when the turn stopped the agent and holds no words, goes on with what it was saying (going_on.py)."""
        s = self.deps.settings
        rest = self._left_for.get(rec.id)  # _turn_heard, below, lets go of it
        reason = None
        if s.bargein_go_on_without_words and not self._closing and self._user_record is None \
                and not self._hearing_turns and not self.agent_active(self._clock.now()):
            reason = go_on(rest, heard.text, heard.error, rec.keys)
        rec.went_on = reason is not None
        if reason is not None and rest is not None:  # told before the turn ends: its span and record carry it
            self.events.emit(AgentWentOn(self._clock.now(), rest.bargein_id, rec.id, rest.turn_id, reason,
                                         len(rest.rest)))
        self._turn_heard(rec, heard, ended_at)
        if self._closing:  # the caller hung up: their words are kept, nobody is left to answer
            return
        if reason is not None and rest is not None:
            logger.info("the caller's turn held %s: the agent goes on with the rest of its turn (%d characters)",
                        "no words" if reason == "no_words" else "only listener words", len(rest.rest),
                        extra=self._log_extra)
            self._start_agent_turn(text=rest.rest, continues=rest.turn_id)
            return
        wait_s = s.turn_unfinished_wait_ms / 1000.0
        # "... a table for": the caller is likely to go on (the same reading of the words as progressive's)
        if wait_s > 0 and looks_unfinished(heard.text, heard.last_confidence, s.turn_unsure_confidence):
            self._answer_due = (self._clock.now() + wait_s, prefix)
            return
        self._answer(prefix)

    def _turn_heard(self, rec: Turn, heard: Heard, ended_at: float) -> None:
        """A caller turn's words are in: on record, and the turn ends."""
        left = self._left_for.pop(rec.id, None)
        if left is not None and heard.error is None:
            self.events.emit(InterruptionHeard(self._clock.now(), left.bargein_id, interruption(heard.text)))
        rec.text, rec.ended_at = heard.text, ended_at
        self.events.emit(Transcribed(self._clock.now(), rec.id, heard.text, round(heard.audio_ms, 1),
                                     round(heard.stt_ms, 1), heard.error))
        self._metrics.observe_stt(heard.stt_ms / 1000.0, heard.error is None)
        self._turn_ended(rec, None)

    # -- going on at the caller's first pause (app/call/going_on.py) --------------------------------
    def _watch_go_on(self, now: float) -> None:
        """A caller turn that a stop opened has paused for BARGEIN_GO_ON_AT_PAUSE_MS: hear it now (`_go_on_heard`).
        A turn of sounds alone (a laugh, a cough fit, "Ow!") then lets the agent go on at once instead of after the
        turn-end silence and a recognizer's time; a turn with words ends on its silence and is heard and answered
        as always (`_hear_after_pause` when its end comes before these words). Only under the default turn taking
        (no table): under `progressive` or hearing early, the table hears the pause already."""
        s = self.deps.settings
        if s.bargein_go_on_at_pause_ms <= 0 or self._go_on_check is not None or self.turn_taker is not None:
            return
        left, rec = self._stop_left, self._user_record
        if left is None or not left.rest or rec is None or rec is self._go_on_words_in or self.hearing is None \
                or self._utt_start is None or self._interrupted_at is None or self._keys or self._hearing_turns \
                or self._closing or not s.bargein_go_on_without_words or self.policy.state is not State.CALLER \
                or self.vad.state is not VadState.STOPPING or self.agent_active(now):
            return
        silence_s = self.vad.silence_ms(now) / 1000.0
        if silence_s * 1000.0 < s.bargein_go_on_at_pause_ms:
            return
        hearing = asyncio.ensure_future(self.hearing.hear(self._utt_start, now))
        self._go_on_check = (now - silence_s, hearing)
        self._spawn(self._go_on_heard(rec, hearing, now - silence_s))

    async def _go_on_heard(self, rec: Turn, hearing: asyncio.Task[Heard], speech_end: float) -> None:
        """The paused turn's words are in: if the caller is still silent and the words are none (going_on.py's
        rule), the turn ends now, and its end (taking these words) has the agent go on."""
        try:
            heard = await asyncio.shield(hearing)
        except asyncio.CancelledError:
            hearing.cancel()  # the call is closing: nobody waits for these words
            raise
        check = self._go_on_check
        if check is None or check[1] is not hearing:
            return  # the turn ended meanwhile and took these words (or the call is closing)
        now = self._clock.now()
        left = self._stop_left
        if rec is not self._user_record or left is None or self._keys or self.policy.state is not State.CALLER \
                or self.vad.state is not VadState.STOPPING \
                or abs(now - self.vad.silence_ms(now) / 1000.0 - speech_end) > KEPT_WORDS_SLACK_S:
            self._go_on_check = None  # the caller went on: the next pause is heard again
            return
        if not go_on_at_pause(left, heard.text, heard.error, rec.keys):
            # Words (or maybe): the turn ends on its silence and is heard whole then, as any turn is.
            self._go_on_check, self._go_on_words_in = None, rec
            return
        logger.debug("the paused caller turn holds no words (%r): it ends now", heard.text, extra=self._log_extra)
        self._speech_end = speech_end
        self.vad.rearm(now)  # the caller's next sound is a new onset (a barge-in once the agent goes on)
        await self._decide(TurnEnd(now))

    def _take_go_on_check(self, speech_end: float | None) -> asyncio.Task[Heard] | None:
        """The turn ends: the pause's hearing (in flight, or done without words), if it heard up to this turn's end
        of speech (nothing said since)."""
        check, self._go_on_check = self._go_on_check, None
        if check is None or speech_end is None or abs(check[0] - speech_end) > KEPT_WORDS_SLACK_S:
            return None
        return check[1]

    # -- progressive turn taking (app/call/turn_taking.py, app/call/draft.py) ------------------------
    def _may_speculate(self, now: float) -> bool:
        """The caller has the turn, the agent is silent, and their words can be heard: a pause may be used."""
        return (self.hearing is not None and self._user_record is not None and self._utt_start is not None
                and self.policy.state is State.CALLER and not self._keys and not self._hearing_turns
                and not self.agent_active(now))

    async def _take_turn(self, now: float) -> None:
        """The caller's silence (or their going on) into the turn-taking table; act on its answer."""
        taker = self.turn_taker
        assert taker is not None
        vad = self.vad
        last = now - vad.silence_ms(now) / 1000.0 if vad.state is VadState.STOPPING else None
        if taker.state is TurnState.LISTENING:
            if last is None or not self._may_speculate(now):
                return
            step = taker.feed(Silence(now, last))
        elif last is None or taker.speech_end is None or last > taker.speech_end + 1e-6:
            step = taker.feed(Speech(now))  # speech after the pause: the caller went on
        else:
            step = taker.feed(Silence(now, last))
        await self._turn_step(step, now)

    async def _turn_step(self, step: Step, now: float) -> None:
        match step.action:
            case TurnAction.HEAR:
                assert self._utt_start is not None and self.turn_taker is not None
                speech_end = self.turn_taker.speech_end
                assert speech_end is not None
                assert self.hearing is not None
                heard = asyncio.ensure_future(self.hearing.hear(self._utt_start, now))
                self._early = (speech_end, heard)
                task = asyncio.create_task(self._speculate(heard, speech_end))
                self._tasks.append(task)
                task.add_done_callback(self._forget_task)
                self._speculation = task
                if self.turn_taker.config.model:
                    self._ask_model(now)
            case TurnAction.DRAFT:  # the time to start the reply to unfinished words has come
                if self._draft is not None:
                    self._start_reply(self._draft)
            case TurnAction.CANCEL:
                self._drop_draft(restart=step.previous is TurnState.DRAFTING)
            case TurnAction.SPEAK:
                await self._confirm_turn(now)
            case TurnAction.END:
                self._drop_draft(restart=False)
            case TurnAction.ASK:
                self._ask_model(now)
            case TurnAction.CLOSE:  # strict with the model: the turn is over now, heard and answered as always
                self._speech_end = step.speech_end
                self.vad.rearm(now)
                await self._decide(TurnEnd(now))
            case TurnAction.NONE | TurnAction.WAIT | TurnAction.KEEP:
                pass
            case _:
                assert_never(step.action)

    def _ask_model(self, now: float) -> None:
        """Ask the end-of-turn model about the caller's turn up to now (its pause included), off the loop."""
        eot, taker = self.deps.end_of_turn, self.turn_taker
        if eot is None or taker is None or taker.speech_end is None or self.hearing is None \
                or self._utt_start is None:
            return
        ulaw = self.hearing.audio.between(self._utt_start - self.hearing.preroll_s, now)
        self._asking = self._spawn(self._model_verdict(eot, ulaw_to_pcm16(ulaw), taker.speech_end))

    async def _model_verdict(self, eot: EndOfTurn, pcm: Any, speech_end: float) -> None:
        verdict = await eot.ask(pcm)
        self._asking = None
        taker = self.turn_taker
        assert taker is not None
        now = self._clock.now()
        step = taker.feed(ModelVerdict(now, speech_end, verdict.p_complete))
        # The bench reads the model's cost and verdicts from this line (app/bench/turns.py).
        logger.info("end-of-turn model: p=%s in %.1f ms (cpu %.1f ms, queued %.1f ms) -> %s (%s)",
                    "none" if verdict.p_complete is None else f"{verdict.p_complete:.3f}", verdict.infer_ms,
                    verdict.cpu_ms, verdict.wait_ms, taker.config.verdict(verdict.p_complete),
                    step.observation.value, extra=self._log_extra)
        await self._turn_step(step, now)

    async def _speculate(self, hearing: asyncio.Future[Heard], speech_end: float) -> None:
        """The words of the turn so far; on them, the held reply (the table says whether)."""
        assert self.turn_taker is not None
        heard = await asyncio.shield(hearing)  # dropping the speculation leaves the hearing to `_drop_draft`
        self._speculation = None
        if self._early is not None and self._early[1] is hearing:
            self._early = None
        step = self.turn_taker.feed(WordsIn(self._clock.now(), speech_end, heard.text, heard.error is None,
                                            heard.last_confidence))
        if step.action in (TurnAction.DRAFT, TurnAction.WAIT):
            self._draft = draft = Draft(None, None, heard, speech_end)
            if step.action is TurnAction.DRAFT:
                self._start_reply(draft)

    def _start_reply(self, draft: Draft) -> None:
        """The reply to the draft's words, held: it streams and synthesises, nothing of it reaches the call
        (draft.py). Built as `_start_agent_turn` builds a turn, minus the record turn, with its own events."""
        if self._user_record is None or draft.turn is not None:
            return
        self._user_record.text = draft.heard.text  # the request reads the words so far (the turn's end sets them)
        if len(self.deps.tools) and self.tools.in_flight():
            # A read a barge-in let finish belongs in the reply's request, which a held reply builds now: words
            # only, and the turn's end answers as without a draft.
            return
        s = self.deps.settings
        metrics = self._metrics

        def on_fallback(reason: str) -> None:
            if draft.record is None:
                draft.fallbacks.append(reason)
            else:
                draft.record.fallback = True
                metrics.fallbacks_total.labels("turn").inc()

        draft.gate = EventGate(self.events)
        draft.turn = AgentTurn(
            DRAFT_TURN_ID,
            outbox=self.outbox,
            tts=self._reply_tts(),
            tts_timeout_s=s.tts_timeout_s,
            llm=self.deps.llm,
            messages=self._messages(),
            llm_first_token_timeout_s=s.llm_first_token_timeout_s,
            fallback=self.deps.fallback[0] if self.deps.fallback else None,
            on_fallback=on_fallback,
            max_reply_chars=s.llm_max_reply_chars,
            max_queued_audio_ms=s.max_queued_audio_s * 1000.0,
            events=draft.gate.events,
            clock=self._clock,
            first_clause_chars=s.tts_first_clause_chars,
            # Offered the call's tools as the answer would be; a tool call waits for the release (AgentTurn
            # `held_reply`), so a tool never runs for a reply the caller does not get.
            tools=self.tools if len(self.deps.tools) else None,
            holding_text=s.agent_tool_holding_text,
            holding_after_s=s.tool_holding_after_ms / 1000.0,
            settle_tools_s=s.tool_timeout_s,
            held_reply=True,
        )
        draft.turn.hold(0.0)  # queues nothing until released
        draft.turn.start()

    async def _confirm_turn(self, now: float) -> None:
        """The silence the words call for has passed: the caller's turn is over (the policy's turn end, as the
        VAD's would be), and its end speaks the held reply (`_end_user_turn`)."""
        draft, self._draft = self._draft, None
        if draft is None:
            return
        self._spoken = draft
        self._speech_end = draft.speech_end
        self.vad.rearm(now)  # the caller's next speech is a new onset (a barge-in once the agent talks)
        await self._decide(TurnEnd(now))
        if self._spoken is not None:  # the policy did not end the turn (a candidate is open): no early reply
            spoken, self._spoken = self._spoken, None
            self._discard(spoken)

    def _turn_over(self, speech_end: float | None = None) -> Draft | None:
        """The caller's turn ends (its speech at `speech_end`): the confirmed draft, or the words heard early
        for it, if there are; anything speculative is dropped."""
        spoken, self._spoken = self._spoken, None
        taker = self.turn_taker
        if taker is None:
            return spoken
        if spoken is None:
            step = taker.feed(TurnOver(self._clock.now()))
            if step.action is TurnAction.SPEAK:  # the VAD's backstop came first: the turn is over all the same
                spoken, self._draft = self._draft, None
            elif step.action is TurnAction.KEEP:  # strict, heard early: the words, if for this turn's speech
                kept, self._draft = self._draft, None
                if kept is not None and speech_end is not None \
                        and abs(kept.speech_end - speech_end) <= KEPT_WORDS_SLACK_S:
                    spoken = kept
            elif step.action is TurnAction.END and taker.config.hears_early and self._early is not None \
                    and speech_end is not None and abs(self._early[0] - speech_end) <= KEPT_WORDS_SLACK_S:
                # strict, heard early, the words not in yet: the turn's end waits for them, not for a new hearing
                self._early_taken, self._early = self._early[1], None
        self._drop_draft(restart=False)
        taker.reset()
        return spoken

    def _speak_draft(self, draft: Draft, prefix: str | None) -> None:
        """Answer the caller's ended turn with its held reply: a record turn for it, its events and audio out."""
        now = self._clock.now()
        turn, gate = draft.turn, draft.gate
        if turn is None or gate is None or prefix is not None or self.record is None \
                or self._user_record is not None or self._hearing_turns or self.agent_active(now):
            self._discard(draft)  # words only, or an acknowledgement goes first: the usual answer
            self._answer(prefix)
            return
        self._finalize_agent_turn()
        rec = self.record.new_turn("agent", self.deps.wall())
        self.events.emit(TurnStarted(now, rec.id, "agent"))
        turn.turn_id = rec.id
        self.agent, self._agent_record = turn, rec
        draft.record = rec
        gate.release(rec.id, now)
        for _ in draft.fallbacks:
            rec.fallback = True
            self._metrics.fallbacks_total.labels("turn").inc()
        turn.resume_from(0.0)
        taker = self.turn_taker
        if taker is not None:
            taker.spoken += 1
            logger.info("turn draft spoken (%d drafts, %d restarts)", taker.drafts, taker.restarts,
                        extra=self._log_extra)

    def _drop_draft(self, *, restart: bool) -> None:
        """The caller went on (a restart) or the turn ended otherwise: the held reply and the hearing go."""
        task, self._speculation = self._speculation, None
        if task is not None:
            task.cancel()
        early, self._early = self._early, None
        if early is not None:
            early[1].cancel()
        asking, self._asking = self._asking, None
        if asking is not None:  # its verdict would be stale: not waited for (the model's run itself finishes)
            asking.cancel()
        draft, self._draft = self._draft, None
        if draft is not None:
            self._discard(draft)
        # A restart costs a cancelled LLM request: counted only when a reply had been started.
        if restart and draft is not None and draft.turn is not None and self.turn_taker is not None:
            logger.info("turn draft cancelled: the caller went on (%d drafts, %d restarts)",
                        self.turn_taker.drafts, self.turn_taker.restarts, extra=self._log_extra)

    def _discard(self, draft: Draft) -> None:
        """A held reply that will not be spoken: it stops now (nothing of it was sent), its LLM stream closes."""
        if draft.turn is not None and not (draft.gate is not None and draft.gate.released):
            draft.turn.stop_tts()
            self._spawn(draft.turn.cancel())

    def _answer(self, prefix: str | None) -> None:
        """The caller's turn is over and heard: the agent answers, unless it is talking already or the caller
        has started another turn (or one is still being heard): that one's end answers both."""
        self._answer_due = None
        if self._user_record is None and not self._hearing_turns and not self.agent_active(self._clock.now()):
            self._start_agent_turn(prefix=prefix)

    def _acknowledgement(self, after_interruption: bool) -> str | None:
        """The acknowledgement line, on BARGEIN_ACK_FRACTION of long interruptions (spread evenly, not drawn
        at random, so a replay says it at the same turns)."""
        s = self.deps.settings
        if not after_interruption or s.bargein_ack_fraction <= 0 or self._last_user_speech_ms < s.bargein_ack_min_ms:
            return None
        self._ack_credit += s.bargein_ack_fraction
        if self._ack_credit < 1.0 - 1e-9:
            return None
        self._ack_credit -= 1.0
        return s.bargein_ack_text or None

    # -- the call's end ---------------------------------------------------------------------------
    async def _hear_before_close(self) -> None:
        """What the caller said before hanging up is kept: a turn still open ("okay, bye") is heard too, and
        the turns being heard get the recognizer's timeout (plus HEARING_AT_CLOSE_S) to finish; none of them is
        answered."""
        self._closing = True
        rec = self._user_record
        if self.hearing is not None and rec is not None and self._utt_start is not None:
            self._user_record = None
            self._hearing_turns.append(rec)
            self._hear(self._hear_turn(rec, self._utt_start, self._clock.now(), self.deps.wall(), None))
        if self._hear_tasks:
            await asyncio.wait(set(self._hear_tasks), timeout=self.deps.settings.stt_timeout_s + HEARING_AT_CLOSE_S)
