"""`/pcm/stream`: the media stream for harnesses and browsers that speak no carrier dialect.

Raw PCM16 LE mono in binary frames both ways at `?rate=` (8000, 16000 or 24000; default 16000), JSON text for
control (the wire is described in providers/telephony/pcm.py). The call itself is the carriers' call: the same
CallSession, VAD, detector, outbox and playback ledger; the codec converts to and from 8 kHz mu-law at the edge.

Naming the call and auth. The first text frame may be `{"event":"start","callId":..,"token":..}`; the query
string may carry `call_id` and `token` instead (then the route starts the call itself before reading a frame).
A client that sends audio first gets a call id made up here. When provider auth is on, `start` must bring a
per-call stream token, issued by `POST /pcm/token` (admin token required) for the call id it returns: the same
single-use, short-lived token the answer webhooks put in `<Parameter>`, bound to provider "pcm". A token in the
query string lands in access logs; it is single-use and expires in STREAM_TOKEN_TTL_S, but the start frame
keeps it out of them.

Playback reports. `?marks=1`: we send `{"event":"mark","name":..}` after each chunk and the client echoes it
once that audio has played, which is what makes the heard text exact. Without it (the default) no marks are
sent and each chunk counts as played when it was sent plus its duration, back to back: the estimate a client
with no jitter buffer would give, and never later than the truth by more than the client's buffering.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, WebSocket

from app.call.admission import Slot, UnstartedStreams
from app.call.session import CallDeps, CallSession
from app.clock import Clock
from app.routes.media import pump
from app.stream_tokens import StreamTokens, TokenRefused
from providers.telephony import BINARY_PROTOCOLS
from providers.telephony.base import BinaryTelephonyProtocol
from providers.telephony.pcm import DEFAULT_RATE, RATES, PcmProtocol

logger = logging.getLogger(__name__)

PROVIDER = "pcm"


class PcmWire:
    """The socket side of one `/pcm/stream`: binary audio out, marks sent or acknowledged on the client's behalf."""

    def __init__(self, websocket: WebSocket, protocol: BinaryTelephonyProtocol, clock: Clock, client_marks: bool):
        self._ws = websocket
        self._protocol = protocol
        self._clock = clock
        self.client_marks = client_marks
        self._play_end = 0.0  # when the audio sent so far will have played, back to back (the no-echo estimate)
        self.due: deque[tuple[float, str]] = deque()  # (when played, mark) to acknowledge for a silent client
        self.wake = asyncio.Event()

    async def send(self, text: str) -> None:
        """The session's writer: every frame the session builds passes through here."""
        frame = self._protocol.outbound(text)
        if isinstance(frame, bytes):
            now = self._clock.now()
            self._play_end = max(self._play_end, now) + len(frame) / 2 / self._protocol.rate
            await self._ws.send_bytes(frame)
            return
        if not self.client_marks:
            name = PcmProtocol.mark_name(text)
            if name is not None:
                self.due.append((self._play_end, name))
                self.wake.set()
                return
        if PcmProtocol.is_clear(text):
            self.due.clear()  # the ledger forgot those marks when the clear went out
            self._play_end = self._clock.now()
        await self._ws.send_text(frame)

    async def ack_played(self, session: CallSession) -> None:
        """For a client that does not echo marks: acknowledge each when its audio has played by the estimate."""
        while True:
            if not self.due:
                self.wake.clear()
                await self.wake.wait()
                continue
            at, name = self.due[0]
            delay = at - self._clock.now()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self.due.popleft()
            session.mark_played(name, self._clock.now())


def pcm_router(
    deps_factory: Callable[[], CallDeps],
    tokens: StreamTokens,
    require_admin: Callable[[Request], None],
    unstarted: UnstartedStreams | None = None,
) -> APIRouter:
    router = APIRouter()
    streams = unstarted if unstarted is not None else UnstartedStreams()

    @router.post("/pcm/token", dependencies=[Depends(require_admin)])
    async def pcm_token() -> dict[str, Any]:
        """A new call id and its single-use stream token (needed on /pcm/stream when auth is on)."""
        call_id = "PC" + secrets.token_hex(16)
        try:
            token = tokens.issue(PROVIDER, call_id)
        except TokenRefused as exc:  # only "full": the call id is new
            return {"error": exc.reason}
        return {"call_id": call_id, "token": token, "provider": PROVIDER}

    @router.websocket("/pcm/stream")
    async def pcm_stream(websocket: WebSocket) -> None:
        deps = deps_factory()
        query = websocket.query_params
        try:
            rate = int(query.get("rate", DEFAULT_RATE))
        except ValueError:
            rate = 0
        if rate not in RATES:
            await websocket.close(code=1008)  # before accept: answered 403
            return
        address = websocket.client.host if websocket.client is not None else "unknown"
        s = deps.settings
        slot = streams.admit(address, s.max_unstarted_streams_per_address, s.max_unstarted_streams)
        if not isinstance(slot, Slot):
            logger.warning("pcm stream upgrade refused: %d streams without a start open", slot.open)
            await websocket.close(code=1008)
            return
        try:
            await websocket.accept()
            protocol = BINARY_PROTOCOLS[PROVIDER](max_payload_bytes=s.media_max_payload_bytes, rate=rate)
            marks = query.get("marks", "0").lower() in ("1", "true", "yes", "on")
            start = None
            if query.get("call_id"):
                start = PcmProtocol.start_frame(query["call_id"], query.get("token") or None)
            await asyncio.create_task(_pump(websocket, protocol, deps, slot, marks, start), name="pcm-stream")
        finally:
            slot.release()

    return router


async def _pump(
    websocket: WebSocket,
    protocol: BinaryTelephonyProtocol,
    deps: CallDeps,
    slot: Slot,
    client_marks: bool,
    start: str | None,
) -> None:
    """The carriers' pump (app/routes/media.py), with this wire's framing in between (see PcmWire)."""
    wire = PcmWire(websocket, protocol, deps.clock, client_marks)

    def name_call(session: CallSession) -> str | None:
        # Audio first: the client did not name the call. Without auth, that is fine; with auth, the made-up call
        # has no token and is refused.
        if protocol.stream_id is None:
            return PcmProtocol.start_frame("PC" + secrets.token_hex(16))
        return None

    helpers = [] if client_marks else [wire.ack_played]
    await pump(websocket, protocol, deps, slot, send=wire.send, start=start, helpers=helpers, name_call=name_call)
