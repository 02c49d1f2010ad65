"""What a recording must not hold: pure functions from wire text (or an event line) to what may be written.

Three kinds of things are removed:
- **Secrets, always.** Nothing the server sends carries one, and HTTP headers (signatures, Authorization) are
  never recorded at all. Inbound, the per-call stream token rides in the `start` frame: Twilio hands the
  `<Parameter>`s back in `start.customParameters`, Plivo the `extraHeaders` in `start.extra_headers`
  (telephony-protocols.md §1.4, §2.4). Every value there whose name looks secret (token, secret, key, password,
  auth, signature) is replaced by `REDACTED`; a `start` that cannot be parsed is replaced whole. As a second
  line of defence the recorder also replaces every known secret value (the settings' secrets and the call's
  stream token) wherever it appears in a line that is not a media frame.
- **The caller's audio** (RECORD_REDACT=audio): the payload of every inbound media frame becomes "".
- **Text** (RECORD_REDACT=text): LLM tokens, turn texts, TTS sentences, and the agent's audio, which speaks
  that text (outbound media payloads become "").

Media frames are the hot path (50 a second per call inbound), so they are never parsed: a payload is blanked
with one regular expression (base64 holds no quote, so `"payload":"..."` ends at the next quote), and a frame
that does not mention `start` is known to need no secret removal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"

# A name that says its value is a secret, in settings, Twilio <Parameter>s or Plivo extraHeaders.
SECRET_NAME = re.compile(r"token|secret|key|passw|auth|sig", re.IGNORECASE)
_PAYLOAD = re.compile(r'"payload"(\s*:\s*)"[^"]*"')
_EXTRA_HEADERS = re.compile(r'("extra_headers"\s*:\s*)("(?:[^"\\]|\\.)*")')
_EXTRA_HEADERS_OTHER = re.compile(r'"extra_headers"\s*:\s*[^"\s]')  # an object, a number, ...: not a string
_PAIRS = re.compile(r"([^;,=]*)=([^;,]*)")
_URL_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@?#]*@")


def is_secret_name(name: str) -> bool:
    return SECRET_NAME.search(name) is not None


def blank_payload(text: str) -> str:
    """A media frame with every `payload` string emptied (the frame's timing and fields stay)."""
    return _PAYLOAD.sub(r'"payload"\1""', text)


def redact_inbound(text: str, drop_audio: bool) -> tuple[str, list[str]]:
    """One provider frame as it may be recorded, and the secret values it carried (to scrub elsewhere).

    Stateless; a call's frames go through an `InboundRedactor`, which does the same faster.
    """
    return InboundRedactor(drop_audio).redact(text)


class InboundRedactor:
    """Redacts one stream's inbound frames; remembers each `extra_headers` value it has redacted.

    Plivo repeats `extra_headers`, stream token included, on every media and dtmf frame, not only on `start`
    (telephony-protocols.md §2.2, [PL-REF]): 50 times a second. The value is the same every time, so it is
    found with one regular expression and its redacted form is reused, instead of parsing every frame.
    """

    _CACHE_MAX = 8  # distinct extra_headers values remembered; a stream sends one

    def __init__(self, drop_audio: bool) -> None:
        self.drop_audio = drop_audio
        self._headers: dict[str, str] = {}  # `"extra_headers":"<value>"` as seen -> the same, redacted

    def redact(self, text: str) -> tuple[str, list[str]]:
        """(the frame as it may be recorded, secret values seen in it for the first time)."""
        if "start" in text or "customParameters" in text:
            return _redact_start(text, self.drop_audio)
        found: list[str] = []
        if "extra_headers" in text:
            # The fast path: the one `"extra_headers":"..."` of this frame is one already redacted.
            if text.count('"extra_headers"') == 1:
                for seen, redacted in self._headers.items():
                    if seen in text:
                        text = text.replace(seen, redacted)
                        return (blank_payload(text) if self.drop_audio else text), found
            try:
                text = _EXTRA_HEADERS.sub(lambda m: self._headers_literal(m, found), text)
            except ValueError:  # not a JSON string literal we can read: parse the frame instead
                return _redact_start(text, self.drop_audio)
            if _EXTRA_HEADERS_OTHER.search(text):  # a value that is not a string: only a parse can tell
                return _redact_start(text, self.drop_audio)
        return (blank_payload(text) if self.drop_audio else text), found

    def _headers_literal(self, match: re.Match[str], found: list[str]) -> str:
        value, secrets = redact_extra_headers(json.loads(match.group(2)))
        found += secrets
        redacted = match.group(1) + json.dumps(value, ensure_ascii=False)
        if len(self._headers) < self._CACHE_MAX:
            self._headers[match.group(0)] = redacted  # `"extra_headers":"..."` exactly as it came
        return redacted


def _redact_start(text: str, drop_audio: bool) -> tuple[str, list[str]]:
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        msg = None
    if not isinstance(msg, dict):
        # Not an object we can walk: keep it only if no place a token travels is named in it.
        if "customParameters" in text or "extra_headers" in text or "token" in text.lower():
            return REDACTED, []
        return (blank_payload(text) if drop_audio else text), []
    found: list[str] = []
    redacted = _redact_tree(msg, found, 0)
    if drop_audio and isinstance(redacted.get("media"), dict) and "payload" in redacted["media"]:
        redacted["media"]["payload"] = ""
    elif redacted == msg:
        return text, []
    return json.dumps(redacted, separators=(",", ":"), ensure_ascii=False), found


_MAX_DEPTH = 16


def _redact_tree(obj: dict[str, Any], found: list[str], depth: int) -> dict[str, Any]:
    """A copy of a frame's object with every secret-named string value replaced, at any depth.

    Twilio's token is at start.customParameters.token, Plivo's inside the extra_headers string, and a plain
    client's (providers/telephony/pcm.py) at the top level: walking the whole frame finds all of them.
    """
    out: dict[str, Any] = {}
    for name, value in obj.items():
        if name == "extra_headers":
            out[name], secrets = redact_extra_headers(value)
            found += secrets
        elif isinstance(value, dict):
            out[name] = _redact_tree(value, found, depth + 1) if depth < _MAX_DEPTH else REDACTED
        elif is_secret_name(str(name)) and isinstance(value, str):
            out[name] = REDACTED
            if value:
                found.append(value)
        elif is_secret_name(str(name)) and isinstance(value, list):
            out[name] = REDACTED
        else:
            out[name] = value
    return out


def _redact_map(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    out: dict[str, Any] = {}
    found: list[str] = []
    for name, value in values.items():
        if is_secret_name(str(name)):
            out[name] = REDACTED
            if isinstance(value, str) and value:
                found.append(value)
        else:
            out[name] = value
    return out, found


def redact_extra_headers(value: Any) -> tuple[Any, list[str]]:
    """Plivo's `extra_headers` with secret values replaced, in the form it came in.

    It arrives as "k=v;k=v", "k=v,k=v", a JSON string or an object (see PlivoProtocol's parse_extra_headers);
    anything else is replaced whole, since we cannot tell where a token in it would be.
    """
    if value is None:
        return None, []
    if isinstance(value, dict):
        return _redact_map(value)
    if not isinstance(value, str):
        return REDACTED, []
    stripped = value.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except (ValueError, RecursionError):
            return REDACTED, []
        if not isinstance(obj, dict):
            return REDACTED, []
        redacted, found = _redact_map(obj)
        return json.dumps(redacted, separators=(",", ":"), ensure_ascii=False), found
    pairs_found: list[str] = []

    def one(match: re.Match[str]) -> str:
        name, val = match.group(1), match.group(2)
        if is_secret_name(name):
            if val.strip():
                pairs_found.append(val.strip())
            return f"{name}={REDACTED}"
        return match.group(0)

    return _PAIRS.sub(one, value), pairs_found


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret value replaced (the recorder's second line of defence)."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


# -- text redaction of event lines -------------------------------------------------------------------------
# The fields of app/call/events.py that hold what was said; a line of another type keeps all its fields.
TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "llm_token": ("text",),
    "tts_start": ("text",),
    "audio_queued": ("text",),
    "turn_end": ("text", "heard_text"),
}
_RECORD_TURN_TEXT = ("text", "intended_text", "heard_text")


def redact_event_text(line: dict[str, Any]) -> dict[str, Any]:
    """An event line with what was said emptied ("" for text, None stays None); lengths and timings stay."""
    fields = TEXT_FIELDS.get(str(line.get("type")))
    if not fields:
        return line
    out = dict(line)
    for name in fields:
        if isinstance(out.get(name), str):
            out[name] = ""
    return out


def redact_record_text(record: dict[str, Any]) -> dict[str, Any]:
    """The final call record with every turn's text emptied."""
    out = dict(record)
    turns = []
    for turn in record.get("turns") or []:
        turn = dict(turn)
        for name in _RECORD_TURN_TEXT:
            if isinstance(turn.get(name), str):
                turn[name] = ""
        turns.append(turn)
    out["turns"] = turns
    return out


# -- settings ----------------------------------------------------------------------------------------------
def strip_url_secrets(value: str) -> str:
    """A URL without user:password@ (and without its query string, which may carry a key)."""
    if "://" not in value:
        return value
    value = _URL_USERINFO.sub(r"\1", value)
    return value.split("?", 1)[0].split("#", 1)[0]


def public_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the settings fit for a recording's header, the names left out as secrets).

    A string setting whose name says token, secret, key, password or auth is left out, set or not; a number or
    a switch with such a name (STREAM_TOKEN_TTL_S, PLIVO_ENFORCE_UPGRADE_SIGNATURE) cannot be one and stays.
    """
    kept: dict[str, Any] = {}
    omitted: list[str] = []
    for name, value in settings.items():
        if is_secret_name(name) and isinstance(value, str):
            omitted.append(name)
            continue
        kept[name] = strip_url_secrets(value) if isinstance(value, str) else value
    return kept, omitted
