"""StreamTokens and WebhookAuth in process: tokens on a fake clock, signatures made with the SDKs."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
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
from app.security import TOKEN_LENGTH, StreamTokens, WebhookAuth, parse_webhook_keys
from app.settings import Settings

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
    token = tokens.issue(CALL)
    assert re.fullmatch(r"[A-Za-z0-9]+", token)
    assert len(token) == TOKEN_LENGTH
    assert len(f"token={token}".encode()) <= 512
    assert tokens.issue(CALL) != token  # a fresh nonce every time


def test_token_consumes_once_and_only_once(tokens: StreamTokens) -> None:
    token = tokens.issue(CALL)
    assert tokens.consume(CALL, token)
    assert not tokens.consume(CALL, token)
    assert not tokens.consume(CALL, token)


def test_token_is_bound_to_its_call(tokens: StreamTokens) -> None:
    token = tokens.issue(CALL)
    assert not tokens.consume("CA" + "f" * 32, token)
    assert not tokens.consume("", token)
    assert tokens.consume(CALL, token)  # a failed attempt for another call does not burn it


def test_token_expires_after_ttl(tokens: StreamTokens, clock: FakeClock) -> None:
    early, late = tokens.issue(CALL), tokens.issue(CALL)
    clock.advance(59.9)
    assert tokens.consume(CALL, early)
    clock.advance(0.1)
    assert not tokens.consume(CALL, late)


def test_tampered_tokens_are_refused(tokens: StreamTokens) -> None:
    token = tokens.issue(CALL)
    later_expiry = f"{int(token[:12], 16) + 3_600_000:012x}" + token[12:]
    flipped_mac = token[:-1] + ("0" if token[-1] != "0" else "1")
    for forged in (later_expiry, flipped_mac, token.upper(), token[:-1], token + "0", "", "token", "é" * 60):
        assert not tokens.consume(CALL, forged), forged
    assert tokens.consume(CALL, token)


def test_replica_with_same_secret_verifies_and_other_secret_does_not(clock: FakeClock) -> None:
    issuer = StreamTokens(b"shared-secret", 60.0, clock.now)
    replica = StreamTokens(b"shared-secret", 60.0, clock.now)
    stranger = StreamTokens(b"other-secret", 60.0, clock.now)
    token = issuer.issue(CALL)
    assert not stranger.consume(CALL, token)
    assert replica.consume(CALL, token)


def test_random_secret_per_process_when_setting_is_empty(clock: FakeClock) -> None:
    settings = make_settings(stream_token_secret="")
    one, two = (
        StreamTokens.from_settings(settings, clock.now),
        StreamTokens.from_settings(settings, clock.now),
    )
    assert not two.consume(CALL, one.issue(CALL))
    configured = make_settings(stream_token_secret="s3cret")
    a, b = (
        StreamTokens.from_settings(configured, clock.now),
        StreamTokens.from_settings(configured, clock.now),
    )
    assert b.consume(CALL, a.issue(CALL))


def test_used_tokens_are_forgotten_once_expired(tokens: StreamTokens, clock: FakeClock) -> None:
    for i in range(50):
        assert tokens.consume(f"CA{i}", tokens.issue(f"CA{i}"))
    assert tokens.remembered == 50
    clock.advance(61)
    assert tokens.consume("CAnew", tokens.issue("CAnew"))
    assert tokens.remembered == 1


def test_full_store_refuses_rather_than_forgetting_live_tokens(clock: FakeClock) -> None:
    small = StreamTokens(b"k", 60.0, clock.now, max_used=3)
    for i in range(3):
        assert small.consume(f"CA{i}", small.issue(f"CA{i}"))
    pending = small.issue("CAx")
    assert not small.consume("CAx", pending)
    clock.advance(61)
    assert small.consume("CAy", small.issue("CAy"))


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
    with caplog.at_level(logging.WARNING, logger="app.security"):
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
    with caplog.at_level(logging.WARNING, logger="app.security"):
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
