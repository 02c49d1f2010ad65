"""The prosodic end-of-turn model in a real call (TURN_END_MODEL=prosody, app/call/prosody.py), over real sockets.

The real app under uvicorn with the embedded recognizer, the provider-edge emulator and a loopback LLM, and the
model with its own fitted numbers. The caller is a read sentence from the test corpus ("... thou wast"), a
statement whose voice falls and fades at its end: the model's P(complete) for it is 0.39 (measured offline;
fit_prosody's conservative complete point is 0.41, where 3% of the pool's sentence ends are called complete).
The test sets the complete point just below and just above that score, the same call both ways, under strict
turn taking with a long silence: below, the model's "complete" at the 250 ms pause ends the turn there and the
answer comes sooner by most of that silence; above, the verdict is "unsure" and the turn waits the silence,
as without the model. Only the model's score for this audio tells the two calls apart, so if the model were
not asked, its answer ignored, or its score for a falling end not where it is, this fails.
(A refit moves the score: app/offline/fit_prosody.py; the unit tests hold the cues, tests/call/test_prosody.py.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from app.bench.stt import read_wav
from app.edge.llm_server import ScriptedLlmServer
from tests.e2e.test_progressive import one_call, words_reply

CLIP = Path(__file__).resolve().parents[1] / "corpus" / "speech" / "read_01_libri3982F.wav"
BELOW, ABOVE = 0.35, 0.45  # around the model's 0.39 for the clip's end
INCOMPLETE_BELOW = 0.1


def test_the_prosodic_models_score_decides_whether_a_strict_turn_ends_at_the_pause(server_factory: Any) -> None:
    pcm = read_wav(CLIP)
    sessions: list[Any] = []

    async def gap(complete_at: float) -> float:
        async with ScriptedLlmServer(words_reply, token_delay_s=0.01) as llm:
            srv = server_factory(observers=[sessions.append], llm_base_url=llm.base_url, agent_greeting="Hello.",
                                 stt_engine="whisper", turn_policy="strict", turn_end_silence_ms=1500,
                                 turn_end_model="prosody", turn_model_complete_at=complete_at,
                                 turn_model_incomplete_below=INCOMPLETE_BELOW)
            end, audio, _ = await one_call(srv, "twilio", pcm)
            return min(audio) - end

    async def both() -> tuple[float, float]:
        return await gap(BELOW), await gap(ABOVE)

    ends_at_pause, waits = asyncio.run(both())
    scored, held = sessions[0].turn_taker, sessions[1].turn_taker
    assert scored.verdicts["complete"] >= 1, scored.verdicts
    assert held.verdicts["complete"] == 0 and held.verdicts["unsure"] >= 1, held.verdicts
    assert ends_at_pause < waits - 0.5, (ends_at_pause, waits)
    assert ends_at_pause > 0.25, ends_at_pause  # not before the pause at which the model is asked
