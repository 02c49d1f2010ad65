"""CallSession: one per media stream. Dispatches telephony events, runs barge-in, owns the agent's turns.

Theory of operation
-------------------
Frames come in through `handle_text` / `handle_bytes` (app/routes/media.py owns the socket) and are dispatched
by type: audio to `_on_audio`, marks to the playback ledger, `start` to `_on_start`, keys to the caller's turn;
a timer drives `on_tick` so turn state moves while no frames arrive; `close` ends the stream. This module holds
that wiring and builds every part of a call. The behaviour is in three parts, a module each:
app/call/interruption.py (barge-in: a VAD event or a key -> the policy -> clear, hold, stop or resume the agent),
app/call/caller_turn.py (the caller's turn: open, end, hear, answer; progressive turn taking) and
app/call/agent_turns.py (the agent's turns: start, cut at the heard position, finalize; the LLM messages).
They are mixins of `CallSession`, not collaborators: they share one state (the open caller turn, the agent's
turn and its record, the held stop, the timing of the caller's speech) and call each other both ways (a
barge-in opens the caller's turn; a turn end confirmed early is a policy input), so a collaborator would need
most of the session handed back to it. Each declares the state it uses for the type checker; `__init__` sets it.

The barge-in path is `_on_audio` -> `CallVad.feed` -> `BargeInPolicy` (app/bargein/detector.py) -> `_decide`
(app/call/interruption.py), whose first await (`_flush`) writes the provider's clear to the socket. Nothing
slow runs on it: the VAD's model run is shared by every call that had a frame ready in the same loop
iteration, and everything else on the path is synchronous arithmetic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, assert_never

from app import logctx
from app.audio import ulaw_to_pcm16
from app.bargein.detector import BargeInPolicy, PolicyConfig, State
from app.bargein.echo import EchoConfig, EchoGuard
from app.bargein.playback import PlaybackLedger
from app.bargein.silero import WindowScorer
from app.bargein.vad import FRAME, CallVad, SpeechPaused, SpeechStarted, VadConfig, VadState
from app.bargein.words import interruption
from app.call.agent_turns import AgentTurnMixin
from app.call.bookkeeping import CallBookkeeper
from app.call.caller_turn import HEARING_AT_CLOSE_S as HEARING_AT_CLOSE_S  # re-exported: it was defined here
from app.call.caller_turn import CallerTurnMixin
from app.call.draft import Draft
from app.call.end_of_turn import EndOfTurn
from app.call.events import (
    CallClosed,
    CallEvent,
    CallEvents,
    MarkAcked,
    Transcribed,
    VadChanged,
    WireReceived,
    WireSent,
)
from app.call.going_on import StopLeft
from app.call.hearing import Heard, Hearing
from app.call.interruption import BargeInMixin, Held
from app.call.llm_context import CUT_MARK as CUT_MARK  # re-exported: tests and callers import them from here
from app.call.llm_context import NO_TRANSCRIPT as NO_TRANSCRIPT
from app.call.llm_context import user_content as user_content
from app.call.outbox import Outbox
from app.call.registry import CallInUse, CallRegistry
from app.call.tools import ToolRegistry, ToolRunner
from app.call.turn import AgentTurn
from app.call.turn_taking import TurnTaker, TurnTakingConfig
from app.clock import Clock
from app.logsafe import LogBudget, safe
from app.metrics import Metrics
from app.settings import Settings
from app.stream_tokens import StreamTokens
from app.transcript import CallRecord, Turn
from providers.llm.base import LlmClient
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
from providers.tts.base import Synthesis, TtsEngine

logger = logging.getLogger(__name__)

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


class StreamRefused(Exception):
    """The stream's start was refused (bad token, full, unsupported audio); the socket is closed with a reason."""


class CallSession(BargeInMixin, CallerTurnMixin, AgentTurnMixin):
    """One media stream: its wiring; the barge-in, caller-turn and agent-turn parts are the mixins'."""

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
        self._watch_near_misses()  # near misses over the agent (app/call/interruption.py)
        # The agent's own voice on the caller's leg (speakerphones): cleaned before the VAD hears the frame.
        self.guard = EchoGuard(EchoConfig(coherence_always=s.echo_coherence_always)) if s.echo_guard else None
        if self.guard is not None:
            self.outbox.on_sent = self._agent_audio_sent
        self._held: Held | None = None
        # The call's tool runs: each tool call at most once; a barge-in cancels mutations, lets reads finish.
        self.tools = ToolRunner(deps.tools, deps.clock.now, s.tool_timeout_s)
        self.events.subscribe(self._words_for_tools, frames=False)
        self._candidate: SpeechStarted | None = None  # the VAD's latest onset: its confidence goes on record
        self._interrupted_at: float | None = None  # a barge-in ended the agent's turn; the caller's turn follows
        # That barge-in and what it left unsaid (app/call/going_on.py): taken by the caller's turn that follows
        # it (the barge-in's record gets the kind of its words; the rest is said if it holds no words); by
        # caller turn id while the turn is being heard.
        self._stop_left: StopLeft | None = None
        self._left_for: dict[int, StopLeft] = {}
        self._last_user_speech_ms = 0.0
        self._ack_credit = 0.0
        self._keys = ""  # DTMF keys of the caller's open turn
        self._turn_due: float | None = None  # when the caller's turn ends if they say nothing (keys, "wait")
        # The recognizer's front (STT_ENGINE): the caller's audio kept, stretches of it transcribed.
        self.hearing = None if deps.stt is None else Hearing(
            deps.stt, deps.clock.now, s.stt_preroll_ms / 1000.0, s.stt_max_turn_s, s.stt_timeout_s)
        self._utt_start: float | None = None  # the onset of the caller's speech in the open turn
        # The last utterance the agent resumed over (its onset, when it was resumed): a turn that soon after is
        # heard from its onset (app/call/interruption.py, STT_JOIN_RESUMED_S).
        self._resumed_utt: tuple[float, float] | None = None
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
        # Called once the `start` is found valid (token claimed, audio format known), before the store is read:
        # the route frees the stream's slot among the unstarted ones there (call/admission.py), so a store slowed
        # by a burst of calls does not keep valid streams counted against MAX_UNSTARTED_STREAMS_PER_ADDRESS.
        self.on_valid_start: Callable[[], None] | None = None
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
        if self.on_valid_start is not None:
            self.on_valid_start()  # from here MAX_CALLS bounds the stream (checked below, at `open`)
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
        elif self._stop_left is not None:  # a caller turn a stop opened: heard at its pause (going on, at once)
            self._watch_go_on(arrival)

    def _agent_audio_sent(self, turn_id: int, ulaw: bytes, play_at: float) -> None:
        if self.guard is not None:
            self.guard.played(ulaw_to_pcm16(ulaw), play_at)

    def _vad_changed(self, now: float, previous: VadState, state: VadState, probability: float, level: float) -> None:
        if self.events.active:
            self.events.emit(VadChanged(now, state.value, previous.value, round(probability, 4), round(level, 1)))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.append(task)
        task.add_done_callback(self._forget_task)
        return task

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

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
        if self.drained:  # the drain goodbye has played (drain_goodbye, app/call/agent_turns.py): a clean end
            raise StreamRefused("drain")
        for event in self.vad.tick(now):
            await self._on_vad(event, now)
        if self._pauses or self.policy.state is not State.IDLE:
            await self._settle(now)
        if self.turn_taker is not None:
            await self._take_turn(now)
        elif self._stop_left is not None:
            self._watch_go_on(now)
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
            # Ended during a provisional stop: cut at the clear (app/call/interruption.py). Else if the call ended
            # mid-sentence: keep what the caller heard, not what was queued.
            if not self._stop_held_at_hangup(now) and self.agent_active(now):
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
