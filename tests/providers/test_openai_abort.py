"""An LLM reply stream cut at once: `abort()` shuts the connection before anyone closes the iterator.

The loopback LLM is a real HTTP server that records when it reads the client's end-of-file; the stream is
left open (not closed, not iterated) after the abort, so only the abort can have ended the connection.
Both event loops the server may run on are covered: uvloop's transports hand out a different socket object.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from app.edge.llm_server import ScriptedLlmServer
from providers.llm.base import Abortable, TextDelta
from providers.llm.openai import OpenAICompatibleLlm

LONG_REPLY = " ".join(f"word{i}" for i in range(200))


def _loops() -> list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]]:
    loops: list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]] = [("asyncio", asyncio.new_event_loop)]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the test install; the asyncio case still runs
        return loops
    return [*loops, ("uvloop", uvloop.new_event_loop)]


LOOPS = _loops()


@pytest.mark.parametrize("loop_factory", [f for _, f in LOOPS], ids=[n for n, _ in LOOPS])
def test_abort_shuts_the_connection_before_the_iterator_is_closed(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def scenario() -> tuple[float, float | None, list[str]]:
        async with ScriptedLlmServer([LONG_REPLY], token_delay_s=0.05) as llm:
            client = OpenAICompatibleLlm(llm.base_url, "scripted")
            stream = client.stream([{"role": "user", "content": "talk"}])
            first = await anext(stream)
            assert isinstance(first, TextDelta)
            assert isinstance(stream, Abortable)
            aborted_at = time.monotonic()
            assert stream.abort()
            request = llm.chat_requests[0]
            deadline = time.monotonic() + 2.0
            while not request.disconnected and time.monotonic() < deadline:  # noqa: ASYNC110 - the server has no event to await
                await asyncio.sleep(0.005)
            seen = request.disconnected_at
            await stream.aclose()  # the iterator's own cleanup, after the fact, raises nothing
            assert not stream.abort()  # closed: nothing left to shut
            await client.aclose()
            return aborted_at, seen, [t for t, _ in request.tokens]

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        aborted_at, seen, tokens = runner.run(scenario())
    assert seen is not None, "the server never saw the connection end while the stream stayed open"
    assert seen - aborted_at < 0.2
    assert len(tokens) < 20  # the reply stopped streaming: 200 words at 50 ms would take 10 s


def test_a_reply_that_streamed_in_full_has_nothing_to_abort() -> None:
    async def scenario() -> bool:
        async with ScriptedLlmServer(["Short reply."], token_delay_s=0.0) as llm:
            client = OpenAICompatibleLlm(llm.base_url, "scripted")
            stream = client.stream([{"role": "user", "content": "hi"}])
            events = [e async for e in stream]
            assert events and all(isinstance(e, TextDelta) for e in events)
            result = stream.abort()
            await client.aclose()
            return result

    assert asyncio.run(scenario()) is False
