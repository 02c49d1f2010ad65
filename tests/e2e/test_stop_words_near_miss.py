"""A "stop" the VAD never takes as speech still stops the agent, by its words (the near-miss path), over real sockets.

The bare word is the same fresh-process rendition as tests/e2e/test_stop_words.py's. Whether Silero holds it at
0.9 for two windows in a row depends on where it falls in the 32 ms windows (the report on issue 12: at about
half of them it never does, and then no candidate starts and nothing was ever transcribed). To make every try
such a miss, whatever phase the frames meet, the server here starts speech only at Silero 0.99: the word comes
close (0.6-0.97) and never starts a candidate. With NEAR_MISS_WORDS its words are heard anyway and "Stop." stops
the agent, with no candidate before it (no resumed barge-in on record); without it the agent talks on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from app.call.events import Transcribed
from app.edge.emulator import EmulatedCall
from tests.e2e.records import record_when
from tests.e2e.speech import GREETING, trimmed
from tests.e2e.test_stop_words import bare_stop


@pytest.mark.parametrize("near_miss", [True, False], ids=["near-miss-words", "without"])
def test_a_stop_that_never_starts_a_candidate_stops_the_agent_by_its_words(
    server_factory: Any, near_miss: bool
) -> None:
    heard: list[str] = []  # what the recognizer wrote (the server's thread appends)
    sessions: list[Any] = []

    def observe(session: Any) -> None:
        sessions.append(session)
        session.events.subscribe(lambda e: heard.append(e.text) if isinstance(e, Transcribed) else None,
                                 frames=False)

    async def scenario() -> dict[str, Any]:
        stop = bare_stop()
        srv = server_factory([observe], agent_greeting=GREETING, stt_engine="whisper", vad_silero_threshold=0.99,
                             near_miss_words=near_miss)
        async with EmulatedCall.start("twilio", srv.url) as call:
            await call.wait_until(lambda: call.played_samples > 1.5 * 8000, 20)
            if not near_miss:
                await call.send_audio(np.concatenate([trimmed(stop), np.zeros(1600, np.int16)]))
            else:
                # Whether the hinted "Stop." is believed depends on where the stretch the tracker cut starts: the
                # plain decode is "Oh" at every start, and the hinted word's probability is 0.009-0.09 by start
                # against the bar of 0.01 after a bare vowel (providers/stt/whisper_hint.py; one start in 8 falls
                # under it, and CI failed so once). A caller who is not heard says it again, 5 ms later in its
                # first frame each time, after the per-call spacing of near-miss decodes.
                for attempt in range(4):
                    lead = np.zeros(40 * attempt, np.int16)
                    await call.send_audio(np.concatenate([lead, trimmed(stop), np.zeros(1600, np.int16)]))
                    try:
                        await record_when(srv.url, call.call_id, lambda r: any(
                            b["outcome"] == "stopped" for b in r["bargeins"]), timeout_s=3.5)
                        break
                    except AssertionError:
                        continue
                else:
                    raise AssertionError(f"never stopped in 4 tries; the recognizer heard {heard}")
            await asyncio.sleep(1.5)  # without the feature: time for a stop that must not come
            return await record_when(srv.url, call.call_id, lambda r: True, timeout_s=5)

    record = asyncio.run(scenario())
    outcomes = [(b["outcome"], b["reason"]) for b in record["bargeins"]]
    agent = record["turns"][0]
    if not near_miss:
        assert outcomes == [] and not heard, (outcomes, heard)  # nothing started, nothing was asked
        assert agent["role"] == "agent" and not agent["interrupted"], agent
        return
    # One barge-in, the words' stop: no candidate ever started (a resumed one would be on record first).
    assert outcomes == [("stopped", "stop")], (outcomes, heard)
    assert sessions and sessions[0].vad.near_miss.seen >= 1
    assert agent["role"] == "agent" and agent["interrupted"], record["turns"]
    assert agent["heard_text"] != agent["intended_text"], agent
