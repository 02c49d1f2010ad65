"""CallSession: one per media stream. Dispatches telephony events, runs barge-in, owns the agent's turns.

The barge-in path is `_on_audio` -> `CallVad.feed` -> `BargeInDetector` -> `_barge_in`, whose first await writes
the provider's clear to the socket. Nothing slow runs on it: the VAD's model run is shared by every call that had
a frame ready in the same loop iteration, and everything else on the path is synchronous arithmetic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, Literal, assert_never

from app import logctx
from app.audio import ulaw_to_pcm16
from app.bargein import impulse
from app.bargein.detector import (
    Action,
    BargeInPolicy,
    Candidate,
    Input,
    Keypress,
    Paused,
    PolicyConfig,
    Progress,
    SpanEnded,
    State,
    TurnEnd,
    Verdict,
    Words,
)
from app.bargein.echo import EchoConfig, EchoGuard
from app.bargein.playback import HeardPosition, PlaybackLedger
from app.bargein.silero import WindowScorer
from app.bargein.vad import FRAME, CallVad, SpeechPaused, SpeechStarted, SpeechStopped, VadConfig, VadEvent, VadState
from app.bargein.words import interruption, unfinished
from app.call.bookkeeping import CallBookkeeper
from app.call.conversation import conversation_state
from app.call.draft import DRAFT_TURN_ID, Draft, EventGate
from app.call.end_of_turn import EndOfTurn
from app.call.events import (
    AudioDropped,
    BargeInDecided,
    BargeInHandled,
    CallClosed,
    CallEvent,
    CallEvents,
    ClearSent,
    KeyPressed,
    MarkAcked,
    PolicyChanged,
    Transcribed,
    TurnEnded,
    TurnStarted,
    VadChanged,
    WireReceived,
    WireSent,
)
from app.call.hearing import Heard, Hearing
from app.call.outbox import Outbox
from app.call.registry import CallInUse, CallRegistry
from app.call.tools import ToolRegistry, ToolRunner
from app.call.turn import AgentTurn, Cut
from app.call.turn_taking import Action as TurnAction
from app.call.turn_taking import ModelVerdict, Silence, Speech, Step, TurnOver, TurnTaker, TurnTakingConfig, WordsIn
from app.call.turn_taking import State as TurnState
from app.clock import Clock
from app.logsafe import LogBudget, safe
from app.metrics import Metrics
from app.settings import Settings
from app.stream_tokens import StreamTokens
from app.transcript import CallRecord, Turn
from providers.llm.base import ChatMessage, LlmClient
from providers.stt.base import SttEngine
from providers.telephony.base import BinaryTelephonyProtocol, TelephonyProtocol
from providers.telephony.events import (
    AudioCleared,
    AudioReceived,
    CallEnded,
    CallStarted,
    DtmfReceived,
    InvalidMessage,
    MarkPlayed,
    StreamConnected,
    TelephonyEvent,
    UnknownEvent,
)
from providers.tts.base import Synthesis, TtsEngine, at_pace

logger = logging.getLogger(__name__)

# An interrupted agent turn, as the LLM reads it: the heard text, then this (the model should not repeat what
# the caller already heard, nor assume they heard the rest).
# How long a call's end waits for the caller's last words (the recognizer takes 0.1-0.5 s a turn): past it
# they go on record without words, as before.
HEARING_AT_CLOSE_S = 3.0
CUT_MARK = " [cut off here: the caller interrupted]"
NO_TRANSCRIPT = "[the caller spoke; their words are not known (no recognizer, or it heard none)]"


def user_content(turn: Turn) -> str:
    """A caller's turn as the LLM reads it: the words, and the keys pressed."""
    keys = f"[the caller pressed the keys: {' '.join(turn.keys)}]" if turn.keys else ""
    if turn.text:
        return f"{turn.text} {keys}" if keys else turn.text
    return keys or NO_TRANSCRIPT
# Bad frames on one stream: the first few are logged in full, then one summary line per interval at most.
INVALID_LOG_BURST = 5
INVALID_LOG_INTERVAL_S = 10.0
# Frames kept from before `start` (normally `connected` and `start` itself) to hand to the call's subscribers.
PRESTART_EVENTS = 8


@dataclass(slots=True)
class CallDeps:
    """What every call shares, built once by create_app()."""

    settings: Settings
    clock: Clock
    wall: Callable[[], float]
    scorer: WindowScorer
    vad_config: VadConfig
    tts: TtsEngine
    llm: LlmClient
    registry: CallRegistry
    metrics: Metrics
    tokens: StreamTokens
    require_token: bool
    fallback: list[Synthesis]  # filled at startup: the fallback line, synthesised before any call needs it
    stt: SttEngine | None = None  # the recognizer (STT_ENGINE); None: caller turns have no words
    tools: ToolRegistry = field(default_factory=ToolRegistry)  # the tools the agent may run (app/call/tools.py)
    end_of_turn: EndOfTurn | None = None  # the end-of-turn model (TURN_END_MODEL), one per process
    # Called once per stream when its `start` is accepted, with the session: the place to subscribe to its
    # events (the recorder does; a replay collects them). Subscribers attached here also get the frames that
    # arrived before `start`.
    observers: list[Callable[[CallSession], None]] = field(default_factory=list)


@dataclass(slots=True)
class _Held:
    """A provisional stop: the clear went out, the agent's turn waits to be resumed or ended."""

    id: str
    t0: float  # the deciding frame's arrival
    t_clear: float
    t_drop: float
    heard: HeardPosition
    turn: AgentTurn | None


class StreamRefused(Exception):
    """The stream's start was refused (bad token, full, unsupported audio); the socket is closed with a reason."""


class CallSession:
    def __init__(
        self,
        protocol: TelephonyProtocol,
        send: Callable[[str], Awaitable[None]],
        deps: CallDeps,
    ) -> None:
        self.protocol = protocol
        self._raw_send = send
        self.deps = deps
        self._clock = deps.clock
        self._metrics = deps.metrics
        self.record: CallRecord | None = None
        self.ledger = PlaybackLedger()
        # Everything this call decides, as typed events (app/call/events.py); subscribers attach at `start`.
        self.events = CallEvents()
        self._prestart: list[CallEvent] = []
        s = deps.settings
        self.outbox = Outbox(protocol, self._send, self.ledger, deps.clock, s.playback_chunk_ms, s.playback_lead_ms,
                             self.events)
        # Turn taking (TURN_POLICY): under progressive the VAD's turn end is only the backstop (turn_taking.py).
        taking = TurnTakingConfig.from_settings(s, model=deps.end_of_turn is not None,
                                                thresholds=deps.end_of_turn.thresholds if deps.end_of_turn else None)
        # (strict with the end-of-turn model takes turns through the table too: `takes_turns`)
        progressive = taking.takes_turns and deps.stt is not None
        self.turn_taker = TurnTaker(taking) if progressive else None
        self._draft: Draft | None = None  # the held reply to the caller's words so far
        self._spoken: Draft | None = None  # ... confirmed: the turn's end adopts it
        self._speculation: asyncio.Task[None] | None = None  # the words of the turn so far, being heard
        self._asking: asyncio.Task[None] | None = None  # the end-of-turn model, asked about the pause
        vad_config = deps.vad_config if not progressive else replace(
            deps.vad_config, turn_end_silence_ms=taking.vad_turn_end_ms(deps.vad_config.turn_end_silence_ms))
        self.vad = CallVad(vad_config, deps.scorer)
        self.vad.on_change = self._vad_changed
        self.policy = BargeInPolicy(PolicyConfig.from_settings(s))
        self._pauses: list[SpeechPaused] = []
        self.vad.on_pause = self._pauses.append
        # The agent's own voice on the caller's leg (speakerphones): cleaned before the VAD hears the frame.
        self.guard = EchoGuard(EchoConfig(coherence_always=s.echo_coherence_always)) if s.echo_guard else None
        if self.guard is not None:
            self.outbox.on_sent = self._agent_audio_sent
        self._held: _Held | None = None
        # The call's tool runs: each tool call at most once; a barge-in cancels mutations, lets reads finish.
        self.tools = ToolRunner(deps.tools, deps.clock.now, s.tool_timeout_s)
        self.events.subscribe(self._words_for_tools, frames=False)
        self._candidate: SpeechStarted | None = None  # the VAD's latest onset: its confidence goes on record
        self._interrupted_at: float | None = None  # a barge-in ended the agent's turn; the caller's turn follows
        self._last_user_speech_ms = 0.0
        self._ack_credit = 0.0
        self._keys = ""  # DTMF keys of the caller's open turn
        self._turn_due: float | None = None  # when the caller's turn ends if they say nothing (keys, "wait")
        # The recognizer's front (STT_ENGINE): the caller's audio kept, stretches of it transcribed.
        self.hearing = None if deps.stt is None else Hearing(
            deps.stt, deps.clock.now, s.stt_preroll_ms / 1000.0, s.stt_max_turn_s, s.stt_timeout_s)
        self._utt_start: float | None = None  # the onset of the caller's speech in the open turn
        self._speech_end: float | None = None  # ... and its end (the turn gap runs from here)
        self._candidate_gen = 0  # counts candidates: late words apply only to the latest
        self._hearing_turns: list[Turn] = []  # caller turns over, waiting for their words
        self._turn_speech_end: dict[int, float] = {}  # caller turn id -> its end of speech, until on record
        self._answer_due: tuple[float, str | None] | None = None  # an unfinished turn's answer waits till then
        self.agent: AgentTurn | None = None
        self._agent_record: Turn | None = None
        self._user_record: Turn | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._hear_tasks: set[asyncio.Task[None]] = set()  # caller turns being heard: close waits for them
        # The words that stopped the agent after it resumed over them (start, end, words): the turn's words
        # if the caller says nothing more
        self._late_heard: tuple[float, float, Heard] | None = None
        self._closing = False
        self.last_frame_at = deps.clock.now()
        # This stream's claim on its call in the registry. Made here, not taken from the frame: the peer chooses
        # the stream id, so it cannot prove ownership.
        self._stream_key = uuid.uuid4().hex
        self.opened_at = self.last_frame_at  # the start deadline runs from here; frames do not move it
        self._invalid_log = LogBudget(INVALID_LOG_BURST, INVALID_LOG_INTERVAL_S)
        self.closed = False
        self.stream_id: str | None = None
        self._log_extra: dict[str, str] = {}

    # -- socket writes ---------------------------------------------------------------------------
    async def _send(self, text: str) -> None:
        if self.closed:
            return
        try:
            await self._raw_send(text)
        except Exception as exc:  # a dead socket must not kill the pacer or the barge-in path
            logger.info("send failed, stream closing: %s", type(exc).__name__, extra=self._log_extra)
            self.closed = True
            return
        if self.events.active:  # after the write: recording never delays a frame, least of all a clear
            self.events.emit(WireSent(self._clock.now(), text))

    # -- inbound ---------------------------------------------------------------------------------
    async def handle_text(self, text: str, arrival: float) -> None:
        """One inbound text frame. Raises StreamRefused when the stream must end."""
        self.last_frame_at = arrival
        if self.events.active:
            self.events.emit(WireReceived(arrival, text))
        elif self.record is None and len(self._prestart) < PRESTART_EVENTS:
            self._prestart.append(WireReceived(arrival, text))
        await self._dispatch(self.protocol.receive(text), arrival)

    async def handle_bytes(self, data: bytes, arrival: float) -> None:
        """One inbound binary frame: audio on a binary adapter (/pcm/stream); the carriers send none."""
        self.last_frame_at = arrival
        if not isinstance(self.protocol, BinaryTelephonyProtocol):
            self.invalid_binary()
            return
        await self._dispatch(self.protocol.receive_bytes(data), arrival)

    async def _dispatch(self, events: list[TelephonyEvent], arrival: float) -> None:
        for event in events:
            match event:
                case AudioReceived(payload=payload):
                    if self.record is not None:
                        await self._on_audio(payload, arrival)
                case MarkPlayed(name=name):
                    self.mark_played(name, arrival)
                case CallStarted():
                    await self._on_start(event)
                case AudioCleared():
                    pass  # the ledger forgot the cut checkpoints when we sent clearAudio
                case DtmfReceived(digit=digit):
                    if self.record is not None:
                        await self._on_key(digit, arrival)
                case StreamConnected():
                    pass
                case CallEnded():
                    raise StreamRefused("stop")
                case InvalidMessage(reason=reason):
                    self._invalid("invalid", reason)
                case UnknownEvent(event=name):
                    self._invalid("unknown", f"unknown event {name[:40]!r}")
                case _:
                    assert_never(event)

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

    def mark_played(self, name: str, at: float) -> None:
        """A marker's audio has played: the provider said so, or a wire with no echo estimated it (/pcm/stream)."""
        known = self.ledger.ack(name, at)
        if self.events.active:
            self.events.emit(MarkAcked(at, name, known))

    def invalid_binary(self) -> None:
        self._invalid("binary", "binary frame (providers send JSON text)")

    def _invalid(self, kind: str, reason: str) -> None:
        # Counted always; logged within a per-stream budget, escaped (the reason can carry the peer's text).
        self._metrics.invalid_frames_total.labels(self.protocol.name, kind).inc()
        if self.record is not None:
            self.record.invalid_frames += 1
        logged = self._invalid_log.take(self._clock.now(), reason)
        if logged == 0:
            logger.warning("ignored inbound frame: %s", safe(reason, 160, quote=False), extra=self._log_extra)
        elif logged is not None:
            self._log_suppressed(logged, reason)

    def flush_invalid_log(self, now: float, *, final: bool = False) -> None:
        """Sum up the bad frames not logged yet, when a summary is due (or the stream ends)."""
        count = self._invalid_log.flush(now, force=final)
        if count is not None:
            self._log_suppressed(count, self._invalid_log.last_detail)

    def _log_suppressed(self, count: int, latest: str) -> None:
        logger.warning("ignored %d more inbound frames not logged one by one (%d on this stream; latest: %s)",
                       count, self._invalid_log.seen, safe(latest, 160, quote=False), extra=self._log_extra)

    async def _on_start(self, event: CallStarted) -> None:
        if self.record is not None:
            self._invalid("invalid", "second start on one stream")
            return
        self._log_extra = {"call_sid": safe(event.call_id, quote=False), "provider": self.protocol.name}
        logctx.set_call(event.call_id, event.stream_id, self.protocol.name)  # every later line of this stream
        # The token is bound to the provider too: a Twilio call's token opens nothing on /plivo/stream.
        if self.deps.require_token and not await self.deps.tokens.claim(
            self.protocol.name, event.call_id, event.custom.get("token", "")
        ):
            logger.warning("stream refused: missing, reused or wrong per-call token", extra=self._log_extra)
            raise StreamRefused("bad token")
        if event.encoding.lower() not in ("audio/x-mulaw", "mulaw", "audio/mulaw") or event.sample_rate != 8000:
            logger.warning("stream refused: unsupported audio %s/%s", safe(event.encoding), event.sample_rate,
                           extra=self._log_extra)
            raise StreamRefused("unsupported audio format")
        registry = self.deps.registry
        await registry.prefetch(event.call_id)  # a call that moved here from another replica carries on
        known = registry.get(event.call_id)
        if (known is None or known.ended_at is not None) and registry.active >= self.deps.settings.max_calls:
            raise StreamRefused("server full")
        try:
            record, is_new = registry.open(event.call_id, self.protocol.name, self._stream_key, self.deps.wall())
        except CallInUse:
            # Refused before touching the record: no stream id, no generation, no turns for a second stream.
            logger.warning("stream refused: the call already has a live stream", extra=self._log_extra)
            raise StreamRefused("call already has a live stream") from None
        record.stream_ids.append(event.stream_id)
        self.record = record
        self.stream_id = event.stream_id
        self.events.subscribe(CallBookkeeper(record, self.protocol.name, self._metrics, self.deps.wall), frames=False)
        for observe in self.deps.observers:
            observe(self)
        if self.events.active:
            for early in self._prestart:
                self.events.emit(early)
        self._prestart.clear()
        # A reconnecting stream starts a fresh generation, so nothing from the old stream can count as heard.
        record.generation += 1
        self.ledger.generation = record.generation
        self._metrics.active_calls.inc()
        self._metrics.calls_total.labels(self.protocol.name).inc()
        logger.info("stream started (new call: %s)", is_new, extra=self._log_extra)
        self._tasks.append(asyncio.create_task(self._pace(), name="outbox"))
        if is_new:
            self._start_agent_turn(text=self.deps.settings.agent_greeting)

    async def _pace(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.outbox.run()

    # -- the barge-in path -----------------------------------------------------------------------
    async def _on_audio(self, payload: bytes, arrival: float) -> None:
        if self.hearing is not None:
            self.hearing.push(payload, arrival)
        pcm = ulaw_to_pcm16(payload)
        guard = self.guard
        if guard is not None and len(pcm) == FRAME and guard.active(arrival):
            pcm, _ = guard.process(pcm, arrival)
        events = await self.vad.feed(pcm, arrival)
        self._metrics.observe_frame_lag((self._clock.now() - arrival) * 1000.0)
        for event in events:
            await self._on_vad(event, arrival)
        if self._pauses or self.policy.state is not State.IDLE:
            await self._settle(arrival)
        if self.turn_taker is not None:
            await self._take_turn(arrival)

    def _agent_audio_sent(self, turn_id: int, ulaw: bytes, play_at: float) -> None:
        if self.guard is not None:
            self.guard.played(ulaw_to_pcm16(ulaw), play_at)

    def _vad_changed(self, now: float, previous: VadState, state: VadState, probability: float, level: float) -> None:
        if self.events.active:
            self.events.emit(VadChanged(now, state.value, previous.value, round(probability, 4), round(level, 1)))

    async def _on_vad(self, event: VadEvent, arrival: float) -> None:
        if isinstance(event, SpeechStarted):
            self._candidate = event
            self._candidate_gen += 1
            start = self.vad.speech_started_at
            speech_start = arrival - event.sustained_ms / 1000.0 if start is None else start
            if self._utt_start is None:
                self._utt_start = speech_start
            guard = self.guard
            echo_possible = guard is not None and guard.echo_seen and guard.active(arrival)
            await self._decide(Candidate(
                arrival,
                speech_start=speech_start,
                agent_speaking=self.agent_active(arrival),
                in_uninterruptible=self._in_span(arrival),
                echo_possible=echo_possible,
                # What the guard says of the candidate so far, if it can be believed: low, it clears at once.
                echo_share=guard.echo_share(speech_start, arrival) if echo_possible and guard and guard.trusted
                else None,
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
        return "speech" if impulse.is_speech(pcm[: impulse.window_samples()], scored) else "noise"

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
        self._held = _Held(bargein_id, t0, t_clear, t_drop, heard, turn)
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
        # 3. Close the LLM stream (cancel() returns once the HTTP response is closed).
        if turn is not None:
            await turn.cancel()
        t_llm = clock.now()
        tools = self.tools.on_barge_in()  # mutations in flight cancelled; reads run on, for the next turn
        # 4. Cut the agent's turn at the last character the caller heard.
        cut = self._cut_agent_turn(turn, rec, heard, interrupted=True)
        t_end = clock.now()
        self.outbox.not_before = t_end + self.deps.settings.bargein_hard_silence_ms / 1000.0
        self._interrupted_at = t0
        if self.record is not None:
            self.record.generation = self.ledger.generation
        self._start_user_turn(t1)

        def ms(t: float, since: float) -> float:
            return round((t - since) * 1000.0, 3)

        bargein_id = held.id if held is not None else uuid.uuid4().hex[:12]
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
        # Speech too short to be a turn: the agent went on at once, and the words may still stop it ("stop" and
        # "okay" sound alike for half a second).
        if self.hearing is not None and start is not None and reason in ("backchannel", "short", "repeated"):
            self._spawn(self._late_words(start, t1, self._candidate_gen))

    async def _late_words(self, start: float, end: float, gen: int) -> None:
        assert self.hearing is not None
        heard = await self.hearing.hear(start, end)
        now = self._clock.now()
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

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.append(task)
        task.add_done_callback(self._forget_task)
        return task

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    # -- turns -----------------------------------------------------------------------------------
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
        start, self._utt_start = self._utt_start, None
        late, self._late_heard = self._late_heard, None
        prefix = self._acknowledgement(interrupted is not None)
        spoken = self._turn_over()
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

    def _hear(self, work: Coroutine[Any, Any, None]) -> None:
        task = self._spawn(work)
        self._hear_tasks.add(task)
        task.add_done_callback(self._hear_tasks.discard)

    def _words_in(self, rec: Turn, heard: Heard, ended_at: float, prefix: str | None) -> None:
        """A caller turn's words are in: on record; the agent answers (later if the words sound unfinished)."""
        self._turn_heard(rec, heard, ended_at)
        if self._closing:  # the caller hung up: their words are kept, nobody is left to answer
            return
        wait_s = self.deps.settings.turn_unfinished_wait_ms / 1000.0
        if wait_s > 0 and unfinished(heard.text):  # "... a table for": the caller is likely to go on
            self._answer_due = (self._clock.now() + wait_s, prefix)
            return
        self._answer(prefix)

    def _turn_heard(self, rec: Turn, heard: Heard, ended_at: float) -> None:
        """A caller turn's words are in: on record, and the turn ends."""
        rec.text, rec.ended_at = heard.text, ended_at
        self.events.emit(Transcribed(self._clock.now(), rec.id, heard.text, round(heard.audio_ms, 1),
                                     round(heard.stt_ms, 1), heard.error))
        self._metrics.observe_stt(heard.stt_ms / 1000.0, heard.error is None)
        self._turn_ended(rec, None)

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
                task = asyncio.create_task(self._speculate(self._utt_start, now, speech_end))
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
            case TurnAction.NONE | TurnAction.WAIT:
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

    async def _speculate(self, start: float, end: float, speech_end: float) -> None:
        """The words of the turn so far; on them, the held reply (the table says whether)."""
        assert self.hearing is not None and self.turn_taker is not None
        heard = await self.hearing.hear(start, end)
        self._speculation = None
        step = self.turn_taker.feed(WordsIn(self._clock.now(), speech_end, heard.text, heard.error is None))
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
        if len(self.deps.tools):  # a tool must never run for a reply the caller may not get: words only
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

    def _turn_over(self) -> Draft | None:
        """The caller's turn ends: the confirmed draft, if there is one; anything speculative is dropped."""
        spoken, self._spoken = self._spoken, None
        taker = self.turn_taker
        if taker is None:
            return spoken
        if spoken is None:
            step = taker.feed(TurnOver(self._clock.now()))
            if step.action is TurnAction.SPEAK:  # the VAD's backstop came first: the turn is over all the same
                spoken, self._draft = self._draft, None
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

    def _cut_agent_turn(
        self, turn: AgentTurn | None, rec: Turn | None, heard: HeardPosition, interrupted: bool
    ) -> Cut | None:
        """Close an agent turn's record at the heard position (the last character the caller heard)."""
        if turn is None or rec is None:
            return None
        audio_ms = heard.audio_ms if heard.turn_id == turn.turn_id else 0.0
        cut = turn.cut_at(audio_ms)
        rec.interrupted = interrupted
        rec.intended_text = turn.llm_text or turn.text
        rec.text = rec.heard_text = cut.heard_text
        rec.heard_chars = cut.char_offset
        rec.heard_audio_ms = round(audio_ms, 1)
        rec.audio_ms = round(turn.audio_ms, 1)
        rec.fallback = rec.fallback or turn.used_fallback
        rec.ended_at = self.deps.wall()
        self._turn_ended(rec, turn.audio_ms)
        if rec is self._agent_record:
            self._agent_record = None
        return cut

    def _finalize_agent_turn(self) -> None:
        turn, rec = self.agent, self._agent_record
        if turn is None or rec is None:
            return
        rec.text = turn.text
        rec.audio_ms = round(turn.audio_ms, 1)
        rec.fallback = turn.used_fallback
        rec.ended_at = self.deps.wall()
        self._turn_ended(rec, turn.audio_ms)
        self._agent_record = None

    def _turn_ended(self, rec: Turn, audio_ms: float | None) -> None:
        # Always emitted (one per turn): the call store writes a turn once it has ended (app/store/writer.py).
        self.events.emit(TurnEnded(
            self._clock.now(), rec.id, rec.role, rec.text, rec.interrupted, rec.heard_text, rec.heard_chars,
            rec.heard_audio_ms, None if audio_ms is None else round(audio_ms, 1), rec.keys,
            self._turn_speech_end.pop(rec.id, None),
        ))

    def _reply_tts(self) -> TtsEngine:
        """The engine for the next reply: at AGENT_CLARIFY_PACE when the caller cut the agent off and then asked
        to hear it again ("sorry?", "say that again"): the sentence comes back slower, not just again."""
        pace = self.deps.settings.agent_clarify_pace
        if pace >= 1.0 or self.record is None:
            return self.deps.tts
        asked: Turn | None = None
        for turn in reversed(self.record.turns):
            if asked is None:
                if turn.role == "user":
                    asked = turn
            elif turn.role == "agent" and turn.text:
                if turn.interrupted and interruption(asked.text or "") == "clarification":
                    return at_pace(self.deps.tts, pace)
                break
        return self.deps.tts

    def _start_agent_turn(self, text: str | None = None, prefix: str | None = None) -> None:
        assert self.record is not None
        self._finalize_agent_turn()
        tts = self._reply_tts() if text is None else self.deps.tts  # a fixed line (greeting) is never a reply
        rec = self.record.new_turn("agent", self.deps.wall())
        self.events.emit(TurnStarted(self._clock.now(), rec.id, "agent"))
        s = self.deps.settings
        fallback = self.deps.fallback[0] if self.deps.fallback else None

        def on_fallback(reason: str) -> None:
            rec.fallback = True
            self._metrics.fallbacks_total.labels("turn").inc()

        self.agent = AgentTurn(
            rec.id,
            outbox=self.outbox,
            tts=tts,
            tts_timeout_s=s.tts_timeout_s,
            llm=self.deps.llm,
            # Built when the turn's request goes out, after the tool calls still in flight have settled.
            context=None if text is not None else (lambda: self._messages(rec)),
            text=text,
            llm_first_token_timeout_s=s.llm_first_token_timeout_s,
            fallback=fallback,
            on_fallback=on_fallback,
            max_reply_chars=s.llm_max_reply_chars,
            max_queued_audio_ms=s.max_queued_audio_s * 1000.0,
            events=self.events,
            clock=self._clock,
            prefix=prefix,
            first_clause_chars=s.tts_first_clause_chars,
            tools=self.tools if len(self.deps.tools) else None,
            holding_text=s.agent_tool_holding_text,
            holding_after_s=s.tool_holding_after_ms / 1000.0,
            settle_tools_s=s.tool_timeout_s,
        )
        self._agent_record = rec
        self.agent.start()

    def _messages(self, current: Turn | None = None) -> list[ChatMessage]:
        """The next request's messages; `current` is the agent turn they are for (left out; by default the
        session's agent turn on record)."""
        assert self.record is not None
        if current is None:
            current = self._agent_record
        s = self.deps.settings
        system = s.agent_system_prompt
        if s.agent_state_in_prompt:
            now = self._clock.now()
            state = conversation_state(
                self.record.turns, self.record.bargeins, current=current,
                agent_speaking=self.outbox.has_queued or self.ledger.playing(now),
                tools_in_flight=[e.call.name for e in self.tools.in_flight()],
            )
            system = f"{system}\n\n{state.render()}"
        messages: list[ChatMessage] = [{"role": "system", "content": system}]
        # Each turn's settled tool calls and results go before that turn's words (and once only).
        exchanges = [t for t in self.tools.ledger.turn_ids() if current is None or t != current.id]
        for turn in self.record.history():
            if turn is current:
                continue
            while exchanges and exchanges[0] <= turn.id:
                messages.extend(self.tools.ledger.context(exchanges.pop(0)))
            if turn.role == "user":
                messages.append({"role": "user", "content": user_content(turn)})
            elif turn.interrupted:  # what the caller heard, never the unspoken rest, and that it was cut
                messages.append({"role": "assistant", "content": f"{turn.text}{CUT_MARK}"})
            else:
                messages.append({"role": "assistant", "content": turn.text})
        for turn_id in exchanges:  # an agent turn cut before it said a word: its calls still count
            messages.extend(self.tools.ledger.context(turn_id))
        return messages

    def _words_for_tools(self, event: CallEvent) -> None:
        """The caller's words are in: a withdrawal or correction cancels the mutations in flight."""
        if isinstance(event, Transcribed) and event.text:
            self.tools.on_words(interruption(event.text))

    # -- timer -----------------------------------------------------------------------------------
    async def on_tick(self, now: float) -> None:
        """Driven by a timer: turn state must move even when no frames arrive. Raises StreamRefused on idle."""
        if self.record is None:
            # Measured from the upgrade, not the last frame: junk frames must not keep an unstarted stream open.
            if now - self.opened_at > self.deps.settings.stream_start_timeout_s:
                raise StreamRefused("no start")
            if now - self.last_frame_at > self.deps.settings.idle_timeout_s:
                raise StreamRefused("idle before start")
            self.flush_invalid_log(now)
            return
        self.flush_invalid_log(now)
        if self.drained:  # the drain goodbye has played (drain_goodbye below): a clean end
            raise StreamRefused("drain")
        for event in self.vad.tick(now):
            await self._on_vad(event, now)
        if self._pauses or self.policy.state is not State.IDLE:
            await self._settle(now)
        if self.turn_taker is not None:
            await self._take_turn(now)
        if self._answer_due is not None and now >= self._answer_due[0]:
            self._answer(self._answer_due[1])
        # The caller's keys end their turn, unless the caller is also talking (then the talk's silence does) or
        # the agent is (keys that do not interrupt are answered when it has finished).
        if self._turn_due is not None and now >= self._turn_due and self.policy.state is State.IDLE \
                and not self.vad.speaking and not self.agent_active(now):
            self._end_user_turn()
        if self.agent is not None and self.agent.finished and not self.agent_active(now):
            self._finalize_agent_turn()
        if now - self.last_frame_at > self.deps.settings.idle_timeout_s:
            raise StreamRefused("idle timeout")

    # -- end -------------------------------------------------------------------------------------
    async def close(self, reason: str) -> None:
        self.vad.close()  # the batcher drops this call's queued windows instead of running them for nobody
        if self.agent is not None:
            now = self._clock.now()
            held, self._held = self._held, None
            if held is not None:  # ended during a provisional stop: the caller heard up to the clear
                cut = self._cut_agent_turn(self.agent, self._agent_record, held.heard, interrupted=True)
                ms = round((now - held.t0) * 1000.0, 3)
                self.events.emit(BargeInHandled(
                    now, held.id, round((held.t_clear - held.t0) * 1000.0, 3), 0.0, None, 0.0,
                    cut_word_index=cut.word_index if cut else None,
                    cut_char_offset=cut.char_offset if cut else None,
                    heard_audio_ms=round(held.heard.audio_ms, 1) if cut else None,
                    outcome="stopped", reason="hangup", settled_ms=ms,
                ))
            elif self.agent_active(now):
                # The call ended mid-sentence: keep what the caller heard, not what was queued.
                self._cut_agent_turn(self.agent, self._agent_record, self.ledger.heard(now), interrupted=False)
            self._finalize_agent_turn()
            await self.agent.cancel()
        await self.tools.aclose()
        await self._hear_before_close()
        drafts = [d.turn for d in (self._draft, self._spoken) if d is not None and d.turn is not None]
        self._draft = self._spoken = None
        for draft_turn in drafts:  # a held reply never spoken: closed with the call
            await draft_turn.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for rec in self._hearing_turns:  # ended before their words came: on record without them
            rec.ended_at = rec.ended_at or self.deps.wall()
            self._turn_ended(rec, None)
        self._hearing_turns.clear()
        # Only the stream that owns the call may end it (the registry checks the key it was opened with).
        if self.record is not None and self.deps.registry.close(
            self.record, self._stream_key, reason, self.deps.wall()
        ):
            self.record.generation = max(self.record.generation, self.ledger.generation)
            self._metrics.active_calls.dec()
            logger.info("stream ended: %s", reason, extra=self._log_extra)
        self.closed = True
        self.events.emit(CallClosed(self._clock.now(), reason))

    async def _hear_before_close(self) -> None:
        """What the caller said before hanging up is kept: a turn still open ("okay, bye") is heard too, and
        the turns being heard get HEARING_AT_CLOSE_S to finish; none of them is answered."""
        self._closing = True
        rec = self._user_record
        if self.hearing is not None and rec is not None and self._utt_start is not None:
            self._user_record = None
            self._hearing_turns.append(rec)
            self._hear(self._hear_turn(rec, self._utt_start, self._clock.now(), self.deps.wall(), None))
        if self._hear_tasks:
            await asyncio.wait(set(self._hear_tasks), timeout=HEARING_AT_CLOSE_S)

    # -- drain (app/drain.py) --------------------------------------------------------------------
    drained = False  # the drain goodbye is over: the next tick ends the stream with reason "drain"

    async def drain_goodbye(self, text: str, timeout_s: float) -> None:
        """The server is draining and this call is still up at DRAIN_TIMEOUT_S: cut the agent where the caller
        stopped hearing it, say `text`, and once it has played (or after `timeout_s`) end the stream ("drain",
        a clean end: the after-stream webhook hangs up without the apology). The caller can still barge in."""
        if self.record is None or self.closed:
            return
        now = self._clock.now()
        if self.agent is not None:
            if self.agent_active(now):
                held, self._held = self._held, None
                heard = held.heard if held is not None else (await self._flush())[1]
                self._cut_agent_turn(self.agent, self._agent_record, heard, interrupted=False)
            await self.agent.cancel()
        self._start_agent_turn(text=text)
        deadline = now + timeout_s
        while not self.closed and self._clock.now() < deadline:
            turn = self.agent
            if turn is None or (turn.finished and not self.agent_active(self._clock.now())):
                break
            await asyncio.sleep(0.05)
        self.drained = True
