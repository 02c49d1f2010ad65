"""CallSession scenarios on a fake clock with small scripted fakes: exact and deterministic.

The fakes: a TTS that speaks 10 ms per character with a word timing per word, an LLM that streams scripted
tokens (or fails), a window scorer that reports whatever speech probability the scenario sets. The audio fed
in is a tone (loud) or silence, so the energy gate sees what the scenario means.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
import pytest

from app.audio import pcm16_to_ulaw
from app.bargein.silero import SileroStream
from app.bargein.vad import VadConfig
from app.call.registry import CallRegistry
from app.call.session import CallDeps, CallSession, StreamRefused
from app.call.turn import split_sentences
from app.clock import FakeClock
from app.metrics import Metrics
from app.stream_tokens import StreamTokens
from providers.errors import ProviderError
from providers.llm.base import ChatMessage, LlmEvent, TextDelta
from providers.telephony import PROTOCOLS
from providers.tts.base import Synthesis, WordTiming

from ..conftest import make_settings

MS_PER_CHAR = 10.0


class FakeTts:
    def __init__(self) -> None:
        self.spoken: list[str] = []

    async def synthesize(self, text: str) -> Synthesis:
        self.spoken.append(text)
        words = tuple(
            WordTiming(m.start(), m.end(), m.start() * MS_PER_CHAR) for m in re.finditer(r"\S+", text)
        )
        pcm = np.full(int(len(text) * MS_PER_CHAR * 8), 1000, dtype=np.int16)
        return Synthesis(text=text, pcm=pcm, sample_rate=8000, words=words)

    async def aclose(self) -> None:
        pass


class FakeLlm:
    def __init__(self, tokens: list[str], fail_after: int | None = None) -> None:
        self.tokens = tokens
        self.fail_after = fail_after
        self.closed = 0
        self.requests: list[list[ChatMessage]] = []

    async def stream(self, messages: list[ChatMessage], tools: Any = ()) -> AsyncGenerator[LlmEvent, None]:
        self.requests.append(messages)
        try:
            for i, token in enumerate(self.tokens):
                if self.fail_after is not None and i >= self.fail_after:
                    raise ProviderError("llm: connection reset", retryable=True)
                await asyncio.sleep(0)
                yield TextDelta(token)
        finally:
            self.closed += 1

    async def aclose(self) -> None:
        pass


class ScriptedScorer:
    def __init__(self) -> None:
        self.probability = 0.0

    async def infer(self, stream: SileroStream, window: Any) -> float:
        return self.probability

    def defer(self, stream: SileroStream, window: Any) -> None:
        pass


class Harness:
    def __init__(self, provider: str = "twilio", llm: FakeLlm | None = None, greeting: str = "Hello there.",
                 **settings: Any) -> None:
        self.clock = FakeClock()
        # The strict stop sequence by default; the provisional policies have their own tests below.
        settings = {"bargein_policy": "immediate", "echo_guard": False, **settings}
        self.settings = make_settings(agent_greeting=greeting, playback_lead_ms=10_000, vad_use_webrtc=False,
                                      **settings)
        self.tts = FakeTts()
        self.llm = llm or FakeLlm(["Fine. ", "And ", "you? "])
        self.scorer = ScriptedScorer()
        self.registry = CallRegistry(10, 60, self.clock)
        self.deps = CallDeps(
            settings=self.settings,
            clock=self.clock,
            wall=time.time,
            scorer=self.scorer,
            vad_config=VadConfig.from_settings(self.settings),
            tts=self.tts,
            llm=self.llm,
            registry=self.registry,
            metrics=Metrics(),
            tokens=StreamTokens(b"k" * 32, 60, self.clock.now),
            require_token=False,
            fallback=[],
        )
        self.provider = provider
        self.sent: list[dict[str, Any]] = []
        self.session = self.new_session()

    def new_session(self) -> CallSession:
        async def send(text: str) -> None:
            self.sent.append(json.loads(text))

        return CallSession(PROTOCOLS[self.provider](), send, self.deps)

    async def start(self, call_id: str = "CA1", stream_id: str = "MZ1") -> None:
        if self.provider == "twilio":
            frame = {"event": "start", "sequenceNumber": "1", "streamSid": stream_id,
                     "start": {"streamSid": stream_id, "accountSid": "AC1", "callSid": call_id, "tracks": ["inbound"],
                               "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw",
                                                                       "sampleRate": 8000, "channels": 1}}}
        else:
            frame = {"event": "start", "sequenceNumber": 1, "streamId": stream_id,
                     "start": {"callId": call_id, "streamId": stream_id, "accountId": "MA1", "tracks": ["inbound"],
                               "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}}
        await self.session.handle_text(json.dumps(frame), self.clock.now())
        await settle()

    def media_frame(self, loud: bool) -> str:
        pcm = (np.sin(np.arange(160) * 0.3) * (8000 if loud else 0)).astype(np.int16)
        payload = __import__("base64").b64encode(pcm16_to_ulaw(pcm)).decode()
        sid = self.session.protocol.stream_id
        if self.provider == "twilio":
            return json.dumps({"event": "media", "sequenceNumber": "2", "streamSid": sid,
                               "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload}})
        return json.dumps({"event": "media", "sequenceNumber": 2, "streamId": sid,
                           "media": {"track": "inbound", "chunk": 1, "timestamp": "0", "payload": payload}})

    async def frames(self, n: int, loud: bool, probability: float) -> None:
        self.scorer.probability = probability
        for _ in range(n):
            self.clock.advance(0.02)
            await self.session.handle_text(self.media_frame(loud), self.clock.now())

    async def ack(self, name: str) -> None:
        sid = self.session.protocol.stream_id
        if self.provider == "twilio":
            frame = {"event": "mark", "sequenceNumber": "3", "streamSid": sid, "mark": {"name": name}}
        else:
            frame = {"event": "playedStream", "sequenceNumber": 3, "streamId": sid, "name": name}
        await self.session.handle_text(json.dumps(frame), self.clock.now())

    def markers(self) -> list[str]:
        return [m["mark"]["name"] if "mark" in m else m["name"] for m in self.sent
                if m["event"] in ("mark", "checkpoint")]

    async def play_out_greeting(self) -> None:
        """The edge acknowledges every marker sent so far, then the line stays quiet for 2 s."""
        for name in self.markers():
            await self.ack(name)
        self.clock.advance(2.0)

    def events(self) -> list[str]:
        return [m["event"] for m in self.sent]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
def test_caller_speaks_during_greeting_clear_goes_out_first_and_the_turn_is_cut_where_heard(provider: str) -> None:
    greeting = "Hello there. Thanks for calling the demo line today."

    async def scenario() -> None:
        h = Harness(provider, greeting=greeting)
        await h.start()
        markers = h.markers()
        assert len(markers) >= 6  # 40 ms chunks until three markers are out, then 160 ms chunks
        # The edge plays the first sentence (three 40 ms chunks) and the second's first 160 ms chunk (280 ms
        # in all), then 120 ms more of real time pass.
        h.clock.advance(0.16)
        await h.ack(markers[2])
        h.clock.advance(0.16)
        await h.ack(markers[3])
        h.clock.advance(0.04)
        sent_before = len(h.sent)
        await h.frames(3, loud=True, probability=0.99)  # 60 ms of speech: 64 ms guard not yet reached
        assert "clear" not in h.events() and "clearAudio" not in h.events()
        await h.frames(2, loud=True, probability=0.99)
        clear_name = "clear" if provider == "twilio" else "clearAudio"
        assert h.events()[sent_before] == clear_name  # the very next message out is the clear
        assert h.events().count(clear_name) == 1
        record = h.registry.get("CA1")
        assert record is not None
        agent = record.turns[0]
        assert agent.interrupted
        # Each sentence is chunked on its own: "Hello there." is 120 ms (three 40 ms chunks: the call's first
        # markers follow short chunks), then 160 ms chunks, so the fourth marker sits at 280 ms. The barge-in
        # decision comes with the second Silero window (t = 0.44 s, 120 ms after that ack): 280 + 120 = 400 ms,
        # i.e. 12 + 1 characters of the first sentence and 28 of the second at 10 ms per character.
        assert agent.heard_audio_ms == pytest.approx(400.0, abs=0.5)
        assert agent.heard_chars == 41
        assert agent.heard_text == greeting[:41]
        assert agent.intended_text == greeting
        [event] = record.bargeins
        assert event.cut_char_offset == 41 and event.turn_id == agent.id
        # A late echo of a cleared mark does not move anything.
        await h.ack(markers[5])
        assert record.turns[0].heard_chars == 41
        await h.session.close("test")

    asyncio.run(scenario())


def test_silence_after_the_callers_turn_starts_a_reply_from_the_llm_with_the_history() -> None:
    async def scenario() -> None:
        h = Harness(greeting="Hi.")
        await h.start()
        await h.play_out_greeting()
        await h.session.on_tick(h.clock.now())
        await h.frames(15, loud=True, probability=0.99)  # 300 ms of speech, agent silent: no barge-in
        assert "clear" not in h.events()
        await h.frames(36, loud=False, probability=0.01)  # 720 ms of silence ends the caller's turn
        await settle()
        assert h.llm.requests, "the reply did not start"
        roles = [m["role"] for m in h.llm.requests[0]]
        assert roles == ["system", "assistant", "user"]
        assert h.tts.spoken[-2:] == ["Fine.", "And you?"]
        record = h.registry.get("CA1")
        assert record is not None
        assert [t.role for t in record.turns] == ["agent", "user", "agent"]
        await h.session.close("test")

    asyncio.run(scenario())


def test_turn_end_is_driven_by_the_timer_when_frames_stop() -> None:
    async def scenario() -> None:
        h = Harness(greeting="Hi.")
        await h.start()
        await h.play_out_greeting()
        await h.frames(10, loud=True, probability=0.99)
        # No more frames (a gap on the phone leg): the timer alone must end the turn.
        h.clock.advance(1.0)
        await h.session.on_tick(h.clock.now())
        await settle()
        assert h.llm.requests

    asyncio.run(scenario())


def test_an_llm_failure_mid_turn_speaks_the_fallback_and_the_call_goes_on() -> None:
    async def scenario() -> None:
        llm = FakeLlm(["First part. ", "Second ", "part. "], fail_after=2)
        h = Harness(llm=llm, greeting="Hi.")
        h.deps.fallback.append(await h.tts.synthesize("Sorry, say that again."))
        await h.start()
        await h.play_out_greeting()
        await h.frames(10, loud=True, probability=0.99)
        await h.frames(40, loud=False, probability=0.0)
        await settle()
        assert llm.closed == 1
        record = h.registry.get("CA1")
        assert record is not None
        reply = record.turns[-1]
        assert reply.role == "agent" and reply.fallback
        assert h.session.agent is not None and h.session.agent.text == "First part. Sorry, say that again."
        assert not h.session.closed
        await h.session.close("test")

    asyncio.run(scenario())


def test_a_reconnecting_stream_starts_a_fresh_generation_and_keeps_the_record() -> None:
    async def scenario() -> None:
        h = Harness(greeting="Hello there, this is long enough to be interrupted.")
        await h.start()
        first_gen = h.session.ledger.generation
        old_markers = h.markers()
        await h.session.close("socket closed")
        h.sent.clear()
        h.session = h.new_session()
        await h.start(stream_id="MZ2")
        assert h.session.ledger.generation > first_gen
        # An old-stream marker name cannot count as heard on the new stream.
        assert not h.session.ledger.ack(old_markers[0], h.clock.now())
        record = h.registry.get("CA1")
        assert record is not None and record.stream_ids == ["MZ1", "MZ2"]
        assert h.events() == []  # no second greeting for a known call
        await h.session.close("test")

    asyncio.run(scenario())


def test_idle_stream_is_ended_by_the_timer() -> None:
    async def scenario() -> None:
        h = Harness()
        await h.start()
        h.clock.advance(h.settings.idle_timeout_s + 0.1)
        with pytest.raises(StreamRefused, match="idle"):
            await h.session.on_tick(h.clock.now())
        await h.session.close("idle timeout")

    asyncio.run(scenario())


def test_a_short_sound_pauses_the_greeting_and_it_resumes_from_the_word_being_said() -> None:
    # Fake clock, scripted VAD scores: the provisional stop and the resend, step by step.
    greeting = "Hello there. Thanks for calling the demo line today."

    async def scenario() -> None:
        h = Harness("twilio", greeting=greeting, bargein_policy="resume", bargein_second_look=False)
        await h.start()
        markers = h.markers()
        for name in markers[:2]:
            h.clock.advance(0.16)
            await h.ack(name)
        h.clock.advance(0.05)
        sent_before = len(h.sent)
        await h.frames(5, loud=True, probability=0.99)  # 100 ms: the candidate, a clear at once
        assert h.events()[sent_before] == "clear"
        turn = h.session.agent
        assert turn is not None and turn.held and h.session.policy.holding
        await h.frames(16, loud=False, probability=0.0)  # 320 ms of quiet: a backchannel, over
        await settle()
        assert not turn.held and h.session.policy.state.value == "idle"
        record = h.registry.get("CA1")
        assert record is not None
        [bargein] = record.bargeins
        assert bargein.outcome == "resumed" and bargein.reason == "backchannel" and bargein.llm_closed_ms is None
        assert bargein.resumed_from_ms is not None and bargein.heard_audio_ms is not None
        assert bargein.resumed_from_ms <= bargein.heard_audio_ms
        # The resumed audio is the turn's own from that word on, with markers that place it in the turn.
        media = [m for m in h.sent[sent_before + 1:] if m["event"] == "media"]
        assert media, "nothing was resent"
        resent = b"".join(__import__("base64").b64decode(m["media"]["payload"]) for m in media)
        whole = b"".join(seg.ulaw for seg in turn.segments)
        start = int(round(bargein.resumed_from_ms * 8))
        assert resent == whole[start:start + len(resent)]
        assert not record.turns[0].interrupted and [t.role for t in record.turns] == ["agent"]

    asyncio.run(scenario())


def test_an_uninterruptible_span_is_not_spoken_as_markup_and_speech_in_it_waits_for_its_end() -> None:
    greeting = "[[This call is recorded for quality and training, and by staying on you agree.]] Hello, how can I help?"

    async def scenario() -> None:
        h = Harness("twilio", greeting=greeting, bargein_policy="resume", bargein_second_look=False)
        await h.start()
        assert all("[[" not in s and "]]" not in s for s in h.tts.spoken)
        turn = h.session.agent
        assert turn is not None and turn.spans and turn.spans[0][0] == 0.0
        span_end_ms = turn.spans[0][1]
        assert 0 < span_end_ms < turn.audio_ms
        markers = h.markers()
        h.clock.advance(0.16)
        await h.ack(markers[0])
        await h.frames(10, loud=True, probability=0.99)  # inside the span: no clear
        assert "clear" not in h.events()
        assert h.session.policy.state.value == "deferred"
        # The span plays out while the caller goes on talking: the clear comes once it has.
        for name in markers[1:]:
            h.clock.advance(0.16)
            await h.ack(name)
            await h.frames(1, loud=True, probability=0.99)
            if "clear" in h.events():
                break
        assert "clear" in h.events()
        record = h.registry.get("CA1")
        assert record is not None and record.turns[0].interrupted
        assert record.turns[0].heard_audio_ms is not None and record.turns[0].heard_audio_ms >= span_end_ms

    asyncio.run(scenario())


def test_the_acknowledgement_opens_the_reply_after_a_long_interruption() -> None:
    async def scenario() -> None:
        h = Harness("twilio", greeting="Hello there. Thanks for calling the demo line today.",
                    bargein_ack_fraction=1.0, bargein_ack_min_ms=500, bargein_ack_text="Sorry, go ahead.")
        await h.start()
        h.clock.advance(0.1)
        await h.frames(40, loud=True, probability=0.99)  # 800 ms over the agent: immediate policy stops it
        assert "clear" in h.events()
        await h.frames(40, loud=False, probability=0.0)  # the turn-end silence: the agent replies
        await settle()
        # The reply's first sentence is the acknowledgement; the LLM's reply follows it.
        first_reply = len(split_sentences("Hello there. Thanks for calling the demo line today."))
        assert h.tts.spoken[first_reply] == "Sorry, go ahead."
        assert h.tts.spoken[first_reply + 1:], "the LLM's reply did not follow"

    asyncio.run(scenario())
