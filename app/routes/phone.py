"""`/phone`: talk to the agent from a browser, with no phone number (mounted only when PHONE_PAGE=true).

The page (app/static/phone.html, self-contained) plays the Twilio edge itself: it opens a Media Streams socket,
sends `connected` and `start`, streams the microphone as 20 ms mu-law `media` frames, plays the agent's `media`,
echoes each `mark` once the audio before it has played, and on `clear` drops its queue and echoes the pending
marks, as Twilio does [TW-WS]. So the call it makes is exactly a Twilio call to this server.

Auth. With provider auth off everything is open, as the rest of the server is, and the page streams to
/twilio/stream. With auth on:
- the page and `GET /phone/token` need the admin token: `Authorization: Bearer ADMIN_TOKEN` (the check /calls
  uses) or, for a browser that cannot set that header on a page load, HTTP Basic with ADMIN_TOKEN as the
  password (any user name); a 401 asks the browser for it, and the browser resends it to /phone/token;
- `GET /phone/token` issues a new call id and its single-use stream token (StreamTokens, provider "twilio"),
  which the page sends as `start.customParameters.token`, just as Twilio sends the `<Parameter>`;
- a browser cannot sign its upgrade with X-Twilio-Signature, so the page streams to /phone/stream instead: the
  Twilio stream without the signature check. The token, obtained with the admin token, stands in for it; the
  session refuses a start without a valid one (close 1008 "bad token").
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket
from fastapi.responses import HTMLResponse

from app.call.admission import Slot, UnstartedStreams
from app.call.session import CallDeps
from app.routes.media import _serve
from app.settings import Settings
from app.signatures import WebhookAuth
from app.stream_tokens import StreamTokens, TokenRefused

PROVIDER = "twilio"  # the page speaks Twilio Media Streams


def _page() -> str:
    return resources.files("app").joinpath("static/phone.html").read_text(encoding="utf-8")


def phone_router(
    settings: Settings,
    auth: WebhookAuth,
    tokens: StreamTokens,
    require_admin: Callable[[Request], None],
    deps_factory: Callable[[], CallDeps],
    unstarted: UnstartedStreams | None = None,
) -> APIRouter:
    router = APIRouter()
    streams = unstarted if unstarted is not None else UnstartedStreams()
    page = _page()  # read once: a missing file fails at startup, not on the first visit

    def require_phone_admin(request: Request) -> None:
        """require_admin (Bearer), or HTTP Basic with ADMIN_TOKEN as the password, for a browser."""
        try:
            require_admin(request)
            return
        except HTTPException:
            pass
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic" and settings.admin_token:
            try:
                password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                password = ""
            if secrets.compare_digest(password.encode(), settings.admin_token.encode()):
                return
        raise HTTPException(status_code=401, detail="admin token required",
                            headers={"WWW-Authenticate": 'Basic realm="bargein phone"'})

    @router.get("/phone", dependencies=[Depends(require_phone_admin)])
    async def phone_page() -> HTMLResponse:
        # The page's inline script and style are the only ones it may run; it connects only to this origin.
        csp = ("default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; "
               "connect-src 'self' ws: wss:; media-src 'self' blob:; img-src 'self' data:")
        return HTMLResponse(page, headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"})

    @router.get("/phone/token", dependencies=[Depends(require_phone_admin)])
    async def phone_token() -> dict[str, Any]:
        """A new call id, its stream id and single-use stream token, and the path to stream to."""
        call_id = "CA" + secrets.token_hex(16)
        try:
            token = tokens.issue(PROVIDER, call_id)
        except TokenRefused as exc:
            raise HTTPException(status_code=503, detail=f"no stream token: {exc.reason}") from None
        return {
            "call_id": call_id,
            "stream_id": "MZ" + secrets.token_hex(16),
            "token": token,
            "stream_path": "/twilio/stream" if auth.insecure else "/phone/stream",
        }

    @router.websocket("/phone/stream")
    async def phone_stream(websocket: WebSocket) -> None:
        """The Twilio stream without the upgrade signature (a browser cannot sign); the start's token is required
        whenever auth is on (the session checks it)."""
        deps = deps_factory()
        address = websocket.client.host if websocket.client is not None else "unknown"
        s = deps.settings
        slot = streams.admit(address, s.max_unstarted_streams_per_address, s.max_unstarted_streams)
        if not isinstance(slot, Slot):
            await websocket.close(code=1008)
            return
        try:
            await _serve(websocket, PROVIDER, deps, slot)
        finally:
            slot.release()

    return router
