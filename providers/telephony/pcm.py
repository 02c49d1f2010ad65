"""Plain PCM over a WebSocket (`/pcm/stream`), for harnesses and browser clients that speak no carrier dialect.

Wire format (our own; no carrier behind it):

- binary frames, both ways: raw little-endian PCM16 mono at the stream's rate (8000, 16000 or 24000 Hz, fixed
  per socket by the route from `?rate=`). Any even length; the caller's audio is cut into frames however the
  client likes (20 ms is what the carriers send).
- text frames in: `{"event":"start","callId":..,"token":..,"customParameters":{..}}` (optional first frame: it
  names the call and carries the per-call stream token when auth is on), `{"event":"mark","name":..}` (the echo
  of one of our marks once its audio has played), `{"event":"dtmf","digit":"5"}`, `{"event":"stop"}`.
- text frames out: `{"event":"mark","name":..}` after each chunk of agent audio, `{"event":"clear"}` on
  barge-in (drop everything queued for playback at once).

Marks cut by a clear should not be echoed (the client forgets them, as Plivo does with checkpoints), so
`acks_cleared_marks` is False; an echo that comes anyway names an old generation and is ignored by the ledger.

The session inside the server works in 8 kHz mu-law, the carriers' format, so this codec converts at the edge:
inbound PCM is resampled to 8 kHz and mu-law encoded into `AudioReceived`; outbound mu-law is decoded and
resampled to the client's rate. Both directions resample as a stream (`_StreamResampler`) so 20 ms frames join
without a click at every boundary; the price is a delay of about 5 ms (the filter's half width).

The TelephonyProtocol interface builds outbound frames as text (`media() -> str`), so `media()` returns the
frame's text form `{"event":"media","payload":<base64 PCM16>}` and `outbound(text)` turns it into the binary
frame the route writes (see `BinaryTelephonyProtocol` in base.py).
"""

from __future__ import annotations

import json
import math
from binascii import a2b_base64, b2a_base64
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from providers.mulaw import pcm16_to_ulaw, ulaw_to_pcm16
from providers.resample import resample
from providers.telephony.base import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    FrameError,
    dtmf_digit,
    optional_str,
    require_str,
    split_frame,
    string_map,
)
from providers.telephony.events import (
    AudioReceived,
    CallEnded,
    CallStarted,
    DtmfReceived,
    InvalidMessage,
    MarkPlayed,
    TelephonyEvent,
    UnknownEvent,
)

Pcm16 = npt.NDArray[np.int16]

RATES: Final = (8000, 16000, 24000)
DEFAULT_RATE: Final = 16000
SESSION_RATE: Final = 8000  # what the session consumes and produces (mu-law, like the carriers)

_MEDIA_HEAD: Final = '{"event":"media","payload":"'
_MARK_HEAD: Final = '{"event":"mark","name":'
_CLEAR: Final = '{"event":"clear"}'


# --- streaming resampler -------------------------------------------------------------------------------------


class _StreamResampler:
    """`providers.resample.resample` over a stream of frames, for integer ratios (8k <-> 16k / 24k).

    `resample` treats the audio outside its buffer as silence, so converting each 20 ms frame alone would put a
    small artefact at every boundary. This keeps enough past input to give every output sample the filter's full
    context on both sides, and holds back the outputs whose right-hand context has not arrived yet.
    """

    __slots__ = ("src", "dst", "up", "down", "ctx", "_hist", "_hist_start", "_next_out")

    def __init__(self, src: int, dst: int) -> None:
        g = math.gcd(src, dst)
        self.src, self.dst, self.up, self.down = src, dst, dst // g, src // g
        # The resampler's filter half width in input samples (32 zero crossings at 0.9 x the lower Nyquist,
        # providers/resample.py), rounded up to whole `down` groups so kept history stays on the output grid.
        half = math.ceil(32 / (2 * 0.9 * min(src, dst) / 2) * src) + 1
        self.ctx = -(-half // self.down) * self.down
        self.reset()

    def reset(self) -> None:
        self._hist: Pcm16 = np.zeros(0, dtype=np.int16)
        self._hist_start = 0  # absolute input index of _hist[0]; always a multiple of `down`
        self._next_out = 0  # absolute index of the next output sample to emit

    def feed(self, pcm: Pcm16) -> Pcm16:
        if self.src == self.dst:
            return pcm
        buf = np.concatenate((self._hist, pcm)) if len(self._hist) else pcm
        end = self._hist_start + len(buf)
        last = (end - 1 - self.ctx) * self.up // self.down  # the last output whose context has all arrived
        if last < self._next_out:
            self._hist = buf
            return np.zeros(0, dtype=np.int16)
        out = resample(buf, self.src, self.dst)
        base = self._hist_start * self.up // self.down
        emit = out[self._next_out - base : last - base + 1]
        self._next_out = last + 1
        keep = max(self._hist_start, self._next_out * self.down // self.up - self.ctx)
        keep -= keep % self.down
        self._hist = buf[keep - self._hist_start :]
        self._hist_start = keep
        return emit


# --- the codec -------------------------------------------------------------------------------------------------


class PcmProtocol:
    """Codec for one `/pcm/stream` WebSocket: PCM16 binary frames at `rate`, JSON text control frames."""

    name: Final = "pcm"
    # A clear drops our marks on the client side; nothing pending is ever echoed after it (like Plivo).
    acks_cleared_marks: Final = False

    __slots__ = ("stream_id", "call_id", "rate", "max_payload_bytes", "_in", "_out", "_chunk", "_in_samples")

    def __init__(self, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, rate: int = DEFAULT_RATE) -> None:
        if max_payload_bytes < 1:
            raise ValueError("max_payload_bytes must be positive")
        if rate not in RATES:
            raise ValueError(f"rate must be one of {', '.join(map(str, RATES))}")
        self.rate = rate
        # The cap is in mu-law bytes (ms x 8), as for the carriers: the same duration of PCM16 at our rate.
        self.max_payload_bytes = max_payload_bytes * 2 * rate // SESSION_RATE
        self.stream_id: str | None = None
        self.call_id: str | None = None
        self._in = _StreamResampler(rate, SESSION_RATE)
        self._out = _StreamResampler(SESSION_RATE, rate)
        self._chunk = 0
        self._in_samples = 0

    @staticmethod
    def start_frame(call_id: str, token: str | None = None, custom: dict[str, str] | None = None) -> str:
        """The text of a `start` frame (what a client sends first; the route builds one from a query string)."""
        frame: dict[str, Any] = {"event": "start", "callId": call_id}
        if token:
            frame["token"] = token
        if custom:
            frame["customParameters"] = custom
        return json.dumps(frame, separators=(",", ":"))

    # --- inbound ------------------------------------------------------------------------------------------

    def receive(self, text: str) -> list[TelephonyEvent]:
        """One inbound text (control) frame. Never raises on bad input."""
        split = split_frame(text)
        if isinstance(split, InvalidMessage):
            return [split]
        event, msg = split
        try:
            match event:
                case "mark":
                    self._require_started(event)
                    name = msg.get("name")
                    if not isinstance(name, str):
                        raise FrameError("mark.name missing or not a string")
                    return [MarkPlayed(name)]
                case "start":
                    return [self._on_start(msg)]
                case "dtmf":
                    self._require_started(event)
                    return [DtmfReceived(dtmf_digit(msg))]
                case "stop":
                    self._require_started(event)
                    return [CallEnded()]
                case _:
                    return [UnknownEvent(event, text)]
        except FrameError as exc:
            return [InvalidMessage(str(exc), text)]

    def receive_bytes(self, data: bytes) -> list[TelephonyEvent]:
        """One inbound binary frame: PCM16 LE mono at `rate`, returned as 8 kHz mu-law. Never raises."""
        raw = f"<{len(data)} bytes>"
        if self.stream_id is None:
            return [InvalidMessage("media before start", raw)]
        if len(data) % 2:
            return [InvalidMessage(f"binary frame of {len(data)} bytes is not whole PCM16 samples", raw)]
        if len(data) > self.max_payload_bytes:
            return [InvalidMessage(f"binary frame of {len(data)} bytes exceeds the {self.max_payload_bytes}-byte cap",
                                   raw)]
        pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
        timestamp_ms = self._in_samples * 1000 // self.rate
        self._in_samples += len(pcm)
        self._chunk += 1
        return [AudioReceived(pcm16_to_ulaw(self._in.feed(pcm)), self._chunk, timestamp_ms)]

    def _require_started(self, event: str) -> None:
        if self.stream_id is None:
            raise FrameError(f"{event} before start")

    def _on_start(self, msg: dict[str, Any]) -> CallStarted:
        if self.stream_id is not None:
            raise FrameError("start after the stream already started")
        call_id = require_str(msg, "callId", "start.callId")
        if len(call_id) > 128:
            raise FrameError("start.callId longer than 128 characters")
        custom = string_map(msg.get("customParameters"), "start.customParameters")
        token = optional_str(msg, "token", "start.token")
        if token is not None:
            custom["token"] = token
        self.call_id = call_id
        self.stream_id = f"pcm-{call_id}"  # one stream per socket; the id only has to be stable
        # What the session gets is what it always gets: 8 kHz mu-law, converted here.
        return CallStarted(call_id, self.stream_id, "", "audio/x-mulaw", SESSION_RATE, custom)

    # --- outbound -----------------------------------------------------------------------------------------

    def media(self, payload: bytes) -> str:
        """Text form of an audio frame: 8 kHz mu-law in, base64 PCM16 at `rate` inside; see `outbound`."""
        self._require_built("media")
        pcm = self._out.feed(ulaw_to_pcm16(payload)).astype("<i2").tobytes()
        return _MEDIA_HEAD + b2a_base64(pcm, newline=False).decode("ascii") + '"}'

    def mark(self, name: str) -> str:
        """`mark` frame; the client echoes the same text once the audio before it has played."""
        self._require_built("mark")
        return _MARK_HEAD + json.dumps(name) + "}"

    def clear(self) -> str:
        """`clear` frame: the client drops all queued audio at once. The outbound resampler starts afresh."""
        self._require_built("clear")
        self._out.reset()
        return _CLEAR

    def outbound(self, frame: str) -> str | bytes:
        """What goes on the socket for a frame built here: audio as binary PCM16, control frames as text."""
        if frame.startswith(_MEDIA_HEAD):
            return a2b_base64(frame[len(_MEDIA_HEAD) : -2])
        return frame

    @staticmethod
    def mark_name(frame: str) -> str | None:
        """The marker name in a `mark` frame built by `mark()`, else None."""
        if not frame.startswith(_MARK_HEAD):
            return None
        name = json.loads(frame[len(_MARK_HEAD) : -1])
        return name if isinstance(name, str) else None

    @staticmethod
    def is_clear(frame: str) -> bool:
        return frame == _CLEAR

    def _require_built(self, what: str) -> None:
        if self.stream_id is None:
            raise RuntimeError(f"pcm: cannot send {what} before start")
