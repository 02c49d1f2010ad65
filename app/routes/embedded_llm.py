"""The embedded scripted LLM, mounted on the server itself at /embedded-llm/v1 (OpenAI-compatible, streamed).

Only the server's own LLM client may use it: a request must come from this host (a loopback address, or the
very address the connection arrived on, for a server bound to one interface) AND carry the per-process bearer
key that create_app() hands to both the router and the client. The address alone is not enough: behind a
proxy trusted with FORWARDED_ALLOW_IPS='*', uvicorn takes the client address from X-Forwarded-For, which anyone
can set to 127.0.0.1. The key alone would do, but the address check keeps the endpoint off the public surface
even if the key leaked into a log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from providers.llm.base import ToolCall
from providers.llm.scripted import scripted_turn, sse_chunks, sse_tool_call_chunks

logger = logging.getLogger(__name__)

PREFIX = "/embedded-llm/v1"


def _is_local(client: str | None, server: str | None) -> bool:
    """A loopback client (127.0.0.0/8, ::1, also IPv4-mapped), or one whose address is the server's own."""
    if not client:
        return False
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return True
    # A server bound to one non-loopback interface reaches itself from that address (see llm_base_url).
    try:
        return server is not None and not address.is_unspecified and address == ipaddress.ip_address(server)
    except ValueError:
        return False


class _QuietStreamingResponse(StreamingResponse):
    """A StreamingResponse that ends quietly when the client goes away mid-stream.

    On barge-in the server's LLM client closes this HTTP stream on purpose. Under ASGI spec < 2.4 (uvicorn's
    HTTP protocols today) Starlette notices the http.disconnect and cancels the body generator, which is quiet;
    under spec >= 2.4 the server's `send` raises OSError instead and Starlette re-raises it as ClientDisconnect,
    which uvicorn would log at ERROR with a traceback. Either way the generator is closed where it stood, so no
    more tokens are produced for a caller that is gone.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            logger.debug("embedded LLM: the client closed the stream (barge-in)")


def embedded_llm_router(token_delay_s: float, api_key: str) -> APIRouter:
    """The scripted LLM's routes; every request needs `Authorization: Bearer {api_key}` and a local client."""
    if not api_key:
        raise ValueError("the embedded LLM needs a key")
    expected = f"Bearer {api_key}".encode()

    def only_this_server(request: Request) -> None:
        client = request.client.host if request.client else None
        server = request.scope.get("server")
        server_host = server[0] if isinstance(server, (tuple, list)) and server else None
        if not _is_local(client, server_host):
            logger.warning("embedded LLM refused a request from a non-local address")
            raise HTTPException(status_code=403, detail="the embedded LLM answers this server only")
        given = request.headers.get("authorization", "").encode()
        if not secrets.compare_digest(given, expected):
            logger.warning("embedded LLM refused a request without the server's key")
            raise HTTPException(status_code=401, detail="the embedded LLM answers this server only")

    router = APIRouter(prefix=PREFIX, dependencies=[Depends(only_this_server)])

    @router.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            body: Any = await request.json()
            messages = body["messages"]
            if not isinstance(messages, list):
                raise TypeError("messages must be a list")
        except ClientDisconnect:
            # A barge-in that lands just after the turn sent its request closes the connection before we read
            # the body, and uvicorn then reports http.disconnect even for a body it had received in full. That
            # is the server's own client going away, as designed: end quietly, or uvicorn logs the
            # ClientDisconnect as "Exception in ASGI application" with a traceback at ERROR.
            logger.debug("embedded LLM: the client went away before its request was read")
            return Response(status_code=499)  # nobody reads it; nginx's "client closed request"
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": {"message": f"bad request: {exc}"}}, status_code=400)
        offered = body.get("tools") if isinstance(body, dict) else None
        names = {t.get("function", {}).get("name") for t in offered if isinstance(t, dict)} \
            if isinstance(offered, list) else set()
        reply = scripted_turn(messages, names)
        chunks = sse_tool_call_chunks(reply) if isinstance(reply, ToolCall) else sse_chunks(reply)

        async def body_iter() -> AsyncIterator[bytes]:
            for i, chunk in enumerate(chunks):
                if i and token_delay_s:
                    # Paced like a real model, so a barge-in meets a stream still in flight.
                    await asyncio.sleep(token_delay_s)
                yield chunk

        return _QuietStreamingResponse(body_iter(), media_type="text/event-stream")

    @router.get("/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "scripted", "object": "model"}]}

    return router
