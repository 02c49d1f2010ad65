"""The end-of-turn model in a real call (TURN_END_MODEL=smart_turn, app/call/end_of_turn.py, turn_taking.py).

The real app under uvicorn with the embedded recognizer, the real Smart Turn weights (from the pipecat-ai wheel;
skipped when it is not installed), the provider-edge emulator, and a loopback LLM. The thresholds are set so
the verdict is known whatever the model thinks of this clip (its judgement is measured offline, on the pool:
app/offline/eot_eval.py): what is tested is that the model is asked at the pause and that its verdict moves
the turn's end, both ways, over real sockets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.bench.stt import read_wav
from app.bench.turns import with_pause
from app.call.end_of_turn import ModelUnavailable, weights_path
from tests.e2e.test_progressive import CLIP, one_call, words_reply

try:
    weights_path()
except ModelUnavailable as exc:  # the optional `turn-model` extra
    pytest.skip(str(exc), allow_module_level=True)

from app.edge.llm_server import ScriptedLlmServer  # noqa: E402

ALWAYS_COMPLETE = {"turn_model_complete_at": 0.0, "turn_model_incomplete_below": 0.0}
NEVER_COMPLETE = {"turn_model_complete_at": 1.0, "turn_model_incomplete_below": 1.0}


def test_a_complete_verdict_ends_a_strict_turn_at_the_pause(server_factory: Any) -> None:
    """strict waits its silence (1.5 s here, so a loaded machine's slow inference still comes well before it);
    with the model's "complete" at the 250 ms pause the turn ends then, so the answer comes sooner by most of
    that silence (the recognizer, the LLM and synthesis are the same)."""
    pcm = read_wav(CLIP)
    sessions: list[Any] = []

    async def gap(**model: Any) -> float:
        async with ScriptedLlmServer(words_reply, token_delay_s=0.01) as llm:
            srv = server_factory(observers=[sessions.append], llm_base_url=llm.base_url, agent_greeting="Hello.",
                                 stt_engine="whisper", turn_policy="strict", turn_end_silence_ms=1500, **model)
            end, audio, _ = await one_call(srv, "twilio", pcm)
            return min(audio) - end

    async def both() -> tuple[float, float]:
        return await gap(), await gap(turn_end_model="smart_turn", **ALWAYS_COMPLETE)

    without, with_model = asyncio.run(both())
    assert sessions[0].turn_taker is None  # strict without the model: the table is not used
    taker = sessions[1].turn_taker
    assert taker is not None and taker.verdicts["complete"] >= 1, taker.verdicts
    assert with_model < without - 0.5, (without, with_model)
    assert with_model > 0.25, with_model  # not before the pause at which the model is asked


def test_an_incomplete_verdict_holds_a_strict_turn_over_a_mid_sentence_pause(server_factory: Any) -> None:
    """A 1.4 s pause mid-sentence: strict alone ends the turn after its silence (1 s here: room for a loaded
    machine's inference) and the caller's second half is a turn of its own, or talks over the answer. With
    the model's "incomplete" the turn is held up to the ceiling (2 s), the caller goes on, and the one
    answer comes after the whole sentence."""
    paused = with_pause(read_wav(CLIP), 1400.0)
    assert paused is not None
    pcm, _ = paused
    sessions: list[Any] = []

    async def scenario() -> tuple[float, list[float], dict[str, Any]]:
        async with ScriptedLlmServer(words_reply, token_delay_s=0.01) as llm:
            srv = server_factory(observers=[sessions.append], llm_base_url=llm.base_url, agent_greeting="Hello.",
                                 stt_engine="whisper", turn_policy="strict", turn_end_model="smart_turn",
                                 turn_end_silence_ms=1000, turn_unfinished_silence_ms=2000, **NEVER_COMPLETE)
            return await one_call(srv, "plivo", pcm)

    end, audio, record = asyncio.run(scenario())
    assert audio and min(audio) > end, "the agent spoke before the caller had finished"
    users = [t for t in record["turns"] if t["role"] == "user"]
    assert len(users) == 1 and len(users[0]["text"].split()) >= 10, users  # one turn: both halves
    assert sessions[0].turn_taker.verdicts["incomplete"] >= 1, sessions[0].turn_taker.verdicts
