"""The loopback LLM over a real socket: SSE framing, disconnect detection, failure modes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from app.edge.llm_server import ScriptedLlmServer, tokenize

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def client(**kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, **kwargs)


def test_tokenize_keeps_trailing_spaces() -> None:
    assert tokenize("Hello there,  caller. Bye.") == ["Hello ", "there,  ", "caller. ", "Bye."]


def test_streams_tokens_in_openai_sse_format() -> None:
    reply = "Hello there, caller. Bye."

    async def main() -> None:
        async with ScriptedLlmServer([reply], token_delay_s=0.01) as llm, client() as http:
            body = {"model": "x", "messages": MESSAGES, "stream": True}
            async with http.stream("POST", f"{llm.base_url}/chat/completions", json=body) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = [line async for line in response.aiter_lines() if line]
            assert all(line.startswith("data: ") for line in lines)
            assert lines[-1] == "data: [DONE]"
            chunks = [json.loads(line[6:]) for line in lines[:-1]]
            assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
            assert len({c["id"] for c in chunks}) == 1
            contents = [c["choices"][0]["delta"].get("content") for c in chunks[:-1]]
            assert contents == tokenize(reply)
            assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
            assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}

            (request,) = llm.requests
            assert request.messages == MESSAGES
            assert request.completed and not request.disconnected
            assert request.text_sent == reply
            # Tokens follow an absolute schedule (a late one does not push the rest back).
            offsets = [t - request.started_at for _, t in request.tokens]
            assert all(offset >= 0.01 * i - 0.001 for i, offset in enumerate(offsets))

            # The same keep-alive connection serves the next request (list replies cycle).
            response2 = await http.post(f"{llm.base_url}/chat/completions", json={"messages": MESSAGES})
            assert response2.json()["choices"][0]["message"]["content"] == reply
            models = await http.get(f"{llm.base_url}/models")
            assert models.json()["data"][0]["id"] == "scripted"

    run(main())


def test_client_closing_mid_stream_is_noticed_at_once_and_stops_the_tokens() -> None:
    reply = " ".join(f"word{i}" for i in range(40))

    async def main() -> None:
        # Tokens 200 ms apart: a close noticed only at the next write would show up 200 ms late, well past the
        # bound below, which leaves room for a hiccup on a busy machine.
        async with ScriptedLlmServer([reply], token_delay_s=0.2) as llm:
            async with client() as http:
                body = {"messages": MESSAGES, "stream": True}
                async with http.stream("POST", f"{llm.base_url}/chat/completions", json=body) as response:
                    seen = 0
                    async for line in response.aiter_lines():
                        if line.startswith("data: {"):
                            seen += 1
                        if seen == 3:
                            break
                    closed_at = time.monotonic()
            await asyncio.sleep(0.15)
            (request,) = llm.requests
            assert request.disconnected and not request.completed
            assert request.disconnected_at is not None
            assert 0 <= request.disconnected_at - closed_at < 0.1
            assert all(t <= request.disconnected_at for _, t in request.tokens)
            written = len(request.tokens)
            assert 3 <= written <= 4
            await asyncio.sleep(0.1)
            assert len(request.tokens) == written

    run(main())


def test_dead_stalled_and_failing_modes() -> None:
    async def main() -> None:
        async with ScriptedLlmServer(["one two three four"], token_delay_s=0.005, mode="dead") as llm:
            body = {"messages": MESSAGES, "stream": True}
            async with client(timeout=httpx.Timeout(5.0, read=0.2)) as http:
                with pytest.raises(httpx.ReadTimeout):
                    await http.post(f"{llm.base_url}/chat/completions", json=body)
            await asyncio.sleep(0.05)
            assert llm.requests[-1].tokens == [] and llm.requests[-1].disconnected

            llm.mode = "stall_after=2"
            tokens: list[str] = []
            async with client(timeout=httpx.Timeout(5.0, read=0.2)) as http:
                with pytest.raises(httpx.ReadTimeout):
                    async with http.stream("POST", f"{llm.base_url}/chat/completions", json=body) as response:
                        async for line in response.aiter_lines():
                            if line.startswith("data: {"):
                                tokens.append(json.loads(line[6:])["choices"][0]["delta"]["content"])
            assert tokens == ["one ", "two "]

            llm.mode = "http_error=503"
            async with client() as http:
                response = await http.post(f"{llm.base_url}/chat/completions", json=body)
            assert response.status_code == 503 and response.json()["error"]["type"] == "server_error"

            llm.mode = "close"
            async with client() as http:
                with pytest.raises(httpx.RemoteProtocolError):
                    await http.post(f"{llm.base_url}/chat/completions", json=body)

        with pytest.raises(ValueError):
            ScriptedLlmServer(["x"], mode="sometimes")

    run(main())


def test_reply_function_sees_the_messages_and_first_token_waits() -> None:
    async def main() -> None:
        def answer(messages: list[dict[str, Any]]) -> str:
            return f"You said {messages[-1]['content']}"

        async with (
            ScriptedLlmServer(answer, token_delay_s=0.0, first_token_delay_s=0.1) as llm,
            client() as http,
        ):
            started = time.monotonic()
            body = {"messages": MESSAGES, "stream": True}
            async with http.stream("POST", f"{llm.base_url}/chat/completions", json=body) as response:
                text = "".join(
                    [
                        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                        async for line in response.aiter_lines()
                        if line.startswith("data: {")
                    ]
                )
            assert text == "You said hi"
            assert llm.requests[0].tokens[0][1] - started >= 0.09

    run(main())
