"""Provider signatures on webhooks and WebSocket upgrades, and the replay guard for Plivo's nonces.

Twilio (`X-Twilio-Signature`) and Plivo (`X-Plivo-Signature-V3`) sign every webhook and every WebSocket upgrade
over the URL *they* requested. Behind a TLS terminator the app sees `http://` / `ws://` and an internal host, so
the URL is always rebuilt from `PUBLIC_URL` (telephony-protocols.md §1.5, §2.5), never from the request. The
check itself is the provider SDK's validator; anything it raises counts as a failure.

Replays. A signature proves who sent a request, not that it is the first time: Twilio's has no nonce or time
(the single-use stream token in `app/stream_tokens.py` covers it), Plivo's V3 a nonce but no time, so a Plivo
(signature, nonce) pair is accepted once, remembered for `replay_window_s`.

With no provider credential at all the server runs in an explicit insecure development mode: every check
passes (and says so at start). With credentials for one provider only, the other provider's requests are
refused.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from plivo.utils import signature_v3, validate_v3_signature
from twilio import request_validator as twilio_rv

from app.logsafe import RateLimitedLog, safe
from app.settings import Settings
from app.stream_tokens import replay_window_s

logger = logging.getLogger(__name__)

TWILIO_SIGNATURE = "X-Twilio-Signature"
# Sent by Twilio when a webhook is signed with a Webhook Shared Key instead of the Auth Token:
# "key=<sharedKeyId>,algorithm=<HMAC_SHA1|HMAC_SHA256>" (twilio/docs usage/webhooks/webhook-shared-keys; the
# format is the one twilio-python 9.13 `request_validator.get_signature_algorithm` parses).
TWILIO_SIGNATURE_SETTINGS = "X-Twilio-Webhooks-Signature-Settings"
PLIVO_SIGNATURE = "X-Plivo-Signature-V3"
# Plivo docs (voice/xml/request/validation) also name a Ma-V3 header, presumably signed with the main
# account's token when the app belongs to a subaccount; PLIVO_AUTH_TOKEN is tried against both headers.
PLIVO_SIGNATURE_MA = "X-Plivo-Signature-Ma-V3"
PLIVO_NONCE = "X-Plivo-Signature-V3-Nonce"

# Older twilio 9.x releases know only HMAC-SHA1 and have no `algorithm` argument.
_TWILIO_HAS_ALGORITHMS = hasattr(twilio_rv, "get_signature_algorithm")

Params = Mapping[str, Any]
"""Form or query parameters: a plain mapping, or a multidict (starlette FormData) with `getlist`."""




class ReplayGuard:
    """Remembers signed requests already accepted, for `window_s`, so a replay of one can be refused.

    Entries are 16-byte digests; memory is bounded by the request rate times the window and by `max_entries`.
    When full it refuses new requests rather than forgetting live entries (which would make them replayable):
    only genuinely signed requests can fill it.
    """

    def __init__(self, window_s: float, clock: Callable[[], float], *, max_entries: int = 200_000) -> None:
        self._window_s = window_s
        self._clock = clock
        self._max = max_entries
        self._seen: dict[bytes, float] = {}
        self._expiries: list[tuple[float, bytes]] = []  # min-heap of (forget at, digest) for _seen

    def first_use(self, *parts: str) -> bool:
        """True the first time these parts are seen within the window (and remembers them); else False."""
        digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).digest()[:16]
        now = self._clock()
        while self._expiries and self._expiries[0][0] <= now:
            _, old = heapq.heappop(self._expiries)
            self._seen.pop(old, None)
        if digest in self._seen:
            return False
        if len(self._seen) >= self._max:
            logger.warning("replay guard full (%d signed requests remembered); refusing", len(self._seen))
            return False
        forget_at = now + self._window_s
        self._seen[digest] = forget_at
        heapq.heappush(self._expiries, (forget_at, digest))
        return True

    @property
    def remembered(self) -> int:
        return len(self._seen)


class _ListParams(dict[str, list[str]]):
    """Parameters as lists of values, with the `getlist` twilio's RequestValidator uses for repeats."""

    def getlist(self, key: str) -> list[str]:
        return self[key]


def _param_lists(params: Params) -> _ListParams:
    getlist = getattr(params, "getlist", None)
    out = _ListParams()
    for key in params.keys():
        if callable(getlist):
            values = list(getlist(key))
        else:
            value = params[key]
            values = list(value) if isinstance(value, (list, tuple)) else [value]
        out[str(key)] = [str(v) for v in values]
    return out


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works for plain dicts as well as starlette's Headers."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, val in headers.items():
        if key.lower() == wanted:
            return val
    return None


def _no_query(url: str) -> str:
    """A URL fit for a log line: the query string could carry anything, so it stays out."""
    return url.split("?", 1)[0]


def parse_webhook_keys(spec: str) -> dict[str, str]:
    """`key_id=secret,key_id=secret` (TWILIO_WEBHOOK_KEYS) -> {key_id: secret}. Secrets may contain `=`."""
    keys: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key_id, sep, secret = item.partition("=")
        if not sep or not key_id.strip() or not secret.strip():
            raise ValueError("TWILIO_WEBHOOK_KEYS must look like key_id=secret,key_id=secret")
        keys[key_id.strip()] = secret.strip()
    return keys


def _signature_settings(value: str) -> tuple[str | None, str]:
    """(key id or None, normalized algorithm) from the signature-settings header."""
    key_id: str | None = None
    for part in value.split(","):
        name, sep, val = part.partition("=")
        if sep and name.strip().lower() == "key" and val.strip():
            key_id = val.strip()
    if _TWILIO_HAS_ALGORITHMS:
        algorithm = str(twilio_rv.get_signature_algorithm(value))
    else:
        algorithm = "HMAC_SHA1"
        for part in value.split(","):
            name, sep, val = part.partition("=")
            if sep and name.strip().lower() == "algorithm" and val.strip():
                algorithm = val.strip()
    # Accept "HMAC-SHA256" as well as the SDK's "HMAC_SHA256" spelling.
    return key_id, algorithm.replace("-", "_").upper()


class WebhookAuth:
    """Checks Twilio and Plivo signatures on webhooks and WebSocket upgrades against PUBLIC_URL.

    Every `check_*` method answers for the current mode: always True in insecure development mode (no
    credential configured at all), False for a provider without credentials when another provider has them.
    Call them unconditionally; `twilio_enabled` / `plivo_enabled` only report whether signatures are checked.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        # Plivo V3 signatures carry a nonce but no timestamp, so a captured request stays valid forever: each
        # (signature, nonce) pair is accepted once, and remembered as long as a call and its record can live.
        self.plivo_replays = ReplayGuard(replay_window_s(settings), clock)
        # Anyone who can reach the webhooks can make every refusal below happen at will: bound the lines.
        self._refusals = RateLimitedLog(logger, clock)
        self._twilio_token = settings.twilio_auth_token
        self._twilio_keys = parse_webhook_keys(settings.twilio_webhook_keys)
        self._plivo_token = settings.plivo_auth_token
        self.insecure = not (self._twilio_token or self._twilio_keys or self._plivo_token)
        self.enforce_plivo_upgrade = settings.plivo_enforce_upgrade_signature
        if self.insecure:
            logger.warning(
                "INSECURE DEVELOPMENT MODE: no TWILIO_AUTH_TOKEN, TWILIO_WEBHOOK_KEYS or PLIVO_AUTH_TOKEN "
                "set; webhook and stream signatures are NOT checked and stream tokens are not required"
            )
        else:
            logger.info(
                "signature checks: twilio=%s plivo=%s (plivo upgrade mismatch: %s); public URL %s",
                "on" if self.twilio_enabled else "REFUSED (no credentials)",
                "on" if self.plivo_enabled else "REFUSED (no credentials)",
                "refuse" if self.enforce_plivo_upgrade else "log only",
                settings.public_url,
            )
        if self._twilio_keys and not _TWILIO_HAS_ALGORITHMS:
            logger.warning("the installed twilio SDK has no HMAC-SHA256 support; upgrade to twilio>=9.13")

    @property
    def twilio_enabled(self) -> bool:
        return bool(self._twilio_token or self._twilio_keys)

    @property
    def plivo_enabled(self) -> bool:
        return bool(self._plivo_token)

    # --- Twilio -----------------------------------------------------------------------------------------

    def check_twilio(self, path: str, params: Params, headers: Mapping[str, str]) -> bool:
        """A Twilio webhook to `path` (plus `?query`, if any) with form `params`, signed over PUBLIC_URL."""
        if self.insecure:
            return True
        return self._twilio_valid(self._settings.public_http(path), _param_lists(params), headers)

    def check_twilio_upgrade(self, path: str, headers: Mapping[str, str]) -> bool:
        """A Media Streams upgrade: Twilio signs the `wss://` public URL with empty params (§1.5)."""
        if self.insecure:
            return True
        return self._twilio_valid(self._settings.public_ws(path), _ListParams(), headers)

    def _twilio_valid(self, url: str, params: _ListParams, headers: Mapping[str, str]) -> bool:
        if not self.twilio_enabled:
            self._refusals.warning(
                "twilio request refused: no Twilio credentials configured (url %s)", _no_query(url)
            )
            return False
        signature = _header(headers, TWILIO_SIGNATURE)
        if not signature:
            self._refusals.warning("twilio request refused: no %s header (url %s)", TWILIO_SIGNATURE, _no_query(url))
            return False
        settings_header = _header(headers, TWILIO_SIGNATURE_SETTINGS)
        algorithm: str | None = None
        secret = self._twilio_token
        if settings_header:
            key_id, algorithm = _signature_settings(settings_header)
            if key_id is not None:
                secret = self._twilio_keys.get(key_id, "")
                if not secret:
                    self._refusals.warning(
                        "twilio request refused: unknown webhook shared key %s (url %s)",
                        safe(key_id),
                        _no_query(url),
                    )
                    return False
        if not secret:
            self._refusals.warning("twilio request refused: signed with the auth token, which is not configured")
            return False
        try:
            validator = twilio_rv.RequestValidator(secret)
            if algorithm is not None and _TWILIO_HAS_ALGORITHMS:
                ok = bool(validator.validate(url, params, signature, algorithm=algorithm))
            elif algorithm in (None, "HMAC_SHA1"):
                ok = bool(validator.validate(url, params, signature))
            else:
                self._refusals.warning("twilio request refused: this twilio SDK cannot check %s", safe(algorithm))
                return False
        except Exception as exc:  # noqa: BLE001 - any SDK failure is a refusal, never a 500
            self._refusals.warning(
                "twilio signature check raised %s; refusing (url %s)", type(exc).__name__, _no_query(url)
            )
            return False
        if not ok:
            self._refusals.warning("twilio request refused: signature does not match (url %s)", _no_query(url))
        return ok

    # --- Plivo ------------------------------------------------------------------------------------------

    def check_plivo(self, method: str, path: str, params: Params, headers: Mapping[str, str]) -> bool:
        """A Plivo webhook (`GET`/`POST`) to `path` (plus `?query`), V3-signed over PUBLIC_URL + path."""
        if self.insecure:
            return True
        url = self._settings.public_http(path)
        signature = self._plivo_match(method, url, _plivo_params(params), headers)
        return signature is not None and self._plivo_first_use(signature, headers, url)

    def plivo_upgrade_candidates(self, path: str) -> list[str]:
        """The URL forms Plivo might have signed for a stream upgrade to `path` (§2.5: not settled).

        - `https://host/path`: plivo-stream-sdk-node rebuilds http(s)://{Host}{url} from the socket's TLS
          state, i.e. `https` when Plivo's TLS reaches the validating server.
        - `http://host/path`: the same SDK behind a TLS terminator.
        - `http://host/path/websocket`: plivo-stream-sdk-python replaces wss:// with http:// and appends
          `/websocket`; the `https` twin is tried as well.
        The SDK validator refuses `wss://` outright, so no ws form is tried.
        """
        parts = urlsplit(self._settings.public_url)
        route, sep, query = path.partition("?")
        base = f"{parts.netloc}{parts.path}{route}"
        suffix = f"?{query}" if sep else ""
        return [
            f"https://{base}{suffix}",
            f"http://{base}{suffix}",
            f"http://{base}/websocket{suffix}",
            f"https://{base}/websocket{suffix}",
        ]

    def check_plivo_upgrade(self, path: str, headers: Mapping[str, str]) -> tuple[bool, list[str]]:
        """(whether any candidate URL form matches the V3 signature with method GET, the forms tried)."""
        ok, forms, _ = self._plivo_upgrade(path, headers)
        return ok, forms

    def _plivo_upgrade(self, path: str, headers: Mapping[str, str]) -> tuple[bool, list[str], bool]:
        """(accepted, forms tried, whether it matched but was a replay)."""
        if self.insecure:
            return True, [], False
        forms = self.plivo_upgrade_candidates(path)
        for url in forms:
            signature = self._plivo_match("GET", url, {}, headers, quiet=True)
            if signature is not None:
                # One request, several candidate URLs: only the form that matched is remembered, once.
                if not self._plivo_first_use(signature, headers, url):
                    return False, forms, True
                logger.info("plivo upgrade signature matched %s", url)
                return True, forms, False
        return False, forms, False

    def plivo_upgrade_allowed(self, path: str, headers: Mapping[str, str]) -> bool:
        """The upgrade policy: a mismatch is logged, and refused only with PLIVO_ENFORCE_UPGRADE_SIGNATURE.

        Refusing by default could lock out every call if Plivo signs a URL form we do not try; the per-call
        stream token (checked on `start`) still keeps strangers out.
        """
        ok, forms, replayed = self._plivo_upgrade(path, headers)
        if ok:
            return True
        if replayed:
            self._refusals.warning(
                "plivo upgrade replayed (signature and nonce already used); %s",
                "refusing" if self.enforce_plivo_upgrade else "allowing: the stream token decides",
            )
            return not self.enforce_plivo_upgrade
        has_headers = (
            _header(headers, PLIVO_SIGNATURE) is not None or _header(headers, PLIVO_SIGNATURE_MA) is not None
        )
        self._refusals.warning(
            "plivo upgrade signature matched none of %s (signature headers %s, nonce %s); %s",
            forms,
            "present" if has_headers else "absent",
            "present" if _header(headers, PLIVO_NONCE) is not None else "absent",
            "refusing" if self.enforce_plivo_upgrade else "allowing: the stream token decides",
        )
        return not self.enforce_plivo_upgrade

    def _plivo_first_use(self, signature: str, headers: Mapping[str, str], url: str) -> bool:
        """False (and logged) when this (signature, nonce) pair was already accepted: a replayed request."""
        nonce = _header(headers, PLIVO_NONCE) or ""
        if self.plivo_replays.first_use("plivo-v3", signature, nonce):
            return True
        self._refusals.warning("plivo request refused: replayed signature and nonce (url %s)", _no_query(url))
        return False

    def _plivo_match(
        self,
        method: str,
        url: str,
        params: dict[str, str | list[str]],
        headers: Mapping[str, str],
        *,
        quiet: bool = False,
    ) -> str | None:
        """The V3 signature the request carries for `url` when one matches (the SDK decides), else None."""
        if not self.plivo_enabled:
            if not quiet:
                self._refusals.warning("plivo request refused: no PLIVO_AUTH_TOKEN (url %s)", _no_query(url))
            return None
        signatures = [
            s for s in (_header(headers, PLIVO_SIGNATURE), _header(headers, PLIVO_SIGNATURE_MA)) if s
        ]
        nonce = _header(headers, PLIVO_NONCE)
        if not signatures:
            if not quiet:
                self._refusals.warning(
                    "plivo request refused: no %s header (url %s)", PLIVO_SIGNATURE, _no_query(url)
                )
            return None
        for signature in signatures:
            try:
                # The SDK mutates `params` while building the GET form, so each call gets its own copy.
                if validate_v3_signature(
                    method.upper(), url, nonce, self._plivo_token, signature, params=dict(params)
                ):
                    # The header may list several signatures, and a replay could pad it with junk: what
                    # identifies the request is the one signature that matched, so compute it to remember it.
                    return _plivo_signature(method, url, params, str(nonce), self._plivo_token)
            except Exception as exc:  # noqa: BLE001 - e.g. ValidationError for a missing nonce: a refusal
                if not quiet:
                    self._refusals.warning(
                        "plivo signature check raised %s; refusing (url %s)",
                        type(exc).__name__,
                        _no_query(url),
                    )
                return None
        if not quiet:
            self._refusals.warning("plivo request refused: signature does not match (url %s)", _no_query(url))
        return None


def _plivo_signature(
    method: str, url: str, params: dict[str, str | list[str]], nonce: str, auth_token: str
) -> str:
    """The V3 signature Plivo computes for this request, with the SDK's own helpers (as the validator does)."""
    if method.upper() == "GET":
        base = signature_v3.construct_get_url(url, dict(params))
    else:
        base = signature_v3.construct_post_url(url, dict(params))
    signature = signature_v3.get_signature_v3(auth_token.encode(), base.decode("utf-8"), nonce.encode())
    return bytes(signature).decode("ascii")


def _plivo_params(params: Params) -> dict[str, str | list[str]]:
    """Form values as plivo's validator wants them: a string, or a list for a repeated field."""
    out: dict[str, str | list[str]] = {}
    for key, values in _param_lists(params).items():
        out[key] = values[0] if len(values) == 1 else values
    return out
