"""The embedded scripted LLM, mounted on the server itself at /embedded-llm/v1 (OpenAI-compatible, streamed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from providers.llm.scripted import scripted_reply, sse_chunks

PREFIX = "/embedded-llm/v1"


def embedded_llm_router(token_delay_s: float) -> APIRouter:
    router = APIRouter(prefix=PREFIX)

    @router.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            body: Any = await request.json()
            messages = body["messages"]
            if not isinstance(messages, list):
                raise TypeError("messages must be a list")
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": {"message": f"bad request: {exc}"}}, status_code=400)
        text = scripted_reply(messages)

        async def body_iter() -> AsyncIterator[bytes]:
            for i, chunk in enumerate(sse_chunks(text)):
                if i and token_delay_s:
                    # Paced like a real model, so a barge-in meets a stream still in flight.
                    await asyncio.sleep(token_delay_s)
                yield chunk

        return StreamingResponse(body_iter(), media_type="text/event-stream")

    @router.get("/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "scripted", "object": "model"}]}

    return router
