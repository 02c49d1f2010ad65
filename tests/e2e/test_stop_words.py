"""A bare, low-pitched "stop" said over the agent stops it, over real sockets with the embedded recognizer.

The caller is a tuning voice (app/bench/tuning_phrases.py's en-us, pitch lowered by 1.2 like the stop_words
condition's caller, but not its en-gb voice), saying the bare word. Its sound alone is no turn: Silero holds it
for a few hundred ms, and the second look reads its /st/ opening as a noise, so the policy resumes the agent
("noise"). Before issue 12's fix nothing more happened: the words of a "noise" resume were never asked for, and
tiny.en wrote "Oh" for the word anyway (a backchannel). Now the words are heard after such a resume too, the bare
vowel gets the command hint's second opinion, and "Stop." stops the agent.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import numpy as np

from app.call.events import Transcribed
from app.edge.emulator import EmulatedCall
from tests.e2e.records import record_when
from tests.e2e.speech import GREETING, trimmed

# espeak-ng varies its noise sources from one synthesis to the next within a process, so the word this process
# would synthesise depends on what ran before it (after the tests/stt suite, a rendition the VAD never fired on in
# 8 tries). A fresh process's first synthesis is the same every time: the test speaks that one.
SYNTH = (
    "import asyncio, sys; from app.bench.words_tuning import spoken_by; "
    "sys.stdout.buffer.write(asyncio.run(spoken_by(['stop'], 'en-us', 170, 1.2))[0].tobytes())"
)


def bare_stop() -> Any:
    out = subprocess.run([sys.executable, "-c", SYNTH], check=True, capture_output=True, timeout=60).stdout
    return np.frombuffer(out, np.int16)


def test_a_low_pitched_bare_stop_stops_the_agent_and_it_stays_stopped(server_factory: Any) -> None:
    heard: list[str] = []  # what the recognizer wrote for the short utterance (the server's thread appends)

    def observe(session: Any) -> None:
        session.events.subscribe(lambda e: heard.append(e.text) if isinstance(e, Transcribed) else None,
                                 frames=False)

    async def scenario() -> dict[str, Any]:
        stop = bare_stop()
        srv = server_factory([observe], agent_greeting=GREETING, stt_engine="whisper")
        async with EmulatedCall.start("twilio", srv.url) as call:
            await call.wait_until(lambda: call.played_samples > 1.5 * 8000, 20)
            # Whether the VAD fires on this word depends on where it falls in Silero's 32 ms windows (it fires at
            # about half of the offsets: see the report on issue 12; VAD_SECOND_PHASE widens that). A caller who
            # is not heard says it again: each try is a fresh candidate, none was resumed over, so no escalation.
            # Each try also starts 4 ms later within its first frame, so the tries meet the windows at different
            # phases (a fixed re-send can meet the same phase again; it failed once so in CI, 4 tries, no clear).
            for attempt in range(8):
                clears = len(call.clears)
                lead = np.zeros(32 * attempt, np.int16)
                await call.send_audio(np.concatenate([lead, trimmed(stop), np.zeros(1600, np.int16)]))
                await asyncio.sleep(0.5)
                if len(call.clears) > clears:
                    break
                await asyncio.sleep(0.5)
            try:
                await record_when(srv.url, call.call_id, lambda r: any(
                    b["outcome"] == "stopped" for b in r["bargeins"]), timeout_s=15)
            except AssertionError:
                raise AssertionError(f"never stopped; the recognizer heard {heard}") from None
            await asyncio.sleep(1.0)  # a resume would have sent the greeting's rest by now
            return await record_when(srv.url, call.call_id, lambda r: True, timeout_s=5)

    record = asyncio.run(scenario())
    outcomes = [(b["outcome"], b["reason"]) for b in record["bargeins"]]
    assert outcomes[-1] == ("stopped", "stop"), (outcomes, heard)
    # the resumed barge-in before it carries the kind of the words heard after it (issue 13: kinds on the event)
    if len(outcomes) > 1 and outcomes[-2][0] == "resumed":
        assert record["bargeins"][-2]["kind"] == "stop", record["bargeins"]
    # The greeting stayed cut where the caller stopped hearing it: it never went on. (The agent may answer the
    # caller's "Stop." with a turn of its own: that is a new turn, not the greeting resumed.)
    agent = record["turns"][0]
    assert agent["role"] == "agent" and agent["interrupted"], record["turns"]
    assert agent["heard_text"] != agent["intended_text"], agent
