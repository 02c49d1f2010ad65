"""The agent's turns in a call: started, cut where the caller stopped hearing them, finalized; the drain goodbye.

Theory of operation
-------------------
An agent turn is one `AgentTurn` (app/call/turn.py: LLM stream -> TTS -> outbox) and one record turn
(`Turn` in app/transcript.py), the call's single account of what was said. `_start_agent_turn` ends the
previous turn on record, opens the new one and starts the generation; its request's messages are built when
it goes out (`_messages`: the history as the caller lived it, app/call/llm_context.py, with the conversation
state in the system prompt, app/call/conversation.py), after the tool calls still in flight have settled. A
reply after the caller cut the agent off and asked to hear it again ("sorry?") is spoken at
AGENT_CLARIFY_PACE (`_reply_tts`).

A turn ends on record one of two ways: spoken in full (`_finalize_agent_turn`: the text, its audio length),
or cut (`_cut_agent_turn`: at the heard position, the last character the caller heard, with the intended text
kept apart from what was heard); either way a `TurnEnded` event goes out, once per turn, which is what the call
store writes. `drain_goodbye` is the agent's last turn when the server drains.

This is a mixin of `CallSession` (app/call/session.py says why); the session state it uses is declared below.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from app.bargein.playback import HeardPosition
from app.bargein.words import interruption
from app.call.conversation import conversation_state
from app.call.events import TurnEnded, TurnStarted
from app.call.llm_context import llm_messages
from app.call.turn import AgentTurn, Cut
from app.transcript import Turn
from providers.llm.base import ChatMessage
from providers.tts.base import TtsEngine, at_pace

if TYPE_CHECKING:
    from app.bargein.playback import PlaybackLedger
    from app.call.events import CallEvents
    from app.call.interruption import Held
    from app.call.outbox import Outbox
    from app.call.session import CallDeps
    from app.call.tools import ToolRunner
    from app.clock import Clock
    from app.metrics import Metrics
    from app.transcript import CallRecord


class AgentTurnMixin:
    """The agent's turns of `CallSession`: start, cut, finalize; the LLM request's messages; the drain goodbye."""

    if TYPE_CHECKING:
        # Held here: the agent's turn and its record turn (None once it has ended on record).
        agent: AgentTurn | None
        _agent_record: Turn | None
        # The session's (app/call/session.py) and the other parts'.
        deps: CallDeps
        events: CallEvents
        record: CallRecord | None
        ledger: PlaybackLedger
        outbox: Outbox
        tools: ToolRunner
        closed: bool
        _held: Held | None
        _turn_speech_end: dict[int, float]
        _clock: Clock
        _metrics: Metrics

        def agent_active(self, now: float) -> bool: ...
        async def _flush(self) -> tuple[float, HeardPosition, int]: ...

    # -- the agent's turns on record --------------------------------------------------------------
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

    def _start_agent_turn(self, text: str | None = None, prefix: str | None = None,
                          continues: int | None = None) -> None:
        """A new agent turn: the LLM's reply, or a fixed `text` (the greeting, a goodbye, or the rest of the cut
        turn `continues` after a caller turn without words)."""
        assert self.record is not None
        self._finalize_agent_turn()
        tts = self._reply_tts() if text is None else self.deps.tts  # a fixed line (greeting) is never a reply
        rec = self.record.new_turn("agent", self.deps.wall())
        rec.continues = continues
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
        return llm_messages(system, self.record.history(), self.tools.ledger, current)

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
