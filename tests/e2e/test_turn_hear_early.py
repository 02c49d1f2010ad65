"""Strict turn taking that hears the turn at the short pause (TURN_HEAR_EARLY), over real sockets.

The real app under uvicorn with the embedded recognizer (faster-whisper), the provider-edge emulator and a
loopback LLM. The caller reads a sentence and falls silent. Hearing early, the words are in when the VAD's
turn-end silence ends the turn, so the turn goes on record (and the answer starts) at that silence; hearing
late, it goes on record only once the recognizer has heard it after that silence.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from app.bench.stt import read_wav
from app.call.events import CallEvent, Transcribed, TurnEnded, TurnStarted
from app.edge.emulator import EmulatedCall
from app.edge.llm_server import ScriptedLlmServer

# "He did not speak about it at length, but said that he had written me a letter." (no pause of 250 ms inside)
CLIP = Path(__file__).resolve().parents[1] / "corpus" / "speech" / "read_04_libri3112F.wav"
TURN_END_S = 0.7  # TURN_END_SILENCE_MS's default
HEAR_AT_S = 0.25  # TURN_SPECULATE_SILENCE_MS's default: the pause at which the turn is heard


class Collector:
    """The call's events, as the session emits them (from the server's thread)."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []
        self.lock = threading.Lock()

    def __call__(self, session: Any) -> None:
        session.events.subscribe(self._on_event, frames=False)

    def _on_event(self, event: CallEvent) -> None:
        with self.lock:
            self.events.append(event)


def turn_end_after_speech(hear_early: bool, server_factory: Any) -> tuple[float, float, str]:
    """(the caller turn's end after its end of speech, the recognizer's time, the words), server clock."""
    collector = Collector()

    async def scenario() -> None:
        async with ScriptedLlmServer(["Sure."], token_delay_s=0.01) as llm:
            srv = await asyncio.to_thread(server_factory, observers=[collector], llm_base_url=llm.base_url,
                                          agent_greeting="Hello.", stt_engine="whisper", turn_policy="strict",
                                          turn_hear_early=hear_early)
            async with EmulatedCall.start("twilio", srv.url) as call:
                await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 15)
                await call.send_audio(read_wav(CLIP))
                await call.send_silence(1.5)
                await call.wait_until(lambda: any(isinstance(e, TurnStarted) and e.role == "agent"
                                                  and e.turn_id > 1 for e in collector.events), 10)

    asyncio.run(scenario())
    with collector.lock:
        events = list(collector.events)
    user = next(e for e in events if isinstance(e, TurnEnded) and e.role == "user")
    heard = next(e for e in events if isinstance(e, Transcribed) and e.turn_id == user.turn_id)
    assert user.speech_end_t is not None
    return user.t - user.speech_end_t, heard.stt_ms / 1000.0, heard.text


def test_hearing_early_puts_the_words_in_before_the_turn_ends(server_factory: Any) -> None:
    ended, stt_s, text = turn_end_after_speech(True, server_factory)
    assert "letter" in text.lower(), text  # the words of the whole turn, not of a part of it
    assert stt_s > 0.05, stt_s  # the recognizer did run (its time is what hearing early takes out)
    # The turn ends at the VAD's silence (a frame or two of its smoothing), or, on a machine so loaded that the
    # recognizer takes longer than the rest of that silence, when the words heard at the pause come in: never
    # a whole recognizer's time after the silence (a second hearing).
    assert TURN_END_S - 0.05 < ended < max(TURN_END_S, HEAR_AT_S + stt_s) + 0.12, (ended, stt_s)


def test_hearing_late_ends_the_turn_a_recognizers_time_after_the_silence(server_factory: Any) -> None:
    ended, stt_s, text = turn_end_after_speech(False, server_factory)
    assert "letter" in text.lower(), text
    assert ended > TURN_END_S + stt_s - 0.05, (ended, stt_s)
