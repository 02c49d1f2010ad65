"""The webhook routes over a real socket: uvicorn on 127.0.0.1, PUBLIC_URL an https host with a path prefix.

The app sees `http://127.0.0.1:<port>/twilio/voice` while the providers sign
`https://agent.example.com/voice/twilio/voice`: only the public form may pass.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.clock import FakeClock
from app.edge.signing import (
    PLIVO_NONCE,
    PLIVO_SIGNATURE,
    PLIVO_SIGNATURE_MA,
    TWILIO_SIGNATURE,
    TWILIO_SIGNATURE_SETTINGS,
    sign_plivo,
    sign_twilio,
)
from app.routes.webhooks import webhook_router
from app.settings import Settings
from app.signatures import WebhookAuth
from app.stream_tokens import StreamTokens

from .conftest import LogCapture, ServedApp

PUBLIC = "https://agent.example.com/voice"
TW_TOKEN = "twilio-auth-token-for-tests"
KEY_ID, KEY_SECRET = "webhooks_sharedkey_01TESTKEY", "shared-key-secret-for-tests"
PL_TOKEN = "plivo-auth-token-for-tests"
TTL = 60.0

CALL_SID = "CA" + "0123456789abcdef" * 2
CALL_UUID = "6f1c2d3e-0000-4000-8000-000000000001"
TW_PARAMS = {
    "CallSid": CALL_SID,
    "AccountSid": "AC" + "1" * 32,
    "From": "+15550001111",
    "To": "+15550002222",
    "CallStatus": "ringing",
    "Direction": "inbound",
}
PL_PARAMS = {
    "CallUUID": CALL_UUID,
    "From": "15550001111",
    "To": "15550002222",
    "CallStatus": "ringing",
    "Direction": "inbound",
    "Event": "StartApp",
}


@dataclass
class Stack:
    """One running app: the router under test with its collaborators, reachable at `url`."""

    settings: Settings
    auth: WebhookAuth
    tokens: StreamTokens
    clock: FakeClock
    url: str = ""
    capacity: bool = True
    ended: set[str] = field(default_factory=set)

    def post(self, path: str, data: dict[str, str], headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", data=data, headers=headers or {}, timeout=10)


def build_stack(**overrides: Any) -> tuple[Stack, FastAPI]:
    values: dict[str, Any] = {
        "public_url": PUBLIC,
        "twilio_auth_token": TW_TOKEN,
        "twilio_webhook_keys": f"{KEY_ID}={KEY_SECRET}",
        "plivo_auth_token": PL_TOKEN,
        "stream_token_ttl_s": TTL,
    }
    values.update(overrides)
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    clock = FakeClock(1_700_000_000.0)
    auth = WebhookAuth(settings, clock=clock.now)
    stack = Stack(settings, auth, StreamTokens(b"test-secret", TTL, clock.now), clock)
    app = FastAPI()
    app.include_router(
        webhook_router(
            settings,
            stack.auth,
            stack.tokens,
            lambda: stack.capacity,
            call_ended_cleanly=lambda call_id: call_id in stack.ended,
        )
    )
    return stack, app


@pytest.fixture
def serve() -> Iterator[Callable[..., Stack]]:
    servers: list[ServedApp] = []

    def start(**overrides: Any) -> Stack:
        stack, app = build_stack(**overrides)
        server = ServedApp(app, lifespan="off").__enter__()
        stack.url = server.url
        servers.append(server)
        return stack

    yield start
    for server in servers:
        server.__exit__()


@pytest.fixture
def stack(serve: Callable[..., Stack]) -> Stack:
    """A fresh app per test: each call id gets one stream token, and each Plivo nonce is accepted once."""
    return serve()


def xml_of(response: httpx.Response) -> ET.Element:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    return ET.fromstring(response.content)


def public(path: str) -> str:
    return f"{PUBLIC}{path}"


# --------------------------------------------------------------------------------------------------------
# Twilio
# --------------------------------------------------------------------------------------------------------


def twilio_stream_token(root: ET.Element) -> str:
    params = root.findall("./Connect/Stream/Parameter")
    assert [p.get("name") for p in params] == ["token"]
    token = params[0].get("value")
    assert token is not None
    return token


def test_twilio_voice_signed_over_public_url_gets_a_bidirectional_stream(stack: Stack) -> None:
    headers = sign_twilio(TW_TOKEN, public("/twilio/voice"), TW_PARAMS)
    root = xml_of(stack.post("/twilio/voice", TW_PARAMS, headers))
    assert root.tag == "Response"
    (connect,) = root.findall("Connect")
    assert connect.get("action") == "https://agent.example.com/voice/twilio/after-stream"
    assert connect.get("method") == "POST"
    (stream,) = connect.findall("Stream")
    assert stream.get("url") == "wss://agent.example.com/voice/twilio/stream"
    assert stream.get("statusCallback") == "https://agent.example.com/voice/twilio/stream-status"
    assert stream.get("track") in (None, "inbound_track")  # <Connect> allows only inbound (error 31941)
    token = twilio_stream_token(root)
    assert re.fullmatch(r"[A-Za-z0-9]+", token)
    assert len("token") + len(token) < 500  # <Parameter> name + value limit
    assert stack.tokens.consume("twilio", CALL_SID, token)
    assert not stack.tokens.consume("twilio", CALL_SID, token)


def test_twilio_stream_token_expires_and_is_bound_to_the_call(stack: Stack) -> None:
    headers = sign_twilio(TW_TOKEN, public("/twilio/voice"), TW_PARAMS)
    first = twilio_stream_token(xml_of(stack.post("/twilio/voice", TW_PARAMS, headers)))
    retried = twilio_stream_token(xml_of(stack.post("/twilio/voice", TW_PARAMS, headers)))
    assert retried == first  # a webhook retry before the stream starts gets the same, still single, token
    assert not stack.tokens.consume("twilio", "CA" + "f" * 32, first)
    assert not stack.tokens.consume("plivo", CALL_SID, first)
    stack.clock.advance(TTL)
    assert not stack.tokens.consume("twilio", CALL_SID, first)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="unsigned"),
        pytest.param({TWILIO_SIGNATURE: "bm90IGEgc2lnbmF0dXJlIGF0IGFsbA=="}, id="forged"),
        pytest.param("internal", id="signed-over-internal-url"),
        pytest.param(
            sign_twilio(TW_TOKEN, "http://agent.example.com/voice/twilio/voice", TW_PARAMS), id="http"
        ),
        pytest.param(
            sign_twilio(TW_TOKEN, "https://agent.example.com/twilio/voice", TW_PARAMS), id="no-prefix"
        ),
        pytest.param(sign_twilio("wrong-auth-token", public("/twilio/voice"), TW_PARAMS), id="wrong-token"),
        pytest.param(
            sign_twilio(TW_TOKEN, public("/twilio/voice"), {**TW_PARAMS, "To": "+1"}), id="tampered"
        ),
        pytest.param(sign_twilio(TW_TOKEN, public("/twilio/after-stream"), TW_PARAMS), id="other-route"),
    ],
)
def test_twilio_voice_refusals(stack: Stack, headers: dict[str, str] | str) -> None:
    if headers == "internal":  # what a naive server would validate: the URL it sees itself
        headers = sign_twilio(TW_TOKEN, f"{stack.url}/twilio/voice", TW_PARAMS)
    assert isinstance(headers, dict)
    response = stack.post("/twilio/voice", TW_PARAMS, headers)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/plain")
    assert "<Stream" not in response.text


@pytest.mark.parametrize("algorithm", ["HMAC_SHA256", "HMAC_SHA1"])
def test_twilio_webhook_shared_key_is_accepted(stack: Stack, algorithm: str) -> None:
    headers = sign_twilio(KEY_SECRET, public("/twilio/voice"), TW_PARAMS, key_id=KEY_ID, algorithm=algorithm)
    assert headers[TWILIO_SIGNATURE_SETTINGS] == f"key={KEY_ID},algorithm={algorithm}"
    root = xml_of(stack.post("/twilio/voice", TW_PARAMS, headers))
    assert stack.tokens.consume("twilio", CALL_SID, twilio_stream_token(root))


def test_twilio_webhook_shared_key_forgeries_are_refused(stack: Stack) -> None:
    url = public("/twilio/voice")
    good = sign_twilio(KEY_SECRET, url, TW_PARAMS, key_id=KEY_ID, algorithm="HMAC_SHA256")
    forged = sign_twilio("not-the-key", url, TW_PARAMS, key_id=KEY_ID, algorithm="HMAC_SHA256")
    unknown = {**good, TWILIO_SIGNATURE_SETTINGS: "key=webhooks_sharedkey_NOPE,algorithm=HMAC_SHA256"}
    internal = sign_twilio(KEY_SECRET, f"{stack.url}/twilio/voice", TW_PARAMS, key_id=KEY_ID)
    for headers in (forged, unknown, internal):
        assert stack.post("/twilio/voice", TW_PARAMS, headers).status_code == 403


def test_twilio_full_server_refuses_the_call_politely(stack: Stack) -> None:
    stack.capacity = False
    root = xml_of(
        stack.post("/twilio/voice", TW_PARAMS, sign_twilio(TW_TOKEN, public("/twilio/voice"), TW_PARAMS))
    )
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert "busy" in (root.findtext("Say") or "")
    assert root.find(".//Stream") is None
    assert stack.post("/twilio/voice", TW_PARAMS, {}).status_code == 403  # unsigned stays unsigned


def test_twilio_after_stream_apologises_unless_the_agent_ended_the_call(stack: Stack) -> None:
    params = {**TW_PARAMS, "CallStatus": "in-progress"}
    headers = sign_twilio(TW_TOKEN, public("/twilio/after-stream"), params)
    root = xml_of(stack.post("/twilio/after-stream", params, headers))
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert "Sorry" in (root.findtext("Say") or "")
    stack.ended.add(CALL_SID)
    assert [child.tag for child in xml_of(stack.post("/twilio/after-stream", params, headers))] == ["Hangup"]
    assert stack.post("/twilio/after-stream", params, {}).status_code == 403


def test_twilio_stream_status_is_signed_too(stack: Stack) -> None:
    params = {"CallSid": CALL_SID, "StreamSid": "MZ" + "2" * 32, "StreamEvent": "stream-started"}
    headers = sign_twilio(TW_TOKEN, public("/twilio/stream-status"), params)
    assert stack.post("/twilio/stream-status", params, headers).status_code == 204
    assert stack.post("/twilio/stream-status", params, {}).status_code == 403


def test_twilio_webhook_query_string_is_signed(stack: Stack) -> None:
    url = f"{stack.url}/twilio/voice?tenant=acme"
    signed = sign_twilio(TW_TOKEN, public("/twilio/voice?tenant=acme"), TW_PARAMS)
    assert httpx.post(url, data=TW_PARAMS, headers=signed, timeout=10).status_code == 200
    without_query = sign_twilio(TW_TOKEN, public("/twilio/voice"), TW_PARAMS)
    assert httpx.post(url, data=TW_PARAMS, headers=without_query, timeout=10).status_code == 403


def test_twilio_signed_request_without_call_sid_is_a_bad_request(stack: Stack) -> None:
    params = {"AccountSid": "AC" + "1" * 32}
    headers = sign_twilio(TW_TOKEN, public("/twilio/voice"), params)
    assert stack.post("/twilio/voice", params, headers).status_code == 400


# --------------------------------------------------------------------------------------------------------
# Plivo
# --------------------------------------------------------------------------------------------------------


def plivo_stream(root: ET.Element) -> ET.Element:
    (stream,) = root.findall("Stream")
    return stream


def plivo_stream_token(root: ET.Element) -> str:
    extra = plivo_stream(root).get("extraHeaders") or ""
    name, _, token = extra.partition("=")
    assert name == "token"
    return token


def test_plivo_answer_signed_over_public_url_gets_a_bidirectional_stream(stack: Stack) -> None:
    headers = sign_plivo(PL_TOKEN, "POST", public("/plivo/answer"), PL_PARAMS)
    root = xml_of(stack.post("/plivo/answer", PL_PARAMS, headers))
    assert [child.tag for child in root] == ["Stream", "Redirect"]
    stream = plivo_stream(root)
    assert stream.text == "wss://agent.example.com/voice/plivo/stream"
    assert stream.get("bidirectional") == "true"
    assert stream.get("keepCallAlive") == "true"
    assert stream.get("contentType") == "audio/x-mulaw;rate=8000"
    assert stream.get("audioTrack") == "inbound"
    assert stream.get("statusCallbackUrl") == "https://agent.example.com/voice/plivo/stream-status"
    extra = stream.get("extraHeaders") or ""
    assert len(extra.encode()) <= 512
    assert re.fullmatch(r"[A-Za-z0-9]+=[A-Za-z0-9]+", extra)
    redirect = root.find("Redirect")
    assert redirect is not None and redirect.text == "https://agent.example.com/voice/plivo/after-stream"
    assert redirect.get("method") == "POST"
    token = plivo_stream_token(root)
    assert stack.tokens.consume("plivo", CALL_UUID, token)
    assert not stack.tokens.consume("plivo", CALL_UUID, token)


def test_plivo_answer_accepts_the_main_account_header(stack: Stack) -> None:
    headers = sign_plivo(PL_TOKEN, "POST", public("/plivo/answer"), PL_PARAMS, header=PLIVO_SIGNATURE_MA)
    assert PLIVO_SIGNATURE not in headers
    root = xml_of(stack.post("/plivo/answer", PL_PARAMS, headers))
    assert stack.tokens.consume("plivo", CALL_UUID, plivo_stream_token(root))


def test_plivo_stream_token_expires_and_is_bound_to_the_call(stack: Stack) -> None:
    headers = sign_plivo(PL_TOKEN, "POST", public("/plivo/answer"), PL_PARAMS)
    token = plivo_stream_token(xml_of(stack.post("/plivo/answer", PL_PARAMS, headers)))
    assert not stack.tokens.consume("plivo", "6f1c2d3e-0000-4000-8000-000000000002", token)
    assert not stack.tokens.consume("plivo", CALL_SID, token)
    assert not stack.tokens.consume("twilio", CALL_UUID, token)  # bound to its provider too
    stack.clock.advance(TTL + 1)
    assert not stack.tokens.consume("plivo", CALL_UUID, token)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="unsigned"),
        pytest.param(
            {PLIVO_SIGNATURE: "Zm9yZ2VkLXNpZ25hdHVyZQ==", PLIVO_NONCE: "12345678901234567890"}, id="forged"
        ),
        pytest.param({PLIVO_SIGNATURE: "Zm9yZ2VkLXNpZ25hdHVyZQ=="}, id="no-nonce-sdk-raises"),
        pytest.param("internal", id="signed-over-internal-url"),
        pytest.param(
            sign_plivo(PL_TOKEN, "POST", "http://agent.example.com/voice/plivo/answer", PL_PARAMS), id="http"
        ),
        pytest.param(
            sign_plivo(PL_TOKEN, "POST", "https://agent.example.com/plivo/answer", PL_PARAMS), id="no-prefix"
        ),
        pytest.param(
            sign_plivo("wrong-auth-token", "POST", public("/plivo/answer"), PL_PARAMS), id="wrong-token"
        ),
        pytest.param(
            sign_plivo(PL_TOKEN, "POST", public("/plivo/answer"), {**PL_PARAMS, "To": "1"}), id="tampered"
        ),
        pytest.param(sign_plivo(PL_TOKEN, "GET", public("/plivo/answer"), PL_PARAMS), id="signed-as-get"),
    ],
)
def test_plivo_answer_refusals(stack: Stack, headers: dict[str, str] | str) -> None:
    if headers == "internal":
        headers = sign_plivo(PL_TOKEN, "POST", f"{stack.url}/plivo/answer", PL_PARAMS)
    assert isinstance(headers, dict)
    response = stack.post("/plivo/answer", PL_PARAMS, headers)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/plain")
    assert "<Stream" not in response.text


def test_plivo_full_server_refuses_the_call_politely(stack: Stack) -> None:
    stack.capacity = False
    headers = sign_plivo(PL_TOKEN, "POST", public("/plivo/answer"), PL_PARAMS)
    root = xml_of(stack.post("/plivo/answer", PL_PARAMS, headers))
    assert [child.tag for child in root] == ["Speak", "Hangup"]
    assert "busy" in (root.findtext("Speak") or "")
    assert stack.post("/plivo/answer", PL_PARAMS, {}).status_code == 403


def test_plivo_after_stream_apologises_unless_the_agent_ended_the_call(stack: Stack) -> None:
    params = {**PL_PARAMS, "CallStatus": "in-progress", "Event": "Redirect"}

    def signed() -> dict[str, str]:  # Plivo signs every request with a fresh nonce; a reused one is a replay
        return sign_plivo(PL_TOKEN, "POST", public("/plivo/after-stream"), params)

    root = xml_of(stack.post("/plivo/after-stream", params, signed()))
    assert [child.tag for child in root] == ["Speak", "Hangup"]
    assert "Sorry" in (root.findtext("Speak") or "")
    stack.ended.add(CALL_UUID)
    assert [child.tag for child in xml_of(stack.post("/plivo/after-stream", params, signed()))] == ["Hangup"]
    assert stack.post("/plivo/after-stream", params, {}).status_code == 403


def test_plivo_stream_status_is_signed_too(stack: Stack) -> None:
    params = {"CallUUID": CALL_UUID, "StreamID": "9f0e", "Event": "StartStream"}
    headers = sign_plivo(PL_TOKEN, "POST", public("/plivo/stream-status"), params)
    assert stack.post("/plivo/stream-status", params, headers).status_code == 204
    assert stack.post("/plivo/stream-status", params, {}).status_code == 403


# --------------------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------------------


def test_insecure_dev_mode_answers_unsigned_webhooks_and_still_issues_tokens(
    serve: Callable[..., Stack],
) -> None:
    dev = serve(twilio_auth_token="", twilio_webhook_keys="", plivo_auth_token="")
    assert dev.auth.insecure
    twiml = xml_of(dev.post("/twilio/voice", TW_PARAMS))
    assert dev.tokens.consume("twilio", CALL_SID, twilio_stream_token(twiml))
    plivo = xml_of(dev.post("/plivo/answer", PL_PARAMS))
    assert dev.tokens.consume("plivo", CALL_UUID, plivo_stream_token(plivo))


def test_provider_without_credentials_is_refused_when_the_other_is_secured(
    serve: Callable[..., Stack],
) -> None:
    plivo_only = serve(twilio_auth_token="", twilio_webhook_keys="")
    assert plivo_only.post("/twilio/voice", TW_PARAMS).status_code == 403
    signed = sign_plivo(PL_TOKEN, "POST", public("/plivo/answer"), PL_PARAMS)
    assert plivo_only.post("/plivo/answer", PL_PARAMS, signed).status_code == 200


# --------------------------------------------------------------------------------------------------------
# Replays: one stream token per call
# --------------------------------------------------------------------------------------------------------


def test_twilio_replayed_answer_webhook_gets_a_hang_up_and_no_second_token(stack: Stack) -> None:
    headers = sign_twilio(TW_TOKEN, public("/twilio/voice"), TW_PARAMS)
    token = twilio_stream_token(xml_of(stack.post("/twilio/voice", TW_PARAMS, headers)))
    assert stack.tokens.consume("twilio", CALL_SID, token)  # the stream started
    # The same signed request again: Twilio signatures carry no nonce or time, so the signature still checks out.
    replay = xml_of(stack.post("/twilio/voice", TW_PARAMS, headers))
    assert [child.tag for child in replay] == ["Hangup"]
    assert replay.find(".//Stream") is None and replay.find(".//Parameter") is None


def test_twilio_answer_webhook_after_the_token_expired_unused_gets_a_hang_up(stack: Stack) -> None:
    headers = sign_twilio(TW_TOKEN, public("/twilio/voice"), TW_PARAMS)
    twilio_stream_token(xml_of(stack.post("/twilio/voice", TW_PARAMS, headers)))
    stack.clock.advance(TTL)
    assert [child.tag for child in xml_of(stack.post("/twilio/voice", TW_PARAMS, headers))] == ["Hangup"]


def test_plivo_replayed_answer_webhook_is_refused_and_a_late_retry_gets_no_token(stack: Stack) -> None:
    headers = sign_plivo(PL_TOKEN, "POST", public("/plivo/answer"), PL_PARAMS)
    token = plivo_stream_token(xml_of(stack.post("/plivo/answer", PL_PARAMS, headers)))
    # The very same request (same signature, same nonce): refused outright.
    replay = stack.post("/plivo/answer", PL_PARAMS, headers)
    assert replay.status_code == 403 and "<Stream" not in replay.text
    padded = {**headers, PLIVO_SIGNATURE: "Zm9yZ2Vk," + headers[PLIVO_SIGNATURE]}  # junk around the same signature
    assert stack.post("/plivo/answer", PL_PARAMS, padded).status_code == 403
    # Plivo retrying with a fresh nonce before the stream started: the same token again.
    retry = sign_plivo(PL_TOKEN, "POST", public("/plivo/answer"), PL_PARAMS)
    assert plivo_stream_token(xml_of(stack.post("/plivo/answer", PL_PARAMS, retry))) == token
    assert stack.tokens.consume("plivo", CALL_UUID, token)
    # After the stream started, even a freshly signed request gets no token, only a hang-up.
    late = sign_plivo(PL_TOKEN, "POST", public("/plivo/answer"), PL_PARAMS)
    root = xml_of(stack.post("/plivo/answer", PL_PARAMS, late))
    assert [child.tag for child in root] == ["Hangup"]


def test_each_provider_gets_its_own_token_for_the_same_call_id(stack: Stack) -> None:
    # Call ids are the providers' own; the same string on both is two calls, and neither token opens the other.
    twilio = twilio_stream_token(
        xml_of(stack.post("/twilio/voice", TW_PARAMS, sign_twilio(TW_TOKEN, public("/twilio/voice"), TW_PARAMS)))
    )
    params = {**PL_PARAMS, "CallUUID": CALL_SID}
    plivo = plivo_stream_token(
        xml_of(stack.post("/plivo/answer", params, sign_plivo(PL_TOKEN, "POST", public("/plivo/answer"), params)))
    )
    assert twilio != plivo
    assert not stack.tokens.consume("plivo", CALL_SID, twilio)
    assert not stack.tokens.consume("twilio", CALL_SID, plivo)
    assert stack.tokens.consume("twilio", CALL_SID, twilio)
    assert stack.tokens.consume("plivo", CALL_SID, plivo)


# --------------------------------------------------------------------------------------------------------
# PUBLIC_URL unset: the XML points at the host the webhook was called on (app/public_url.py)
# --------------------------------------------------------------------------------------------------------

PROXIED = {"Host": "agent.example.com", "X-Forwarded-Proto": "https"}


def _derived_warnings(capture: LogCapture) -> list[str]:
    messages = [r.getMessage() for r in capture.records if r.levelno == logging.WARNING]
    return [m for m in messages if "PUBLIC_URL is unset" in m]


@pytest.fixture
def webhook_log() -> Iterator[LogCapture]:
    capture = LogCapture()
    logger = logging.getLogger("app.routes.webhooks")
    logger.addHandler(capture)
    yield capture
    logger.removeHandler(capture)


def test_unset_public_url_points_both_providers_at_the_host_called(
    server_factory: Any, webhook_log: LogCapture
) -> None:
    server = server_factory(public_url="")  # the real app, insecure mode
    twilio = xml_of(httpx.post(f"{server.url}/twilio/voice", data=TW_PARAMS, headers=PROXIED, timeout=10))
    connect = twilio.find("./Connect")
    stream = twilio.find("./Connect/Stream")
    assert connect is not None and stream is not None
    assert stream.get("url") == "wss://agent.example.com/twilio/stream"
    assert stream.get("statusCallback") == "https://agent.example.com/twilio/stream-status"
    assert connect.get("action") == "https://agent.example.com/twilio/after-stream"

    plivo = xml_of(httpx.post(f"{server.url}/plivo/answer", data=PL_PARAMS, headers=PROXIED, timeout=10))
    element = plivo_stream(plivo)
    assert (element.text or "").strip() == "wss://agent.example.com/plivo/stream"
    assert element.get("statusCallbackUrl") == "https://agent.example.com/plivo/stream-status"
    redirect = plivo.find("./Redirect")
    assert redirect is not None and (redirect.text or "").strip() == "https://agent.example.com/plivo/after-stream"

    # one warning for the one derived base, though two webhooks used it
    [warning] = _derived_warnings(webhook_log)
    assert "https://agent.example.com" in warning


def test_unset_public_url_warns_once_per_distinct_derived_base(server_factory: Any, webhook_log: LogCapture) -> None:
    server = server_factory(public_url="")
    for host in ("a.example", "a.example", "b.example:8080", "a.example"):
        root = xml_of(httpx.post(f"{server.url}/twilio/voice", data=TW_PARAMS, headers={"Host": host}, timeout=10))
        stream = root.find("./Connect/Stream")
        assert stream is not None and stream.get("url") == f"ws://{host}/twilio/stream"
    warnings = _derived_warnings(webhook_log)
    assert len(warnings) == 2
    assert "http://a.example" in warnings[0] and "http://b.example:8080" in warnings[1]


def test_unset_public_url_ignores_a_malformed_forwarded_host(server_factory: Any) -> None:
    server = server_factory(public_url="")
    headers = {"Host": "agent.example.com", "X-Forwarded-Host": "evil.example/x@y", "X-Forwarded-Proto": "https"}
    root = xml_of(httpx.post(f"{server.url}/twilio/voice", data=TW_PARAMS, headers=headers, timeout=10))
    stream = root.find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://agent.example.com/twilio/stream"


def test_with_auth_on_the_xml_uses_public_url_never_the_headers(stack: Stack) -> None:
    forged = {"X-Forwarded-Host": "evil.example", "Forwarded": "host=evil.example;proto=https"}
    headers = sign_twilio(TW_TOKEN, public("/twilio/voice"), TW_PARAMS) | forged
    stream = xml_of(stack.post("/twilio/voice", TW_PARAMS, headers)).find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://agent.example.com/voice/twilio/stream"
    headers = sign_plivo(PL_TOKEN, "POST", public("/plivo/answer"), PL_PARAMS) | forged
    element = plivo_stream(xml_of(stack.post("/plivo/answer", PL_PARAMS, headers)))
    assert (element.text or "").strip() == "wss://agent.example.com/voice/plivo/stream"
