"""Answer URLs: TwiML / Plivo XML that point a call at /twilio/stream or /plivo/stream, and their fallbacks.

Every URL placed in the XML is built from PUBLIC_URL (scheme, host, optional port and path prefix), because
the provider must reach it from outside; every signature is checked over the same public form (see
app/security.py). Route paths below are the ones the app serves; a public path prefix is the proxy's business.
With PUBLIC_URL unset (allowed only without provider auth) the base is derived per webhook from the host it was
called on (app/public_url.py), with a warning per distinct base.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from plivo import plivoxml
from starlette.datastructures import FormData
from twilio.twiml.voice_response import VoiceResponse

from app.logsafe import safe
from app.public_url import FirstSeen, derive_base_url, ws_url
from app.settings import Settings
from app.signatures import WebhookAuth
from app.stream_tokens import StreamTokens, TokenRefused

logger = logging.getLogger(__name__)

TWILIO_VOICE = "/twilio/voice"
TWILIO_AFTER_STREAM = "/twilio/after-stream"
TWILIO_STREAM_STATUS = "/twilio/stream-status"
TWILIO_STREAM = "/twilio/stream"
PLIVO_ANSWER = "/plivo/answer"
PLIVO_AFTER_STREAM = "/plivo/after-stream"
PLIVO_STREAM_STATUS = "/plivo/stream-status"
PLIVO_STREAM = "/plivo/stream"

TOKEN_PARAM = "token"
# Plivo hands extraHeaders back on `start`: [A-Za-z0-9] `key=value` pairs, 512 bytes at most (§2.4).
PLIVO_EXTRA_HEADERS_MAX = 512
# We send and expect μ-law: Plivo's docs disagree on the default, so it is always set (§2.4, quirk 10).
PLIVO_CONTENT_TYPE = "audio/x-mulaw;rate=8000"

XML = "application/xml"


def webhook_router(
    settings: Settings,
    auth: WebhookAuth,
    tokens: StreamTokens,
    has_capacity: Callable[[], bool],
    *,
    call_ended_cleanly: Callable[[str], bool] | None = None,
    accepting: Callable[[], bool] | None = None,
) -> APIRouter:
    """The webhook routes for both providers.

    `has_capacity()` False makes the answer webhooks refuse the call politely. `call_ended_cleanly(call_id)`,
    if given, tells the after-stream fallbacks that the agent itself closed the stream to end the call, so
    they hang up without apologising; without it every stream end that reaches them is treated as a fault.
    `accepting()` False (the server is draining, app/drain.py) refuses new calls the same polite way.
    """
    router = APIRouter()
    derived_bases = FirstSeen()

    def public_base(request: Request) -> str:
        """PUBLIC_URL, or (unset, so auth is off) the base the webhook was called on, warned once per base."""
        if settings.public_url:
            return settings.public_url
        server = request.scope.get("server")
        base = derive_base_url(request.headers, request.url.scheme, tuple(server) if server else None)
        seen = derived_bases.note(base)
        if seen == "new":
            logger.warning(
                "PUBLIC_URL is unset: pointing the provider at %s, derived from the webhook's Forwarded / "
                "X-Forwarded-Host / Host headers; set PUBLIC_URL to the URL the provider calls", base
            )
        elif seen == "full":
            logger.warning("PUBLIC_URL is unset and many distinct hosts were derived; no more are logged")
        return base

    async def signed_form(provider: str, route: str, request: Request) -> FormData | None:
        """The webhook's form when its signature checks out (always, in insecure mode); None: answer 403."""
        form = await request.form()
        path = _signed_path(route, request)
        if provider == "twilio":
            ok = auth.check_twilio(path, form, request.headers)
        else:
            ok = auth.check_plivo("POST", path, form, request.headers)
        return form if ok else None

    def issue_token(provider: str, call_id: str, log: dict[str, str]) -> str | None:
        """The call's stream token; None when it already had one that was used or expired: hang up then.

        A provider retrying its webhook gets the same token back. Anything later is a replay of a signed
        request (Twilio signatures carry no nonce or time), and a second token would let its sender open a
        second stream for the call, so the answer is a plain hang-up.
        """
        try:
            return tokens.issue(provider, call_id)
        except TokenRefused as refused:
            hint = "" if refused.reason == "full" else " (a replayed or late answer webhook)"
            logger.warning("no stream token for the call: %s%s; hanging up", refused.reason, hint, extra=log)
            return None

    def ended_cleanly(call_id: str) -> bool:
        return bool(call_id) and call_ended_cleanly is not None and call_ended_cleanly(call_id)

    # --- Twilio --------------------------------------------------------------------------------------------

    @router.post(TWILIO_VOICE)
    async def twilio_voice(request: Request) -> Response:
        form = await signed_form("twilio", TWILIO_VOICE, request)
        if form is None:
            return _forbidden()
        call_sid = _field(form, "CallSid")
        if not call_sid:
            return PlainTextResponse("missing CallSid\n", status_code=400)
        log = {"call_sid": call_sid, "provider": "twilio"}
        if accepting is not None and not accepting():
            logger.info("draining: refusing a Twilio call", extra=log)
            return _xml(_twilio_say_and_hang_up(settings.agent_busy_text))
        if not has_capacity():
            logger.warning("at capacity: refusing a Twilio call", extra=log)
            return _xml(_twilio_say_and_hang_up(settings.agent_busy_text))
        token = issue_token("twilio", call_sid, log)
        if token is None:
            return _xml(_twilio_hang_up())
        base = public_base(request)
        response = VoiceResponse()
        # With <Connect>, Twilio requests `action` once our side closes the socket (§1.4): the place to speak
        # an apology instead of leaving a caller in silence or cutting them off after a fault.
        connect = response.connect(action=f"{base}{TWILIO_AFTER_STREAM}", method="POST")
        # No query string in the stream URL: it breaks the handshake (error 31920); the token rides in
        # <Parameter> and comes back in start.customParameters (§1.4, quirk 6).
        stream = connect.stream(
            url=f"{ws_url(base)}{TWILIO_STREAM}",
            status_callback=f"{base}{TWILIO_STREAM_STATUS}",
            status_callback_method="POST",
        )
        stream.parameter(name=TOKEN_PARAM, value=token)
        logger.info("answering Twilio call with a media stream", extra=log)
        return _xml(str(response))

    @router.post(TWILIO_AFTER_STREAM)
    async def twilio_after_stream(request: Request) -> Response:
        form = await signed_form("twilio", TWILIO_AFTER_STREAM, request)
        if form is None:
            return _forbidden()
        call_sid = _field(form, "CallSid")
        log = {"call_sid": call_sid, "provider": "twilio"}
        if ended_cleanly(call_sid):
            logger.info("stream ended by the agent; hanging up", extra=log)
            return _xml(_twilio_hang_up())
        logger.warning("stream ended without the agent ending the call; apologising", extra=log)
        return _xml(_twilio_say_and_hang_up(settings.agent_apology_text))

    @router.post(TWILIO_STREAM_STATUS)
    async def twilio_stream_status(request: Request) -> Response:
        form = await signed_form("twilio", TWILIO_STREAM_STATUS, request)
        if form is None:
            return _forbidden()
        # Fields per the <Stream> docs: StreamEvent, StreamError, StreamSid, StreamName, CallSid (§1.4).
        logger.info(
            "twilio stream status %s (stream %s)%s",
            safe(_field(form, "StreamEvent") or "?", quote=False),
            safe(_field(form, "StreamSid") or "?", quote=False),
            f": {safe(_field(form, 'StreamError'), 200, quote=False)}" if _field(form, "StreamError") else "",
            extra={"call_sid": _field(form, "CallSid"), "provider": "twilio"},
        )
        return Response(status_code=204)

    # --- Plivo ---------------------------------------------------------------------------------------------

    @router.post(PLIVO_ANSWER)
    async def plivo_answer(request: Request) -> Response:
        form = await signed_form("plivo", PLIVO_ANSWER, request)
        if form is None:
            return _forbidden()
        call_uuid = _field(form, "CallUUID")
        if not call_uuid:
            return PlainTextResponse("missing CallUUID\n", status_code=400)
        log = {"call_sid": call_uuid, "provider": "plivo"}
        if accepting is not None and not accepting():
            logger.info("draining: refusing a Plivo call", extra=log)
            return _xml(_plivo_speak_and_hang_up(settings.agent_busy_text))
        if not has_capacity():
            logger.warning("at capacity: refusing a Plivo call", extra=log)
            return _xml(_plivo_speak_and_hang_up(settings.agent_busy_text))
        token = issue_token("plivo", call_uuid, log)
        if token is None:
            return _xml(_plivo_hang_up())
        extra_headers = f"{TOKEN_PARAM}={token}"
        if len(extra_headers.encode()) > PLIVO_EXTRA_HEADERS_MAX:  # cannot happen with our 60-char tokens
            raise RuntimeError("stream token too long for Plivo extraHeaders")
        base = public_base(request)
        response = plivoxml.ResponseElement()
        response.add(
            plivoxml.StreamElement(
                f"{ws_url(base)}{PLIVO_STREAM}",
                bidirectional=True,
                # keepCallAlive="true": the Stream runs alone and the next element runs only once the socket
                # disconnects (§2.4), which is what makes the <Redirect> below a fallback and not a race.
                keepCallAlive=True,
                contentType=PLIVO_CONTENT_TYPE,
                audioTrack="inbound",  # bidirectional streams must not use outbound/both (§2.4)
                statusCallbackUrl=f"{base}{PLIVO_STREAM_STATUS}",
                statusCallbackMethod="POST",
                extraHeaders=extra_headers,
            )
        )
        # After the socket closes, ask us what to do rather than speak a fixed apology: a stream the agent
        # ended on purpose then just hangs up (so closing the socket stays an in-band hang-up, no REST
        # credentials needed), and a fault gets the apology. Mirrors Twilio's <Connect action>.
        response.add(plivoxml.RedirectElement(f"{base}{PLIVO_AFTER_STREAM}", method="POST"))
        logger.info("answering Plivo call with a media stream", extra=log)
        return _xml(_plivo_xml(response))

    @router.post(PLIVO_AFTER_STREAM)
    async def plivo_after_stream(request: Request) -> Response:
        form = await signed_form("plivo", PLIVO_AFTER_STREAM, request)
        if form is None:
            return _forbidden()
        call_uuid = _field(form, "CallUUID")
        log = {"call_sid": call_uuid, "provider": "plivo"}
        if ended_cleanly(call_uuid):
            logger.info("stream ended by the agent; hanging up", extra=log)
            return _xml(_plivo_hang_up())
        logger.warning("stream ended without the agent ending the call; apologising", extra=log)
        return _xml(_plivo_speak_and_hang_up(settings.agent_apology_text))

    @router.post(PLIVO_STREAM_STATUS)
    async def plivo_stream_status(request: Request) -> Response:
        form = await signed_form("plivo", PLIVO_STREAM_STATUS, request)
        if form is None:
            return _forbidden()
        # The XML reference names the field Event (StartStream/StopStream/DroppedStream/DegradedStream), the
        # newer guide uses started/stopped/failed with StatusReason: log whichever is there (§2.4).
        logger.info(
            "plivo stream status %s (stream %s)%s",
            safe(_field(form, "Event") or _field(form, "StreamEvent") or _field(form, "Status") or "?", quote=False),
            safe(_field(form, "StreamID") or _field(form, "StreamId") or "?", quote=False),
            f": {safe(_field(form, 'StatusReason'), 200, quote=False)}" if _field(form, "StatusReason") else "",
            extra={"call_sid": _field(form, "CallUUID"), "provider": "plivo"},
        )
        return Response(status_code=204)

    return router


def _signed_path(route: str, request: Request) -> str:
    """The path the provider signed: our route (not request.url.path, which a proxy may rewrite) + query."""
    query = request.url.query
    return f"{route}?{query}" if query else route


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _forbidden() -> Response:
    return PlainTextResponse("forbidden: missing or invalid signature\n", status_code=403)


def _xml(body: str) -> Response:
    return Response(content=body, media_type=XML)


def _twilio_say_and_hang_up(text: str) -> str:
    response = VoiceResponse()
    response.say(text)
    response.hangup()
    return str(response)


def _twilio_hang_up() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


def _plivo_hang_up() -> str:
    response = plivoxml.ResponseElement()
    response.add(plivoxml.HangupElement())
    return _plivo_xml(response)


def _plivo_speak_and_hang_up(text: str) -> str:
    response = plivoxml.ResponseElement()
    response.add(plivoxml.SpeakElement(text))
    response.add(plivoxml.HangupElement())
    return _plivo_xml(response)


def _plivo_xml(response: Any) -> str:
    return str(response.to_string(pretty=False))
