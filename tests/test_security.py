"""StreamTokens and WebhookAuth in process: tokens on a fake clock, signatures made with the SDKs."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from twilio import request_validator as twilio_rv

from app.clock import FakeClock
from app.edge.signing import (
    PLIVO_NONCE,
    PLIVO_SIGNATURE,
    PLIVO_SIGNATURE_MA,
    TWILIO_SIGNATURE,
    TWILIO_SIGNATURE_SETTINGS,
    sign_plivo,
    sign_twilio,
    sign_twilio_upgrade,
)
from app.main import create_app
from app.routes.embedded_llm import PREFIX as EMBEDDED_LLM_PREFIX
from app.routes.embedded_llm import embedded_llm_router
from app.settings import Settings
from app.signatures import ReplayGuard, WebhookAuth, parse_webhook_keys
from app.stream_tokens import MAX_CALL_S, TOKEN_LENGTH, StreamTokens, TokenRefused, replay_window_s

PUBLIC = "https://agent.example.com/voice"
TW_TOKEN = "twilio-auth-token-for-tests"
KEY_ID, KEY_SECRET = "webhooks_sharedkey_01TESTKEY", "shared-key-secret-for-tests"
PL_TOKEN = "plivo-auth-token-for-tests"
CALL = "CA" + "0123456789abcdef" * 2

TWILIO_WSS = "wss://agent.example.com/voice/twilio/stream"
PLIVO_FORMS = [
    "https://agent.example.com/voice/plivo/stream",
    "http://agent.example.com/voice/plivo/stream",
    "http://agent.example.com/voice/plivo/stream/websocket",
    "https://agent.example.com/voice/plivo/stream/websocket",
]


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "public_url": PUBLIC,
        "twilio_auth_token": TW_TOKEN,
        "twilio_webhook_keys": f"{KEY_ID}={KEY_SECRET}",
        "plivo_auth_token": PL_TOKEN,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def auth() -> WebhookAuth:
    return WebhookAuth(make_settings())


# --------------------------------------------------------------------------------------------------------
# StreamTokens
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def tokens(clock: FakeClock) -> StreamTokens:
    return StreamTokens(b"k" * 32, 60.0, clock.now)


def test_token_is_alphanumeric_and_fits_plivo_extra_headers(tokens: StreamTokens) -> None:
    token = tokens.issue("twilio", CALL)
    assert re.fullmatch(r"[A-Za-z0-9]+", token)
    assert len(token) == TOKEN_LENGTH
    assert len(f"token={token}".encode()) <= 512
    assert tokens.issue("twilio", "CA" + "f" * 32) != token  # a fresh nonce for every call


def test_token_consumes_once_and_only_once(tokens: StreamTokens) -> None:
    token = tokens.issue("twilio", CALL)
    assert tokens.consume("twilio", CALL, token)
    assert not tokens.consume("twilio", CALL, token)
    assert not tokens.consume("twilio", CALL, token)


def test_token_is_bound_to_its_call(tokens: StreamTokens) -> None:
    token = tokens.issue("twilio", CALL)
    assert not tokens.consume("twilio", "CA" + "f" * 32, token)
    assert not tokens.consume("twilio", "", token)
    assert tokens.consume("twilio", CALL, token)  # a failed attempt for another call does not burn it


def test_token_expires_after_ttl(tokens: StreamTokens, clock: FakeClock) -> None:
    early = tokens.issue("twilio", CALL)
    late = tokens.issue("plivo", CALL)
    clock.advance(59.9)
    assert tokens.consume("twilio", CALL, early)
    clock.advance(0.1)
    assert not tokens.consume("plivo", CALL, late)


def test_tampered_tokens_are_refused(tokens: StreamTokens) -> None:
    token = tokens.issue("twilio", CALL)
    later_expiry = f"{int(token[:12], 16) + 3_600_000:012x}" + token[12:]
    flipped_mac = token[:-1] + ("0" if token[-1] != "0" else "1")
    for forged in (later_expiry, flipped_mac, token.upper(), token[:-1], token + "0", "", "token", "é" * 60):
        assert not tokens.consume("twilio", CALL, forged), forged
    assert tokens.consume("twilio", CALL, token)


def test_replica_with_same_secret_verifies_and_other_secret_does_not(clock: FakeClock) -> None:
    issuer = StreamTokens(b"shared-secret", 60.0, clock.now)
    replica = StreamTokens(b"shared-secret", 60.0, clock.now)
    stranger = StreamTokens(b"other-secret", 60.0, clock.now)
    token = issuer.issue("twilio", CALL)
    assert not stranger.consume("twilio", CALL, token)
    assert replica.consume("twilio", CALL, token)


def test_random_secret_per_process_when_setting_is_empty(clock: FakeClock) -> None:
    settings = make_settings(stream_token_secret="")
    one, two = (
        StreamTokens.from_settings(settings, clock.now),
        StreamTokens.from_settings(settings, clock.now),
    )
    assert not two.consume("twilio", CALL, one.issue("twilio", CALL))
    configured = make_settings(stream_token_secret="s3cret")
    a, b = (
        StreamTokens.from_settings(configured, clock.now),
        StreamTokens.from_settings(configured, clock.now),
    )
    assert b.consume("twilio", CALL, a.issue("twilio", CALL))


def test_calls_are_forgotten_once_the_replay_window_has_passed(clock: FakeClock) -> None:
    tokens = StreamTokens(b"k" * 32, 60.0, clock.now, remember_s=3600.0)
    for i in range(50):
        assert tokens.consume("twilio", f"CA{i}", tokens.issue("twilio", f"CA{i}"))
    assert tokens.remembered == 50
    clock.advance(61)
    assert tokens.remembered == 50  # an expired token's call is still remembered: no second token for it
    with pytest.raises(TokenRefused):
        tokens.issue("twilio", "CA0")
    clock.advance(3600)
    assert tokens.consume("twilio", "CAnew", tokens.issue("twilio", "CAnew"))
    assert tokens.remembered == 1


def test_full_store_refuses_rather_than_forgetting_live_calls(clock: FakeClock) -> None:
    small = StreamTokens(b"k", 60.0, clock.now, remember_s=600.0, max_calls=3)
    for i in range(3):
        assert small.consume("twilio", f"CA{i}", small.issue("twilio", f"CA{i}"))
    with pytest.raises(TokenRefused) as refused:
        small.issue("twilio", "CAx")
    assert refused.value.reason == "full"
    replica_token = StreamTokens(b"k", 60.0, clock.now).issue("twilio", "CAy")
    assert not small.consume("twilio", "CAy", replica_token)  # cannot remember it, so it is not used
    clock.advance(661)
    assert small.consume("twilio", "CAz", small.issue("twilio", "CAz"))


def test_tokens_reject_bad_construction() -> None:
    with pytest.raises(ValueError):
        StreamTokens(b"", 60.0, lambda: 0.0)
    with pytest.raises(ValueError):
        StreamTokens(b"k", 0, lambda: 0.0)


# --------------------------------------------------------------------------------------------------------
# Twilio
# --------------------------------------------------------------------------------------------------------

PARAMS = {"CallSid": CALL, "AccountSid": "AC" + "1" * 32, "From": "+15550001111", "CallStatus": "ringing"}
VOICE_URL = f"{PUBLIC}/twilio/voice"


def test_twilio_webhook_signed_over_public_url_passes(auth: WebhookAuth) -> None:
    assert auth.twilio_enabled and auth.plivo_enabled and not auth.insecure
    assert auth.check_twilio("/twilio/voice", PARAMS, sign_twilio(TW_TOKEN, VOICE_URL, PARAMS))


def test_twilio_webhook_query_string_is_part_of_the_signed_url(auth: WebhookAuth) -> None:
    headers = sign_twilio(TW_TOKEN, f"{VOICE_URL}?tenant=acme", PARAMS)
    assert auth.check_twilio("/twilio/voice?tenant=acme", PARAMS, headers)
    assert not auth.check_twilio("/twilio/voice", PARAMS, headers)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="unsigned"),
        pytest.param({TWILIO_SIGNATURE: "bm90IGEgc2lnbmF0dXJl"}, id="forged"),
        pytest.param(sign_twilio(TW_TOKEN, "http://127.0.0.1:8080/twilio/voice", PARAMS), id="internal-url"),
        pytest.param(sign_twilio(TW_TOKEN, "http://agent.example.com/voice/twilio/voice", PARAMS), id="http"),
        pytest.param(sign_twilio(TW_TOKEN, "https://agent.example.com/twilio/voice", PARAMS), id="no-prefix"),
        pytest.param(sign_twilio("wrong-token", VOICE_URL, PARAMS), id="wrong-token"),
        pytest.param(sign_twilio(TW_TOKEN, VOICE_URL, {**PARAMS, "From": "+15559999999"}), id="tampered"),
    ],
)
def test_twilio_webhook_refusals(auth: WebhookAuth, headers: dict[str, str]) -> None:
    assert not auth.check_twilio("/twilio/voice", PARAMS, headers)


def test_twilio_multivalued_form_fields(auth: WebhookAuth) -> None:
    class Multi(dict[str, str]):
        def getlist(self, key: str) -> list[str]:
            return ["b", "a"] if key == "Repeated" else [self[key]]

    form = Multi(PARAMS, Repeated="a")
    headers = sign_twilio(TW_TOKEN, VOICE_URL, form)  # the SDK reads every value through getlist
    assert auth.check_twilio("/twilio/voice", form, headers)
    assert auth.check_twilio("/twilio/voice", {**PARAMS, "Repeated": ["a", "b"]}, headers)
    assert not auth.check_twilio("/twilio/voice", {**PARAMS, "Repeated": "a"}, headers)


@pytest.mark.parametrize("algorithm", ["HMAC_SHA256", "HMAC_SHA1", "HMAC-SHA256"])
def test_twilio_webhook_shared_key_passes(auth: WebhookAuth, algorithm: str) -> None:
    headers = sign_twilio(KEY_SECRET, VOICE_URL, PARAMS, key_id=KEY_ID, algorithm=algorithm.replace("-", "_"))
    headers[TWILIO_SIGNATURE_SETTINGS] = f"key={KEY_ID},algorithm={algorithm}"
    assert auth.check_twilio("/twilio/voice", PARAMS, headers)


def test_twilio_webhook_shared_key_refusals(auth: WebhookAuth) -> None:
    good = sign_twilio(KEY_SECRET, VOICE_URL, PARAMS, key_id=KEY_ID, algorithm="HMAC_SHA256")
    forged = {
        **good,
        TWILIO_SIGNATURE: sign_twilio("guess", VOICE_URL, PARAMS, algorithm="HMAC_SHA256")[TWILIO_SIGNATURE],
    }
    unknown_key = {**good, TWILIO_SIGNATURE_SETTINGS: "key=webhooks_sharedkey_OTHER,algorithm=HMAC_SHA256"}
    wrong_algorithm = {**good, TWILIO_SIGNATURE_SETTINGS: f"key={KEY_ID},algorithm=HMAC_SHA1"}
    unsupported = {**good, TWILIO_SIGNATURE_SETTINGS: f"key={KEY_ID},algorithm=HMAC_MD5"}
    auth_token_instead = sign_twilio(TW_TOKEN, VOICE_URL, PARAMS, algorithm="HMAC_SHA256")
    auth_token_instead[TWILIO_SIGNATURE_SETTINGS] = f"key={KEY_ID},algorithm=HMAC_SHA256"
    for headers in (forged, unknown_key, wrong_algorithm, unsupported, auth_token_instead):
        assert not auth.check_twilio("/twilio/voice", PARAMS, headers)


def test_twilio_shared_key_only_account_refuses_auth_token_signatures() -> None:
    keys_only = WebhookAuth(make_settings(twilio_auth_token=""))
    assert keys_only.twilio_enabled
    assert not keys_only.check_twilio("/twilio/voice", PARAMS, sign_twilio("", VOICE_URL, PARAMS))
    signed = sign_twilio(KEY_SECRET, VOICE_URL, PARAMS, key_id=KEY_ID)
    assert keys_only.check_twilio("/twilio/voice", PARAMS, signed)


def test_twilio_upgrade_signed_over_public_wss_url_passes(auth: WebhookAuth) -> None:
    assert auth.check_twilio_upgrade("/twilio/stream", sign_twilio_upgrade(TW_TOKEN, TWILIO_WSS))
    shared = sign_twilio_upgrade(KEY_SECRET, TWILIO_WSS, key_id=KEY_ID, algorithm="HMAC_SHA256")
    assert auth.check_twilio_upgrade("/twilio/stream", shared)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="unsigned"),
        pytest.param({TWILIO_SIGNATURE: "Zm9yZ2Vk"}, id="forged"),
        pytest.param(sign_twilio_upgrade(TW_TOKEN, "ws://127.0.0.1:8080/twilio/stream"), id="internal-ws"),
        pytest.param(
            sign_twilio_upgrade(TW_TOKEN, "https://agent.example.com/voice/twilio/stream"), id="https"
        ),
        pytest.param(sign_twilio_upgrade(TW_TOKEN, "wss://agent.example.com/twilio/stream"), id="no-prefix"),
        pytest.param(sign_twilio_upgrade("wrong-token", TWILIO_WSS), id="wrong-token"),
        pytest.param(sign_twilio(TW_TOKEN, TWILIO_WSS, {"x": "y"}), id="with-params"),
    ],
)
def test_twilio_upgrade_refusals(auth: WebhookAuth, headers: dict[str, str]) -> None:
    assert not auth.check_twilio_upgrade("/twilio/stream", headers)


def test_twilio_sdk_exception_is_a_refusal(auth: WebhookAuth, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> bool:
        raise TypeError("twilio-python #885")

    headers = sign_twilio(TW_TOKEN, VOICE_URL, PARAMS)
    monkeypatch.setattr(twilio_rv.RequestValidator, "validate", explode)
    assert not auth.check_twilio("/twilio/voice", PARAMS, headers)
    assert not auth.check_twilio_upgrade("/twilio/stream", sign_twilio_upgrade(TW_TOKEN, TWILIO_WSS))


def test_headers_are_matched_case_insensitively(auth: WebhookAuth) -> None:
    headers = {k.lower(): v for k, v in sign_twilio(TW_TOKEN, VOICE_URL, PARAMS).items()}
    assert auth.check_twilio("/twilio/voice", PARAMS, headers)


# --------------------------------------------------------------------------------------------------------
# Plivo
# --------------------------------------------------------------------------------------------------------

PL_PARAMS = {
    "CallUUID": "6f1c2d3e-0000-4000-8000-000000000001",
    "From": "15550001111",
    "Direction": "inbound",
}
ANSWER_URL = f"{PUBLIC}/plivo/answer"


def test_plivo_webhook_v3_signed_over_public_url_passes(auth: WebhookAuth) -> None:
    assert auth.check_plivo(
        "POST", "/plivo/answer", PL_PARAMS, sign_plivo(PL_TOKEN, "POST", ANSWER_URL, PL_PARAMS)
    )
    ma = sign_plivo(PL_TOKEN, "POST", ANSWER_URL, PL_PARAMS, header=PLIVO_SIGNATURE_MA)
    assert auth.check_plivo("POST", "/plivo/answer", PL_PARAMS, ma)
    with_query = sign_plivo(PL_TOKEN, "POST", f"{ANSWER_URL}?tenant=acme", PL_PARAMS)
    assert auth.check_plivo("POST", "/plivo/answer?tenant=acme", PL_PARAMS, with_query)


def test_plivo_header_may_hold_several_signatures(auth: WebhookAuth) -> None:
    headers = sign_plivo(PL_TOKEN, "POST", ANSWER_URL, PL_PARAMS)
    headers[PLIVO_SIGNATURE] = "b2xkLXNpZ25hdHVyZQ==," + headers[PLIVO_SIGNATURE]
    assert auth.check_plivo("POST", "/plivo/answer", PL_PARAMS, headers)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="unsigned"),
        pytest.param({PLIVO_SIGNATURE: "Zm9yZ2Vk", PLIVO_NONCE: "12345"}, id="forged"),
        pytest.param({PLIVO_SIGNATURE: "Zm9yZ2Vk"}, id="no-nonce-sdk-raises"),
        pytest.param(
            sign_plivo(PL_TOKEN, "POST", "http://127.0.0.1:8080/plivo/answer", PL_PARAMS), id="internal"
        ),
        pytest.param(
            sign_plivo(PL_TOKEN, "POST", "https://agent.example.com/plivo/answer", PL_PARAMS), id="prefix"
        ),
        pytest.param(sign_plivo("wrong-token", "POST", ANSWER_URL, PL_PARAMS), id="wrong-token"),
        pytest.param(sign_plivo(PL_TOKEN, "GET", ANSWER_URL, PL_PARAMS), id="as-get"),
        pytest.param(sign_plivo(PL_TOKEN, "POST", ANSWER_URL, {**PL_PARAMS, "From": "1555"}), id="tampered"),
    ],
)
def test_plivo_webhook_refusals(auth: WebhookAuth, headers: dict[str, str]) -> None:
    assert not auth.check_plivo("POST", "/plivo/answer", PL_PARAMS, headers)


def test_plivo_nonce_swap_is_refused(auth: WebhookAuth) -> None:
    headers = sign_plivo(PL_TOKEN, "POST", ANSWER_URL, PL_PARAMS)
    headers[PLIVO_NONCE] = headers[PLIVO_NONCE][::-1] + "1"
    assert not auth.check_plivo("POST", "/plivo/answer", PL_PARAMS, headers)


def test_plivo_upgrade_tries_the_documented_url_forms(auth: WebhookAuth) -> None:
    assert auth.plivo_upgrade_candidates("/plivo/stream") == PLIVO_FORMS
    for form in PLIVO_FORMS:
        assert auth.check_plivo_upgrade("/plivo/stream", sign_plivo(PL_TOKEN, "GET", form)) == (
            True,
            PLIVO_FORMS,
        )


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="unsigned"),
        pytest.param({PLIVO_SIGNATURE: "Zm9yZ2Vk"}, id="no-nonce"),
        pytest.param({PLIVO_SIGNATURE: "Zm9yZ2Vk", PLIVO_NONCE: "1"}, id="forged"),
        pytest.param(sign_plivo(PL_TOKEN, "GET", "http://127.0.0.1:8080/plivo/stream"), id="internal"),
        pytest.param(sign_plivo(PL_TOKEN, "GET", "http://agent.example.com/plivo/stream"), id="no-prefix"),
        pytest.param(sign_plivo("wrong-token", "GET", PLIVO_FORMS[0]), id="wrong-token"),
        pytest.param(sign_plivo(PL_TOKEN, "GET", PLIVO_FORMS[0], {"a": "b"}), id="other-params"),
    ],
)
def test_plivo_upgrade_mismatch_reports_forms(auth: WebhookAuth, headers: dict[str, str]) -> None:
    assert auth.check_plivo_upgrade("/plivo/stream", headers) == (False, PLIVO_FORMS)


def test_plivo_upgrade_policy_logs_by_default_and_refuses_when_enforced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    forged = {PLIVO_SIGNATURE: "Zm9yZ2VkLXNpZw==", PLIVO_NONCE: "98765"}
    lenient = WebhookAuth(make_settings())
    strict = WebhookAuth(make_settings(plivo_enforce_upgrade_signature=True))
    with caplog.at_level(logging.WARNING, logger="app.signatures"):
        assert lenient.plivo_upgrade_allowed("/plivo/stream", forged)
    assert all(form in caplog.text for form in PLIVO_FORMS)
    assert "Zm9yZ2VkLXNpZw==" not in caplog.text and "98765" not in caplog.text
    assert not strict.plivo_upgrade_allowed("/plivo/stream", forged)
    good = sign_plivo(PL_TOKEN, "GET", PLIVO_FORMS[1])
    assert strict.plivo_upgrade_allowed("/plivo/stream", good)


def test_plivo_sdk_refuses_wss_urls_so_the_upgrade_is_never_checked_as_wss(auth: WebhookAuth) -> None:
    headers = sign_plivo(PL_TOKEN, "GET", "wss://agent.example.com/voice/plivo/stream")
    assert auth.check_plivo_upgrade("/plivo/stream", headers) == (False, PLIVO_FORMS)


# --------------------------------------------------------------------------------------------------------
# Modes and logging
# --------------------------------------------------------------------------------------------------------


def test_insecure_development_mode_says_so_and_passes_everything(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app.signatures"):
        dev = WebhookAuth(make_settings(twilio_auth_token="", twilio_webhook_keys="", plivo_auth_token=""))
    assert "INSECURE DEVELOPMENT MODE" in caplog.text
    assert dev.insecure and not dev.twilio_enabled and not dev.plivo_enabled
    assert dev.check_twilio("/twilio/voice", PARAMS, {})
    assert dev.check_twilio_upgrade("/twilio/stream", {})
    assert dev.check_plivo("POST", "/plivo/answer", PL_PARAMS, {})
    assert dev.check_plivo_upgrade("/plivo/stream", {}) == (True, [])


def test_a_provider_without_credentials_is_refused_when_the_other_has_them() -> None:
    plivo_only = WebhookAuth(make_settings(twilio_auth_token="", twilio_webhook_keys=""))
    assert not plivo_only.insecure and not plivo_only.twilio_enabled
    assert not plivo_only.check_twilio("/twilio/voice", PARAMS, sign_twilio("", VOICE_URL, PARAMS))
    assert not plivo_only.check_twilio_upgrade("/twilio/stream", {})
    twilio_only = WebhookAuth(make_settings(plivo_auth_token=""))
    signed = sign_plivo("", "POST", ANSWER_URL, PL_PARAMS)
    assert not twilio_only.check_plivo("POST", "/plivo/answer", PL_PARAMS, signed)
    assert twilio_only.check_plivo_upgrade("/plivo/stream", {})[0] is False


def test_logs_carry_no_secrets_or_signatures(auth: WebhookAuth, caplog: pytest.LogCaptureFixture) -> None:
    wrong_tw = sign_twilio("wrong-token", VOICE_URL, PARAMS)
    wrong_pl = sign_plivo("wrong-token", "POST", ANSWER_URL, PL_PARAMS)
    with caplog.at_level(logging.DEBUG):
        WebhookAuth(make_settings())
        auth.check_twilio("/twilio/voice", PARAMS, wrong_tw)
        auth.check_plivo("POST", "/plivo/answer", PL_PARAMS, wrong_pl)
        auth.plivo_upgrade_allowed("/plivo/stream", wrong_pl)
    assert caplog.records
    for secret in (TW_TOKEN, KEY_SECRET, PL_TOKEN, wrong_tw[TWILIO_SIGNATURE], wrong_pl[PLIVO_SIGNATURE]):
        assert secret not in caplog.text
    assert PARAMS["From"] not in caplog.text


def test_parse_webhook_keys() -> None:
    assert parse_webhook_keys("") == {}
    assert parse_webhook_keys(" a=1 , b=x=y ,") == {"a": "1", "b": "x=y"}
    for bad in ("a", "=secret", "a="):
        with pytest.raises(ValueError):
            parse_webhook_keys(bad)


# --------------------------------------------------------------------------------------------------------
# One token per call, bound to its provider
# --------------------------------------------------------------------------------------------------------


def test_issue_is_idempotent_until_the_token_is_used_then_refuses(tokens: StreamTokens) -> None:
    token = tokens.issue("twilio", CALL)
    assert tokens.issue("twilio", CALL) == token  # the provider retried its webhook: same answer
    assert tokens.consume("twilio", CALL, token)
    with pytest.raises(TokenRefused) as refused:
        tokens.issue("twilio", CALL)  # a replayed webhook after the stream started
    assert refused.value.reason == "consumed"


def test_issue_refuses_once_the_token_expired_unused(tokens: StreamTokens, clock: FakeClock) -> None:
    token = tokens.issue("plivo", CALL)
    clock.advance(60.0)
    with pytest.raises(TokenRefused) as refused:
        tokens.issue("plivo", CALL)
    assert refused.value.reason == "expired"
    assert not tokens.consume("plivo", CALL, token)


def test_token_is_bound_to_its_provider(tokens: StreamTokens) -> None:
    twilio = tokens.issue("twilio", CALL)
    plivo = tokens.issue("plivo", CALL)
    assert twilio != plivo
    assert not tokens.consume("plivo", CALL, twilio)
    assert not tokens.consume("twilio", CALL, plivo)
    assert tokens.consume("twilio", CALL, twilio)  # the failed cross-provider tries burnt nothing
    assert tokens.consume("plivo", CALL, plivo)


def test_a_call_opens_once_even_with_a_token_from_a_replica(clock: FakeClock) -> None:
    here = StreamTokens(b"shared-secret", 60.0, clock.now)
    replica = StreamTokens(b"shared-secret", 60.0, clock.now)
    own, other = here.issue("twilio", CALL), replica.issue("twilio", CALL)
    assert own != other
    # The provider kept the replica's answer (a retry that landed there): that token opens the call...
    assert here.consume("twilio", CALL, other)
    # ...and then no token minted for the call opens it again, nor does this process mint another.
    assert not here.consume("twilio", CALL, own)
    with pytest.raises(TokenRefused):
        here.issue("twilio", CALL)
    # A call this process only saw consumed is remembered too.
    third = StreamTokens(b"shared-secret", 60.0, clock.now)
    token = replica.issue("plivo", "uuid-1")
    assert third.consume("plivo", "uuid-1", token)
    with pytest.raises(TokenRefused):
        third.issue("plivo", "uuid-1")


def test_from_settings_remembers_calls_for_the_longest_call_and_its_record(clock: FakeClock) -> None:
    settings = make_settings(call_records_ttl_s=1800.0)
    assert replay_window_s(settings) == MAX_CALL_S + 1800.0 == 4 * 3600 + 1800
    tokens = StreamTokens.from_settings(settings, clock.now)
    assert tokens.consume("twilio", CALL, tokens.issue("twilio", CALL))
    clock.advance(MAX_CALL_S + 1800.0)  # the call can still be live, or its record still kept: no new token
    with pytest.raises(TokenRefused):
        tokens.issue("twilio", CALL)
    clock.advance(61.0)
    assert tokens.issue("twilio", CALL)  # long forgotten: a call id from then is no threat now
    assert tokens.remembered == 1


# --------------------------------------------------------------------------------------------------------
# Plivo nonces: each signed request is accepted once
# --------------------------------------------------------------------------------------------------------


def test_plivo_webhook_replay_with_the_same_nonce_is_refused(auth: WebhookAuth) -> None:
    headers = sign_plivo(PL_TOKEN, "POST", ANSWER_URL, PL_PARAMS)
    # A refused request does not use up its nonce (else a forgery could burn the genuine request's).
    assert not auth.check_plivo("POST", "/plivo/answer", {**PL_PARAMS, "From": "1"}, headers)
    assert auth.check_plivo("POST", "/plivo/answer", PL_PARAMS, headers)
    assert not auth.check_plivo("POST", "/plivo/answer", PL_PARAMS, headers)
    # Padding the header with other signatures, or moving it to the Ma header, is the same request.
    padded = {**headers, PLIVO_SIGNATURE: "b2xk," + headers[PLIVO_SIGNATURE] + ",bmV3"}
    assert not auth.check_plivo("POST", "/plivo/answer", PL_PARAMS, padded)
    moved = {PLIVO_SIGNATURE_MA: headers[PLIVO_SIGNATURE], PLIVO_NONCE: headers[PLIVO_NONCE]}
    assert not auth.check_plivo("POST", "/plivo/answer", PL_PARAMS, moved)
    # The same webhook signed again by Plivo carries a fresh nonce: accepted.
    assert auth.check_plivo("POST", "/plivo/answer", PL_PARAMS, sign_plivo(PL_TOKEN, "POST", ANSWER_URL, PL_PARAMS))


def test_plivo_nonces_are_remembered_for_a_bounded_time() -> None:
    clock = FakeClock(0.0)
    settings = make_settings()
    auth = WebhookAuth(settings, clock=clock.now)
    headers = sign_plivo(PL_TOKEN, "POST", ANSWER_URL, PL_PARAMS)
    assert auth.check_plivo("POST", "/plivo/answer", PL_PARAMS, headers)
    clock.advance(replay_window_s(settings) - 1)
    assert not auth.check_plivo("POST", "/plivo/answer", PL_PARAMS, headers)
    assert auth.plivo_replays.remembered == 1
    clock.advance(1)
    assert auth.check_plivo("POST", "/plivo/answer", PL_PARAMS, headers)  # forgotten, and remembered afresh
    assert auth.plivo_replays.remembered == 1


def test_replay_guard_refuses_when_full_rather_than_forgetting() -> None:
    clock = FakeClock(0.0)
    guard = ReplayGuard(10.0, clock.now, max_entries=2)
    assert guard.first_use("a", "1") and guard.first_use("b", "1")
    assert not guard.first_use("c", "1")
    assert not guard.first_use("a", "1")
    clock.advance(10.0)
    assert guard.first_use("c", "1") and guard.first_use("a", "1")


def test_plivo_upgrade_candidates_are_one_request_and_a_replay_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    strict = WebhookAuth(make_settings(plivo_enforce_upgrade_signature=True))
    lenient = WebhookAuth(make_settings())
    # Signed over the last candidate form: the three tried before it do not use up the nonce.
    headers = sign_plivo(PL_TOKEN, "GET", PLIVO_FORMS[3])
    assert strict.check_plivo_upgrade("/plivo/stream", headers) == (True, PLIVO_FORMS)
    assert strict.check_plivo_upgrade("/plivo/stream", headers) == (False, PLIVO_FORMS)
    assert not strict.plivo_upgrade_allowed("/plivo/stream", headers)
    assert lenient.plivo_upgrade_allowed("/plivo/stream", headers)
    with caplog.at_level(logging.WARNING, logger="app.signatures"):
        assert lenient.plivo_upgrade_allowed("/plivo/stream", headers)  # log only: the stream token decides
    assert "replayed" in caplog.text


# --------------------------------------------------------------------------------------------------------
# The embedded LLM answers this server only
# --------------------------------------------------------------------------------------------------------

LLM_KEY = "per-process-key-for-tests"
LLM_BODY = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def _llm_app() -> FastAPI:
    app = FastAPI()
    app.include_router(embedded_llm_router(0.0, LLM_KEY))
    return app


async def _llm_post(app: Any, client: tuple[str, int], headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as http:
        return await http.post(f"{EMBEDDED_LLM_PREFIX}/chat/completions", json=LLM_BODY, headers=headers)


@pytest.mark.parametrize("client", ["203.0.113.7", "10.0.0.5", "::ffff:203.0.113.7", "2001:db8::1", "localhost"])
def test_embedded_llm_refuses_a_non_loopback_client_even_with_the_key(client: str) -> None:
    response = asyncio.run(_llm_post(_llm_app(), (client, 1234), {"Authorization": f"Bearer {LLM_KEY}"}))
    assert response.status_code == 403
    assert "data:" not in response.text


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": LLM_KEY}, {"Authorization": f"Bearer {LLM_KEY}x"}],
)
def test_embedded_llm_refuses_a_loopback_client_without_the_key(headers: dict[str, str]) -> None:
    response = asyncio.run(_llm_post(_llm_app(), ("127.0.0.1", 1234), headers))
    assert response.status_code == 401
    assert "data:" not in response.text


@pytest.mark.parametrize("client", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_embedded_llm_answers_a_loopback_client_with_the_key(client: str) -> None:
    response = asyncio.run(_llm_post(_llm_app(), (client, 1234), {"Authorization": f"Bearer {LLM_KEY}"}))
    assert response.status_code == 200
    assert response.text.rstrip().endswith("data: [DONE]")


def test_the_app_mounts_the_embedded_llm_behind_a_key_nobody_outside_knows() -> None:
    app = create_app(make_settings(llm_base_url=""))
    outside = asyncio.run(_llm_post(app, ("203.0.113.7", 1234), {"Authorization": f"Bearer {LLM_KEY}"}))
    assert outside.status_code == 403
    inside_without_key = asyncio.run(_llm_post(app, ("127.0.0.1", 1234), {}))
    assert inside_without_key.status_code == 401
