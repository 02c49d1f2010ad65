"""Hostile frames for the media-stream WebSockets: a seeded fuzzer of the Twilio and Plivo dialects.

`frames(provider, seed, n)` yields `n` WebSocket messages (str: a text frame, bytes: a binary frame) that one
hostile connection might send, always the same for the same arguments. They start from the real message
shapes (the builders in `app.edge.wire`, as the edge emulator sends them, and the recordings under
`tests/recordings`) and break them every way a parser meets: random bytes, truncated JSON, deleted fields,
swapped types, huge numbers, NaN and Infinity, deep nesting, duplicate keys, control characters, escaped
newlines and ANSI sequences in strings, lone surrogates, bad or odd-length base64, payloads up to the server's
message cap and some above it, unknown events, marks for names never sent, second starts, stops, the other
provider's events, and binary frames (invalid UTF-8 travels in those: a text frame from this client is always
valid UTF-8).

Given `live` targets (calls that are up on other sockets), a share of the frames name them: a `start` with a
live call's id (a hijack), and media, marks, DTMF and stops for a live call's stream. `aimed()` yields only
those. Nothing here does I/O or reads a clock; `hostile_frames()` gives the same frames labelled with their
kind, for drivers that count what they sent.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from app.edge import wire
from app.edge.wire import Provider

WS_MAX_MESSAGE = 65_536  # the server's default cap on one inbound message (Settings.ws_max_message_bytes)

# Kinds whose every frame the server must count as invalid (or unknown, or binary) if it reads it: no JSON
# object with a string event can come out of them. The others may be well-formed by chance or on purpose.
ALWAYS_INVALID = frozenset({"binary", "garbage", "non_object", "truncated", "unknown_event"})

# (kind, weight): roughly the share of frames of each kind in a thousand.
_KINDS: tuple[tuple[str, float], ...] = (
    ("media", 90),  # well-formed media for the connection's own stream (noise or silence)
    ("mutated", 270),  # a real frame with one to three fields deleted, retyped or poisoned
    ("truncated", 60),
    ("bad_media", 140),  # media with bad base64, odd lengths, wrong types
    ("big_media", 20),  # media up to the message cap
    ("over_cap", 5),  # a message above the cap
    ("unknown_event", 50),
    ("mark", 60),  # mark / playedStream for a name the server never sent
    ("start", 40),  # second starts, other ids, bad formats
    ("stop", 10),
    ("binary", 50),
    ("bad_utf8_text", 5),  # a text frame that is not UTF-8
    ("garbage", 50),  # text that is not JSON
    ("non_object", 30),  # JSON that is not an object, or whose event is not a string
    ("cross", 30),  # the other provider's events
    ("dtmf", 20),
)
_LIVE_WEIGHT = 30.0  # "live" frames per thousand when targets are given

_ANSI = ("\x1b[31m", "\x1b[0m", "\x1b[2J", "\x1b[1A\x1b[2K", "\x1b]0;title\x07", "\x1b]8;;http://x\x1b\\", "\x9b31m")
_HOSTILE_STRINGS = (
    "", " ", "\n", "\r\n", "ok\n2026-01-01 00:00:00,000 ERROR app.main: forged log line", "ok\r\x1b[2Kforged",
    "\x1b[31mred\x1b[0m", "\x1b]0;pwned\x07", "\x00", "a\x00b", "\x7f", "\u0085", "\u2028\u2029", "\u202eevil",
    "\ufeff", "\ufffd", "\ud800", "\udfff", "\ud83d", "\U0001f600", "%s%s%s%n", "%(message)s", "{0}{1}",
    "${jndi:ldap://127.0.0.1/a}", "../../../etc/passwd", "<script>alert(1)</script>", "'; DROP TABLE calls; --",
    "null", "NaN", "0", "-1", "true", "__proto__", "constructor",
)
_BAD_B64 = (
    "@@not base64@@", "!!!!", "AAAA=AAA", "AAA", "A", "AA=", "AAAA====", "AAAA\nAAAA", " AAAA", "AAAA ", "AA\tAA",
    "-_-_", "ÿÿÿÿ", "\u00ff\u00fe==", "\x00\x00\x00\x00", "data:audio/x-mulaw;base64,//8=", "%2F%2F8%3D",
    "//8=//8=", "//8", "=", "====",
)
_NUMBERS = (
    "1e999", "-1e999", "1e-999", "1E+400", "-0", "0.0000000000000000000001", "18446744073709551616",
    "-9223372036854775809", "9007199254740993", "NaN", "Infinity", "-Infinity",
)


class Raw(str):
    """JSON text put into a frame verbatim (numbers json.dumps cannot write, NaN, deep nesting)."""


class Pairs(list[tuple[str, Any]]):
    """A JSON object written from pairs, so a key may repeat."""


@dataclass(frozen=True, slots=True)
class Target:
    """A call that is live on another socket: hostile frames may name it."""

    call_id: str
    stream_id: str | None = None


@dataclass(frozen=True, slots=True)
class Hostile:
    """One frame and what made it.

    `above_cap`: larger than the message cap it was made for. `as_text`: bytes to send as a text frame (they
    are not UTF-8). `expect_close`: a correct server closes the socket on it whatever came before (above the
    cap, or not UTF-8), so a driver may wait for that before sending more. (A `stop` closes the stream only if
    it names the stream this socket started, which a mutated frame before it may already have ended.)
    """

    kind: str
    data: str | bytes
    above_cap: bool = False
    as_text: bool = False
    expect_close: bool = False


def frames(
    provider: Provider, seed: int, n: int, *, max_message: int = WS_MAX_MESSAGE, live: Sequence[Target] = ()
) -> Iterator[str | bytes]:
    """`n` hostile WebSocket messages for one connection; the same for the same arguments. A str is a text
    frame and bytes a binary one, except for the `bad_utf8_text` kind (see `Hostile.as_text`)."""
    return (h.data for h in hostile_frames(provider, seed, n, max_message=max_message, live=live))


def hostile_frames(
    provider: Provider, seed: int, n: int, *, max_message: int = WS_MAX_MESSAGE, live: Sequence[Target] = ()
) -> Iterator[Hostile]:
    """As `frames`, each frame with its kind."""
    return _Fuzzer(provider, seed, max_message, tuple(live)).run(n)


def aimed(
    provider: Provider, seed: int, n: int, target: Target, *, max_message: int = WS_MAX_MESSAGE
) -> Iterator[Hostile]:
    """`n` frames that all name `target`: hijacking starts, and media / marks / DTMF / stops for its stream."""
    fuzzer = _Fuzzer(provider, seed, max_message, (target,))
    for _ in range(n):
        yield fuzzer.finish("live", fuzzer.live())


def media_of_size(provider: Provider, stream_id: str, size: int, tail: bytes = b"") -> str:
    """A well-formed media frame of about `size` characters: mu-law silence ending in `tail`."""
    leg = _Leg(provider, "", stream_id)
    overhead = len(_dumps(_media(leg, 1, b"")))
    n = max(len(tail), (size - overhead) * 3 // 4)
    payload = bytes([0xFF]) * (n - len(tail)) + tail
    return _dumps(_media(leg, 1, payload))


# --- the real shapes ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leg:
    """The little of a call the wire builders need (wire.Leg)."""

    provider: Provider
    call_id: str
    stream_id: str
    account_id: str = "AC" + "0" * 32
    public_url: str = "http://127.0.0.1"
    from_number: str = "+14155550100"
    to_number: str = "+14155550199"

    @property
    def custom_parameters(self) -> dict[str, str]:
        return {}

    @property
    def extra_headers(self) -> str:
        return ""


def _media(leg: _Leg, chunk: int, payload: bytes) -> dict[str, Any]:
    # A fixed epoch: wire.media_message takes it as an argument, so nothing here reads the clock.
    message = wire.media_message(leg, chunk, chunk * 20.0, 1_767_225_600_000.0, payload)
    message["sequenceNumber"] = str(chunk + 1) if leg.provider == "twilio" else chunk + 1
    return message


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- the fuzzer --------------------------------------------------------------------------------------------


class _Fuzzer:
    def __init__(self, provider: Provider, seed: int, max_message: int, live: tuple[Target, ...]) -> None:
        if provider not in ("twilio", "plivo"):
            raise ValueError(f"unknown provider {provider!r}")
        # A str seed is hashed with SHA-512: the same frames on every run and every machine.
        self.rng = random.Random(f"bargein-fuzz:{provider}:{seed}")
        self.provider: Provider = provider
        self.other: Provider = "plivo" if provider == "twilio" else "twilio"
        self.cap = max_message
        self.targets = live
        self.chunk = 0
        self.leg = self._new_leg()
        kinds = list(_KINDS) + ([("live", _LIVE_WEIGHT)] if live else [])
        self._kinds = [k for k, _ in kinds]
        self._weights = [w for _, w in kinds]

    # -- ids ---------------------------------------------------------------------------------------------

    def _hex(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))

    def _uuid(self) -> str:
        h = self._hex(32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:]}"

    def _new_leg(self) -> _Leg:
        if self.provider == "twilio":
            return _Leg("twilio", "CA" + self._hex(32), "MZ" + self._hex(32))
        return _Leg("plivo", self._uuid(), self._uuid(), account_id="MA" + self._hex(18).upper())

    def _other_stream(self) -> str:
        return "MZ" + self._hex(32) if self.provider == "twilio" else self._uuid()

    # -- driver ------------------------------------------------------------------------------------------

    def run(self, n: int) -> Iterator[Hostile]:
        emitted = 0
        if n > 0 and self.rng.random() < 0.7:  # most connections start their own stream first
            for frame in self._opening():
                if emitted < n:
                    yield frame
                    emitted += 1
        while emitted < n:
            kind = self.rng.choices(self._kinds, self._weights)[0]
            frame = self.finish(kind, getattr(self, kind)())
            yield frame
            emitted += 1
            if (frame.expect_close or kind == "stop") and self.rng.random() < 0.5:
                # What a reconnecting edge sends first on its new socket (the driver reconnects after a close).
                self.leg = self._new_leg()
                for frame in self._opening():
                    if emitted < n:
                        yield frame
                        emitted += 1

    def _opening(self) -> list[Hostile]:
        out = []
        if self.provider == "twilio" and self.rng.random() < 0.8:
            out.append(self.finish("opening", _dumps(wire.twilio_connected())))
        out.append(self.finish("opening", _dumps(self._start(self.leg))))
        return out

    def finish(self, kind: str, data: str | bytes) -> Hostile:
        if isinstance(data, str):
            try:
                data.encode("utf-8")
            except UnicodeEncodeError:
                # Lone surrogates: a text frame must be UTF-8, so write them as JSON escapes (\\ud800).
                data = data.encode("utf-8", "backslashreplace").decode("utf-8")
        size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
        as_text = kind == "bad_utf8_text"
        above = size > self.cap
        return Hostile(kind, data, above, as_text, above or as_text)

    # -- values ------------------------------------------------------------------------------------------

    def _hostile_string(self) -> str:
        r = self.rng.random()
        if r < 0.55:
            return self.rng.choice(_HOSTILE_STRINGS)
        if r < 0.7:
            return "x" + self.rng.choice(_ANSI) + "y\n" + self.rng.choice(_ANSI)
        if r < 0.8:  # every C0 control character, and DEL
            return "".join(chr(c) for c in self.rng.sample([*range(32), 127], 6))
        if r < 0.9:
            return "".join(chr(self.rng.randrange(0x20, 0x2FFF)) for _ in range(self.rng.randrange(1, 40)))
        return self.rng.choice("Aé\u4e2d\U0001f600") * self.rng.randrange(100, max(101, self.cap // 8))

    def _number(self) -> Raw:
        if self.rng.random() < 0.3:
            return Raw("9" * self.rng.choice((20, 400, 4400, 10_000)))  # past int_max_str_digits at 4300
        return Raw(self.rng.choice(_NUMBERS))

    def _nested(self) -> Raw:
        depth = min(self.rng.choice((64, 512, 1100, 5000, 30_000)), max(8, self.cap // 2 - 16))
        if self.rng.random() < 0.5:
            return Raw("[" * depth + "]" * depth)
        if self.rng.random() < 0.5:
            return Raw('{"a":' * depth + "1" + "}" * depth)
        return Raw("[" * depth)  # never closed

    def _value(self) -> Any:
        r = self.rng.randrange(12)
        return (
            lambda: self.rng.randrange(-(2**31), 2**31),
            lambda: self.rng.uniform(-1e6, 1e6),
            lambda: self.rng.random() < 0.5,
            lambda: None,
            self._hostile_string,
            lambda: [],
            lambda: {},
            lambda: [self._hostile_string(), 1, None],
            lambda: {"nested": {"payload": "//8="}},
            self._number,
            self._nested,
            lambda: Raw(self.rng.choice(("NaN", "Infinity", "-Infinity"))),
        )[r]()

    def _payload(self, size: int, loud: float = 0.5) -> bytes:
        """mu-law bytes: noise (loud enough for the VAD to run its model) or line silence."""
        if self.rng.random() < loud:
            return self.rng.randbytes(size)
        return bytes([0xFF]) * size

    # -- frames ------------------------------------------------------------------------------------------

    def _start(self, leg: _Leg) -> dict[str, Any]:
        message = wire.start_message(leg)
        message["sequenceNumber"] = "1" if leg.provider == "twilio" else 1
        if leg.provider == "plivo" and self.rng.random() < 0.5:
            message["extra_headers"] = json.dumps({"tenant": "acme"})  # the JSON-string form of the recordings
        return message

    def _real(self, provider: Provider | None = None, leg: _Leg | None = None) -> dict[str, Any]:
        """One of the frames the edge really sends, for this connection's stream."""
        provider = provider or self.provider
        leg = leg or self.leg
        if provider != leg.provider:
            leg = _Leg(provider, leg.call_id, leg.stream_id)
        self.chunk += 1
        r = self.rng.random()
        if r < 0.45:
            return _media(leg, self.chunk, self._payload(self.rng.choice((160, 160, 80, 320))))
        if r < 0.6:
            return self._start(leg)
        if r < 0.75:
            return wire.ack_message(leg, f"g{self.rng.randrange(5)}-{self.rng.randrange(200)}")
        if r < 0.85:
            return self._dtmf(leg, self.rng.choice("0123456789*#"))
        if r < 0.92:
            return wire.stop_message(leg)
        if provider == "twilio":
            return wire.twilio_connected()
        return wire.cleared_audio(leg)

    def _dtmf(self, leg: _Leg, digit: Any) -> dict[str, Any]:
        if leg.provider == "twilio":
            return {"event": "dtmf", "streamSid": leg.stream_id, "dtmf": {"track": "inbound_track", "digit": digit}}
        # wire.dtmf_message stamps the wall clock; the fuzzer stays pure.
        return {"event": "dtmf", "streamId": leg.stream_id, "dtmf": {"track": "inbound", "digit": digit,
                                                                      "timestamp": "1767225600000"}}

    def media(self) -> str:
        self.chunk += 1
        return _dumps(_media(self.leg, self.chunk, self._payload(160)))

    def mutated(self) -> str:
        message: Any = self._real()
        for _ in range(self.rng.choice((1, 1, 2, 3))):
            message = self._mutate(message)
        return self._serialise(message)

    def _slots(self, value: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        """Every (container, key) in a message tree."""
        if isinstance(value, dict):
            for key, item in value.items():
                out.append((value, key))
                self._slots(item, out)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                out.append((value, i))
                self._slots(item, out)
        return out

    def _mutate(self, message: Any) -> Any:
        if not isinstance(message, dict):
            return message
        slots = self._slots(message, [])
        op = self.rng.randrange(9)
        if op == 8:  # a key twice, with different values: which one wins is the parser's choice
            key = self.rng.choice(list(message) or ["event"])
            pairs = Pairs(message.items())
            pairs.insert(self.rng.randrange(len(pairs) + 1), (key, self._value()))
            return pairs
        if not slots:
            return message
        container, key = self.rng.choice(slots)
        if op == 0:
            del container[key]
        elif op == 1:
            container[key] = self._value()
        elif op == 2:
            container[key] = self._hostile_string()
        elif op == 3:
            container[key] = self._number()
        elif op == 4:
            container[key] = self._nested()
        elif op == 5 and isinstance(container, dict):
            renamed = self.rng.choice((key.upper(), key.lower(), key + " ", " " + key, key + "\u200b", key[:-1]))
            container[renamed] = container.pop(key)
        elif op == 6 and isinstance(container, dict):
            container[self._hostile_string() or "extra"] = self._value()
        else:  # another stream's id wherever this stream's id is
            for slot, name in slots:
                if slot[name] == self.leg.stream_id:
                    slot[name] = self._other_stream()
        return message

    def _serialise(self, value: Any) -> str:
        ascii_only = self.rng.random() < 0.5
        comma, colon = (",", ":") if self.rng.random() < 0.8 else (" ,\n\t", " : ")

        def dump(v: Any) -> str:
            if isinstance(v, Raw):
                return str(v)
            if isinstance(v, Pairs):
                return "{" + comma.join(dump(str(k)) + colon + dump(x) for k, x in v) + "}"
            if isinstance(v, dict):
                return "{" + comma.join(dump(str(k)) + colon + dump(x) for k, x in v.items()) + "}"
            if isinstance(v, list):
                return "[" + comma.join(dump(x) for x in v) + "]"
            return json.dumps(v, ensure_ascii=ascii_only)

        return dump(value)

    def truncated(self) -> str:
        text = self.mutated() if self.rng.random() < 0.3 else _dumps(self._real())
        return text[: self.rng.randrange(1, len(text))] if len(text) > 1 else "{"


    def bad_media(self) -> str:
        message = _media(self.leg, self.chunk + 1, b"")
        self.chunk += 1
        media = message["media"]
        r = self.rng.random()
        if r < 0.45:
            media["payload"] = self.rng.choice(_BAD_B64)
        elif r < 0.6:  # odd and tiny lengths: valid base64, any number of samples
            media["payload"] = base64.b64encode(self._payload(self.rng.choice((0, 1, 2, 3, 7, 159, 161, 321)))).decode()
        elif r < 0.7:  # valid base64 with its padding cut, or whitespace in it
            good = base64.b64encode(self._payload(self.rng.choice((1, 2, 4, 5, 160)))).decode()
            media["payload"] = good.rstrip("=") if self.rng.random() < 0.5 else good[:4] + "\r\n" + good[4:]
        elif r < 0.8:
            media["payload"] = self._value()
        elif r < 0.85:
            media["payload"] = base64.b64encode(b"RIFF\x24\x08\x00\x00WAVEfmt " + self._payload(150)).decode()
        elif r < 0.9:
            media["track"] = self.rng.choice(("outbound", "both", "", None, 1, "INBOUND"))
        elif r < 0.95:
            for key in ("chunk", "timestamp"):
                media[key] = self.rng.choice((self._number(), self._value(), "-1", "1.5", "0x10"))
        else:
            message["media"] = self.rng.choice(([], "payload", None, self._nested()))
        return self._serialise(message)

    def big_media(self) -> str:
        # Log-uniform between 4 KB and the cap: most big frames are a few KB, some fill the message.
        size = int(4096 * (self.cap / 4096) ** self.rng.random()) - 64
        return self._sized_media(max(size, 512))

    def _sized_media(self, size: int) -> str:
        self.chunk += 1
        overhead = len(_dumps(_media(self.leg, self.chunk, b"")))
        payload = self._payload(max(0, (size - overhead) * 3 // 4), loud=0.3)
        return _dumps(_media(self.leg, self.chunk, payload))

    def over_cap(self) -> str | bytes:
        size = self.rng.randrange(self.cap + 1, 2 * self.cap + 2)
        r = self.rng.random()
        if r < 0.6:
            return self._sized_media(size + 64)
        if r < 0.8:
            return _dumps({"event": "media", "x": "A" * size})
        return self.rng.randbytes(size)

    def unknown_event(self) -> str:
        known = {"twilio": {"connected", "start", "media", "mark", "dtmf", "stop"},
                 "plivo": {"start", "media", "playedStream", "clearedAudio", "dtmf", "stop"}}[self.provider]
        names = ["Media", "MEDIA", "media ", " start", "closed", "error", "transcription", "playAudio", "checkpoint",
                 "clearAudio", "sendDTMF", "clear", "__proto__", "", "\x1b[31mmedia", "media\n", "stop\x00"]
        names += sorted({"mark", "playedStream", "clearedAudio", "connected"} - known)
        event = self.rng.choice([*names, self._hostile_string()])
        if event in known:
            event += "?"
        message: dict[str, Any] = {"event": event}
        sid = "streamSid" if self.provider == "twilio" else "streamId"
        if self.rng.random() < 0.7:
            message[sid] = self.leg.stream_id
        if self.rng.random() < 0.5:
            message["media"] = {"payload": base64.b64encode(self._payload(160)).decode()}
        return self._serialise(message)

    def mark(self) -> str:
        name: Any = self.rng.choice(
            (f"g{self.rng.randrange(10)}-{self.rng.randrange(1000)}", "0", "mark", self._hostile_string(),
             "m" * self.rng.randrange(1, 4000), self._value())
        )
        if self.provider == "twilio":
            return self._serialise({"event": "mark", "sequenceNumber": "9", "streamSid": self.leg.stream_id,
                                    "mark": {"name": name}})
        return self._serialise({"event": "playedStream", "sequenceNumber": 9, "streamId": self.leg.stream_id,
                                "name": name})

    def start(self) -> str:
        r = self.rng.random()
        if r < 0.3:  # a second start for this socket's own stream
            return _dumps(self._start(self.leg))
        if r < 0.5:  # a start for another stream and call
            return _dumps(self._start(self._new_leg()))
        message = self._start(self.leg)
        fmt = message["start"]["mediaFormat"]
        if r < 0.65:
            fmt["encoding"] = self.rng.choice(("audio/l16", "audio/x-l16;rate=16000", "", "audio/x-mulaw\n",
                                               self._hostile_string(), self._value()))
        elif r < 0.75:
            fmt["sampleRate"] = self.rng.choice((16000, 0, -8000, "8000", 8000.0, 8000.5, self._number()))
        elif r < 0.85 and self.provider == "plivo":
            message["extra_headers"] = self.rng.choice(("k=v;k=v", "=v", "{bad json", '{"a": [1, {"b": null}]}',
                                                        ";;;,,,", 5, ["x"], self._hostile_string()))
        elif r < 0.85:
            message["start"]["customParameters"] = self.rng.choice(({"k": 1, "n": None, "l": [1]}, "k=v", [],
                                                                    {self._hostile_string(): self._hostile_string()}))
        else:
            return self.mutated_start(message)
        return self._serialise(message)

    def mutated_start(self, message: dict[str, Any]) -> str:
        for _ in range(self.rng.choice((1, 2))):
            message = self._mutate(message)
        return self._serialise(message)

    def stop(self) -> str:
        leg = self.leg if self.rng.random() < 0.6 else _Leg(self.provider, self.leg.call_id, self._other_stream())
        return _dumps(wire.stop_message(leg))

    def bad_utf8_text(self) -> bytes:
        good = _dumps(self._real()).encode()
        cut = self.rng.randrange(len(good))
        bad = self.rng.choice((b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x80", b"\xf4\x90\x80\x80"))
        return good[:cut] + bad + good[cut:]

    def binary(self) -> bytes:
        r = self.rng.random()
        if r < 0.35:
            return self.rng.randbytes(self.rng.randrange(0, 1024))
        if r < 0.55:  # invalid UTF-8: lone continuation bytes, overlong forms, surrogates, truncated sequences
            return self.rng.choice((b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x80", b"\xf8\x88\x80"))
        if r < 0.85:  # a good frame, sent as binary
            return _dumps(self._real()).encode()
        return b"\x1f\x8b\x08\x00" + self.rng.randbytes(self.rng.randrange(16, 4096))  # a gzip header

    def garbage(self) -> str:
        r = self.rng.random()
        if r < 0.3:
            text = "".join(chr(self.rng.randrange(1, 0xD7FF)) for _ in range(self.rng.randrange(1, 300)))
        elif r < 0.5:
            text = "".join(self.rng.choice(string.printable) for _ in range(self.rng.randrange(1, 300)))
        else:
            good = _dumps(self._real())
            text = self.rng.choice((
                "{not json", "{'event': 'media'}", good + "xyz", good + good, "\ufeff" + good, "/*c*/" + good,
                good.replace('"', "'"), "", " ", "\x00", "{", "}", "{{}}", '{"event":"media",}', "event=media",
            ))
        try:
            json.loads(text)
        except (ValueError, RecursionError):
            return text
        return "~" + text  # valid JSON by chance: make it garbage again

    def non_object(self) -> str:
        return self._serialise(self.rng.choice((
            [], 1, "media", None, True, [{"event": "media"}], self._nested(), Raw("NaN"),
            {"event": self.rng.choice((5, None, ["media"], {"name": "media"}, True, self._number()))},
            {"Event": "media"}, {},
        )))

    def cross(self) -> str:
        return self._serialise(self._real(self.other))

    def dtmf(self) -> str:
        digit = self.rng.choice(("5", "#", "*", "D", "d", "12", "x", "", 5, None, self._hostile_string()))
        return self._serialise(self._dtmf(self.leg, digit))

    def live(self) -> str:
        """A frame that names a live call on another socket."""
        target = self.rng.choice(self.targets)
        stream = target.stream_id or self._other_stream()
        r = self.rng.random()
        if r < 0.35:  # hijack: start a stream for the live call (its own stream id, or a new one)
            sid = stream if self.rng.random() < 0.5 else self._other_stream()
            return _dumps(self._start(_Leg(self.provider, target.call_id, sid)))
        leg = _Leg(self.provider, target.call_id, stream)
        if r < 0.6:
            self.chunk += 1
            return _dumps(_media(leg, self.chunk, self._payload(160, loud=0.8)))
        if r < 0.75:
            return _dumps(wire.ack_message(leg, f"g{self.rng.randrange(4)}-{self.rng.randrange(60)}"))
        if r < 0.85:
            return _dumps(self._dtmf(leg, "1"))
        if r < 0.92 and self.provider == "plivo":
            return _dumps(wire.cleared_audio(leg))
        return _dumps(wire.stop_message(leg))
