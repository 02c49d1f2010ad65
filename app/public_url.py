"""The public base URL of a webhook request, from its headers, for when PUBLIC_URL is unset (no I/O).

A provider must reach the stream URL placed in the TwiML / Plivo XML from outside, so with no PUBLIC_URL the
base is the host the webhook was called on, in order of trust:

1. `Forwarded` (RFC 7239): the first element's `host=` and `proto=`;
2. `X-Forwarded-Host` / `X-Forwarded-Proto`: the first value of a comma-separated list;
3. `Host` (else the address the server accepted the request on).

The host header that is present and most trusted decides; when its value is malformed (not a hostname or IP
with an optional port: spaces, `/`, `@` and the like) the `Host` header is used instead. The base is `https`
(so the stream is `wss`) when the request came over https or the decisive forwarded proto says https. A port
that is the scheme's default is dropped: Twilio's stream URL must carry none.

Only for insecure mode: with provider auth on, signatures are computed over PUBLIC_URL, which is then
required (app/settings.py), and nothing here is consulted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Literal

FORWARDED = "forwarded"
X_FORWARDED_HOST = "x-forwarded-host"
X_FORWARDED_PROTO = "x-forwarded-proto"
HOST = "host"

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_PORT = re.compile(r"[0-9]{1,5}")
_DEFAULT_PORT = {"https": 443, "http": 80}
# RFC 7239 forwarded-pair: token "=" ( token / quoted-string ), pairs separated by ";".
_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*')


def derive_base_url(headers: Mapping[str, str], scheme: str, server: tuple[str, int] | None = None) -> str:
    """`http(s)://host[:port]` the request was addressed to, per the module doc.

    `headers` is looked up by lower-case name (Starlette's Headers are case-insensitive); `scheme` is the
    request's own (`https`/`wss` when it came over TLS, or as uvicorn's proxy_headers rewrote it); `server`
    is the (host, port) the request was accepted on, used only when no valid Host header came.
    """
    forwarded = _forwarded_first(_header(headers, FORWARDED))
    if "host" in forwarded:
        claimed: str | None = forwarded["host"]
    else:
        claimed = _first(_header(headers, X_FORWARDED_HOST))
    if "proto" in forwarded:
        proto = forwarded["proto"].lower()
    else:
        proto = (_first(_header(headers, X_FORWARDED_PROTO)) or "").lower()
    secure = scheme.lower() in ("https", "wss") or proto == "https"
    http_scheme = "https" if secure else "http"

    host = _valid_host(claimed) if claimed is not None else None
    if host is None:
        host = _valid_host(_first(_header(headers, HOST)) or "")
    if host is None and server is not None:
        host = _valid_host(_server_netloc(*server))
    if host is None:
        host = "localhost"
    return f"{http_scheme}://{_drop_default_port(host, http_scheme)}"


def ws_url(base_url: str) -> str:
    """The `wss://` (or `ws://` for plain http) form of an `http(s)://` base URL, path prefix kept."""
    scheme, sep, rest = base_url.partition("://")
    if not sep:
        raise ValueError(f"not an absolute URL: {base_url!r}")
    return f"{'wss' if scheme.lower() == 'https' else 'ws'}://{rest}"


def valid_host(value: str) -> bool:
    """Whether `value` is a hostname, IPv4 address or [IPv6] address, with an optional port, and nothing else."""
    return _valid_host(value) is not None


class FirstSeen:
    """Remembers up to `limit` distinct values, so a once-per-value warning cannot flood.

    `note(value)` is "new" the first time it sees a value while there is room, "full" once: for the first new
    value past the limit (then nothing more is remembered), and "seen" otherwise. A peer sending endless
    distinct Host headers thus gets `limit` + 1 lines and costs no more memory.
    """

    def __init__(self, limit: int = 32) -> None:
        self._seen: set[str] = set()
        self._limit = limit
        self._overflowed = False

    def note(self, value: str) -> Literal["new", "seen", "full"]:
        if value in self._seen:
            return "seen"
        if len(self._seen) < self._limit:
            self._seen.add(value)
            return "new"
        if self._overflowed:
            return "seen"
        self._overflowed = True
        return "full"


# --- helpers --------------------------------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return value if isinstance(value, str) else None


def _first(value: str | None) -> str | None:
    """The first element of a comma-separated header list, stripped; None when absent or empty."""
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def _forwarded_first(value: str | None) -> dict[str, str]:
    """The parameters (lower-case names, unquoted values) of the first element of a `Forwarded` header.

    Malformed input yields what parsed before the fault; a quoted value may hold `,` and `;`.
    """
    params: dict[str, str] = {}
    if not value:
        return params
    pos = 0
    while pos < len(value):
        match = _PAIR.match(value, pos)
        if match is None:
            break
        name, raw = match.group(1).lower(), match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params.setdefault(name, raw)
        pos = match.end()
        if pos >= len(value) or value[pos] == ",":
            break  # the first element ends at the first comma outside quotes
        if value[pos] != ";":
            break
        pos += 1
    return params


def _valid_host(value: str) -> str | None:
    """`value` lower-cased when it is host[:port] (hostname, IPv4 or [IPv6]), else None."""
    if not value or len(value) > 261 or value != value.strip():
        return None
    if value.startswith("["):
        address, sep, after = value[1:].partition("]")
        if not sep:
            return None
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return None
        if after and not (after.startswith(":") and _valid_port(after[1:])):
            return None
        return value.lower()
    host, sep, port = value.partition(":")
    if sep and not _valid_port(port):
        return None
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        return None
    return value.lower()


def _valid_port(port: str) -> bool:
    return bool(_PORT.fullmatch(port)) and 0 < int(port) < 65536


def _server_netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _drop_default_port(host: str, scheme: str) -> str:
    head, sep, port = host.rpartition(":")
    bracketed = head.startswith("[") and head.endswith("]")
    if sep and port.isdigit() and int(port) == _DEFAULT_PORT[scheme] and (bracketed or ":" not in head):
        return head
    return host
