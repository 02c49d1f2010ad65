"""The media-stream WebSockets: accept, pick the provider adapter, pump socket <-> CallSession.

This module is the sole owner of the socket. Upgrades are checked against the provider's signature before
`accept()`; refusing before accept answers the HTTP upgrade with 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from app.call.session import CallDeps, CallSession, StreamRefused
from app.security import WebhookAuth
from providers.telephony import PROTOCOLS

logger = logging.getLogger(__name__)

TICK_S = 0.05  # VAD and turn timers without frames: 50 ms is well under the 700 ms turn-end silence


def media_router(deps_factory: Callable[[], CallDeps], auth: WebhookAuth) -> APIRouter:
    router = APIRouter()

    @router.websocket("/twilio/stream")
    async def twilio_stream(websocket: WebSocket) -> None:
        if not auth.check_twilio_upgrade("/twilio/stream", websocket.headers):
            logger.warning("twilio stream upgrade refused: bad signature")
            await websocket.close(code=1008)  # before accept: the upgrade is answered with 403
            return
        await _serve(websocket, "twilio", deps_factory())

    @router.websocket("/plivo/stream")
    async def plivo_stream(websocket: WebSocket) -> None:
        if not auth.plivo_upgrade_allowed("/plivo/stream", websocket.headers):
            await websocket.close(code=1008)
            return
        await _serve(websocket, "plivo", deps_factory())

    return router


async def _serve(websocket: WebSocket, provider: str, deps: CallDeps) -> None:
    await websocket.accept()
    # The stream runs in a task of its own. Every time a task resumes (each frame, each Silero window) Python
    # re-enters its whole chain of awaiting coroutines, and the endpoint's chain runs ~15 deep through
    # uvicorn, Starlette and FastAPI; the pump's own is 6. Cancelling the endpoint cancels the pump.
    await asyncio.create_task(_pump(websocket, provider, deps), name=f"{provider}-stream")


async def _pump(websocket: WebSocket, provider: str, deps: CallDeps) -> None:
    session = CallSession(PROTOCOLS[provider](), websocket.send_text, deps)
    clock = deps.clock
    ended: list[str] = []
    ticker = asyncio.create_task(_tick(session, clock.now, ended, asyncio.current_task()))
    receive = websocket.receive
    reason = "socket closed"
    try:
        while True:
            message = await receive()
            arrival = clock.now()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            try:
                if text is not None:
                    await session.handle_text(text, arrival)
                elif message.get("bytes") is not None:
                    session.invalid_binary()
            except StreamRefused as refused:
                reason = str(refused)
                break
            except Exception:
                # One bad frame must not end the call: log it, keep the call and what was said so far.
                logger.exception("error while handling a frame; the call goes on")
    except asyncio.CancelledError:
        if not ended:
            raise  # server shutdown, not our timer: let it propagate after cleanup below
        reason = ended[0]
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await session.close(ended[0] if ended else reason)
        if websocket.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close(code=1000 if reason in ("stop", "socket closed") else 1008)


async def _tick(
    session: CallSession, now: Callable[[], float], ended: list[str], reader: asyncio.Task[object] | None
) -> None:
    """Drives timers without frames; on idle (or a refusal) it records why and stops the reader."""
    while True:
        await asyncio.sleep(TICK_S)
        try:
            await session.on_tick(now())
        except StreamRefused as refused:
            ended.append(str(refused))
            if reader is not None:
                reader.cancel()
            return
        except Exception:
            logger.exception("error in the call timer; the call goes on")
