"""The media-stream WebSockets: accept, pick the provider adapter, pump socket <-> CallSession.

This module is the sole owner of the socket. Upgrades are admitted against the cap on unstarted streams
(`call/admission.py`) and checked against the provider's signature before `accept()`; refusing before accept
answers the HTTP upgrade with 403. A stream that has not sent a valid `start` within STREAM_START_TIMEOUT_S of
the upgrade is closed with 1008 "no start" (the session's timer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from app import logctx
from app.call.admission import Refused, Slot, UnstartedStreams
from app.call.session import CallDeps, CallSession, StreamRefused
from app.logsafe import LogBudget, drop_uvicorn_invalid_utf8_traceback, safe
from app.signatures import WebhookAuth
from providers.telephony import PROTOCOLS
from providers.telephony.base import TelephonyProtocol

logger = logging.getLogger(__name__)

TICK_S = 0.05  # VAD and turn timers without frames: 50 ms is well under the 700 ms turn-end silence
LOG_SUMMARY_INTERVAL_S = 10.0  # refused upgrades, frame faults: the first logged, then a summary per interval
INVALID_UTF8 = 1007  # RFC 6455 7.4.1: "data within a message that was not consistent with the type"
CAP_SETTING = {"address": "MAX_UNSTARTED_STREAMS_PER_ADDRESS", "total": "MAX_UNSTARTED_STREAMS"}


def media_router(
    deps_factory: Callable[[], CallDeps], auth: WebhookAuth, unstarted: UnstartedStreams | None = None
) -> APIRouter:
    router = APIRouter()
    streams = unstarted if unstarted is not None else UnstartedStreams()
    refusals = LogBudget(burst=1, interval_s=LOG_SUMMARY_INTERVAL_S)
    # A non-UTF-8 text frame is closed with 1007 by uvicorn, which also logs a traceback for it: see the helper.
    drop_uvicorn_invalid_utf8_traceback()

    def admit(websocket: WebSocket, provider: str, deps: CallDeps) -> Slot | None:
        # The peer's address as uvicorn reports it. Behind a TLS terminator or load balancer, uvicorn must run
        # with proxy_headers (`bargein serve` does) and FORWARDED_ALLOW_IPS naming the proxy, so that this is the
        # provider's address from X-Forwarded-For; otherwise every stream shares the proxy's address and its cap.
        address = websocket.client.host if websocket.client is not None else "unknown"
        s = deps.settings
        admitted = streams.admit(address, s.max_unstarted_streams_per_address, s.max_unstarted_streams)
        if isinstance(admitted, Slot):
            return admitted
        _log_refusal(refusals.take(deps.clock.now()), provider, address, admitted)
        return None

    @router.websocket("/twilio/stream")
    async def twilio_stream(websocket: WebSocket) -> None:
        deps = deps_factory()
        slot = admit(websocket, "twilio", deps)
        if slot is None:
            await websocket.close(code=1008)  # before accept: the upgrade is answered with 403
            return
        try:
            if not auth.check_twilio_upgrade("/twilio/stream", websocket.headers):  # it logs why, rate-limited
                await websocket.close(code=1008)
                return
            await _serve(websocket, "twilio", deps, slot)
        finally:
            slot.release()

    @router.websocket("/plivo/stream")
    async def plivo_stream(websocket: WebSocket) -> None:
        deps = deps_factory()
        # Admission first: a refused upgrade costs no signature check (and no mismatch line in the log).
        slot = admit(websocket, "plivo", deps)
        if slot is None:
            await websocket.close(code=1008)
            return
        try:
            if not auth.plivo_upgrade_allowed("/plivo/stream", websocket.headers):
                await websocket.close(code=1008)
                return
            await _serve(websocket, "plivo", deps, slot)
        finally:
            slot.release()

    return router


def _log_refusal(count: int | None, provider: str, address: str, refused: Refused) -> None:
    """One line for the first refusal, then one per LOG_SUMMARY_INTERVAL_S summing up the refusals since."""
    if count is None:
        return
    where = f"from {safe(address, 64)}" if refused.scope == "address" else "in all"
    if count == 0:
        logger.warning(
            "%s stream upgrade refused: %d streams without a valid start already open %s (%s=%d); "
            "further refusals are summed up every %.0f s",
            provider, refused.open, where, CAP_SETTING[refused.scope], refused.cap, LOG_SUMMARY_INTERVAL_S,
        )
    else:
        logger.warning(
            "%d stream upgrades refused over the caps on streams without a valid start (latest: %s, %d open %s, %s=%d)",
            count, provider, refused.open, where, CAP_SETTING[refused.scope], refused.cap,
        )


async def _serve(websocket: WebSocket, provider: str, deps: CallDeps, slot: Slot) -> None:
    await websocket.accept()
    # The stream runs in a task of its own. Every time a task resumes (each frame, each Silero window) Python
    # re-enters its whole chain of awaiting coroutines, and the endpoint's chain runs ~15 deep through
    # uvicorn, Starlette and FastAPI; the pump's own is 6. Cancelling the endpoint cancels the pump.
    await asyncio.create_task(_pump(websocket, provider, deps, slot), name=f"{provider}-stream")


async def _pump(websocket: WebSocket, provider: str, deps: CallDeps, slot: Slot) -> None:
    protocol = PROTOCOLS[provider](max_payload_bytes=deps.settings.media_max_payload_bytes)
    await pump(websocket, protocol, deps, slot)


# A hook of a stream route's own: given the session, returns the `start` text to feed before an unnamed
# binary frame (or None: the frame goes to the session as it is).
NameCall = Callable[[CallSession], str | None]


async def pump(
    websocket: WebSocket,
    protocol: TelephonyProtocol,
    deps: CallDeps,
    slot: Slot,
    *,
    send: Callable[[str], Awaitable[None]] | None = None,
    start: str | None = None,
    helpers: Sequence[Callable[[CallSession], Coroutine[Any, Any, None]]] = (),
    name_call: NameCall | None = None,
) -> None:
    """Pump one stream's socket into its CallSession until it ends; every stream route runs this.

    The carriers use it as it is. A route with a wire of its own (`/pcm/stream`) passes `send` (its outbound
    framing), a `start` text made from its query string, `helpers` (tasks that live as long as the stream, given
    the session) and `name_call`.
    """
    logctx.bind(protocol.name)  # before the ticker below: every task of this stream shares this log context
    session = CallSession(protocol, send if send is not None else websocket.send_text, deps)
    clock = deps.clock
    ended: list[str] = []
    ticker = asyncio.create_task(_tick(session, clock.now, ended, asyncio.current_task()))
    side_tasks: list[asyncio.Task[None]] = [asyncio.create_task(helper(session)) for helper in helpers]
    receive = websocket.receive
    reason = "socket closed"
    # Held until the `start` is found valid (the session calls back before it reads the store; MAX_CALLS bounds
    # the stream from there), or failing that until the session has a record, or the socket closes.
    session.on_valid_start = slot.release
    unstarted: Slot | None = slot
    faults = LogBudget(burst=1, interval_s=LOG_SUMMARY_INTERVAL_S)  # a fault a peer can repeat: one traceback
    try:
        if start is not None:
            await session.handle_text(start, clock.now())
        while True:
            message = await receive()
            arrival = clock.now()
            if message["type"] == "websocket.disconnect":
                if message.get("code") == INVALID_UTF8:
                    # uvicorn decodes text frames itself and closed the socket with 1007 on bad UTF-8 (its own
                    # traceback for it is filtered out, see logsafe): one line here, with the call's context.
                    reason = "invalid utf-8"
                    if session.record is None:
                        logger.warning("%s stream closed with 1007 before start: a text frame was not UTF-8",
                                       protocol.name)
                break
            text = message.get("text")
            try:
                if text is not None:
                    await session.handle_text(text, arrival)
                elif (data := message.get("bytes")) is not None:
                    if name_call is not None and session.record is None and (named := name_call(session)):
                        await session.handle_text(named, arrival)
                    await session.handle_bytes(data, arrival)  # the carriers send none: counted as invalid
                if unstarted is not None and session.record is not None:
                    unstarted.release()
                    unstarted = None
            except StreamRefused as refused:
                reason = str(refused)
                break
            except Exception as exc:
                # One bad frame must not end the call: log it, keep the call and what was said so far.
                count = faults.take(arrival)
                if count == 0:
                    logger.exception("error while handling a frame; the call goes on")
                elif count is not None:
                    logger.error("%d more errors while handling frames (latest: %s); the call goes on",
                                 count, type(exc).__name__)
    except StreamRefused as refused:  # the `start` given by the route was refused
        reason = str(refused)
    except asyncio.CancelledError:
        if not ended:
            raise  # server shutdown, not our timer: let it propagate after cleanup below
        reason = ended[0]
    finally:
        slot.release()
        for task in (ticker, *side_tasks):
            task.cancel()
        for task in (ticker, *side_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session.flush_invalid_log(clock.now(), final=True)
        await session.close(ended[0] if ended else reason)
        if websocket.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                if reason in ("stop", "socket closed", "drain"):
                    await websocket.close(code=1000)
                else:  # our own fixed words ("no start", "bad token", ...), never the peer's text
                    await websocket.close(code=1008, reason=reason)


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
