"""Signature headers as Twilio and Plivo compute them, for the edge emulator and the tests.

Both functions use the providers' own SDK code for the arithmetic, so a header made here is exactly what the
SDK validators on the server side accept; what they sign (which URL, which params) is the caller's choice.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from plivo.utils import signature_v3
from twilio.request_validator import RequestValidator

TWILIO_SIGNATURE = "X-Twilio-Signature"
TWILIO_SIGNATURE_SETTINGS = "X-Twilio-Webhooks-Signature-Settings"
PLIVO_SIGNATURE = "X-Plivo-Signature-V3"
PLIVO_SIGNATURE_MA = "X-Plivo-Signature-Ma-V3"
PLIVO_NONCE = "X-Plivo-Signature-V3-Nonce"


class _Multi(dict[str, list[str]]):
    """Form fields with repeats, read by twilio's RequestValidator through `getlist`."""

    def getlist(self, key: str) -> list[str]:
        return self[key]


def _multi(params: Mapping[str, Any] | None) -> _Multi:
    out = _Multi()
    getlist = getattr(params, "getlist", None)
    for key in (params or {}).keys():
        value = getlist(key) if callable(getlist) else (params or {})[key]
        out[key] = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return out


def sign_twilio(
    secret: str,
    url: str,
    params: Mapping[str, Any] | None = None,
    *,
    key_id: str | None = None,
    algorithm: str | None = None,
) -> dict[str, str]:
    """Headers for a Twilio request to `url` with form `params` (a value may be a list for a repeated field).

    `secret` is the account auth token, or a webhook shared key's secret when `key_id` is given; then the
    signature-settings header names the key and `algorithm` (`HMAC_SHA1` or `HMAC_SHA256`, default SHA256).
    """
    validator = RequestValidator(secret)
    if key_id is None:
        signature = validator.compute_signature(url, _multi(params), algorithm)
        return {TWILIO_SIGNATURE: str(signature)}
    algorithm = algorithm or "HMAC_SHA256"
    signature = validator.compute_signature(url, _multi(params), algorithm)
    return {
        TWILIO_SIGNATURE: str(signature),
        TWILIO_SIGNATURE_SETTINGS: f"key={key_id},algorithm={algorithm}",
    }


def sign_twilio_upgrade(
    secret: str, url: str, *, key_id: str | None = None, algorithm: str | None = None
) -> dict[str, str]:
    """Headers for a Media Streams upgrade: Twilio signs the `wss://` URL with no params."""
    return sign_twilio(secret, url, None, key_id=key_id, algorithm=algorithm)


def sign_plivo(
    auth_token: str,
    method: str,
    url: str,
    params: Mapping[str, str] | None = None,
    *,
    nonce: str | None = None,
    header: str = PLIVO_SIGNATURE,
) -> dict[str, str]:
    """V3 headers for a Plivo `GET`/`POST` to `url` (an `http(s)://` URL) with form `params`.

    Pass `header=PLIVO_SIGNATURE_MA` for the main-account variant. Plivo nonces are digit strings; any string
    works for the algorithm.
    """
    nonce = nonce if nonce is not None else str(secrets.randbelow(10**20)).zfill(20)
    if method.upper() == "GET":
        base = signature_v3.construct_get_url(url, dict(params or {}))
    else:
        base = signature_v3.construct_post_url(url, dict(params or {}))
    signature = signature_v3.get_signature_v3(auth_token.encode(), base.decode("utf-8"), nonce.encode())
    return {header: bytes(signature).decode("ascii"), PLIVO_NONCE: nonce}
