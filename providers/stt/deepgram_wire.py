"""Deepgram's live-transcription wire protocol (`/v1/listen`), without I/O: URLs and messages in, results out.

What goes over the socket (Deepgram docs, "Live Audio" API reference and the guides cited below):
- the client opens `wss://api.deepgram.com/v1/listen?<options>` with the header `Authorization: Token <key>`;
  the options here are `encoding` (`mulaw` or `linear16`), `sample_rate=8000`, `channels=1`,
  `interim_results=true`, `endpointing=<ms>` (pause that sets `speech_final`), `punctuate=true`,
  `utterance_end_ms=<ms>` (word gap that sends `UtteranceEnd`; needs interim results), and `model`;
- audio goes as binary frames; control messages go as text frames: `{"type": "KeepAlive"}` (no reply; without
  audio or a KeepAlive for 10 s the server closes with NET-0001: "Audio Keep Alive" guide, which asks for one
  every 3-5 s), `{"type": "CloseStream"}` (the server sends its last results and Metadata, then closes), and
  `{"type": "Finalize"}` (flush what was heard so far as a final);
- the server sends text frames: `Results` (`is_final`, `speech_final`, `start` and `duration` in seconds of the
  stream, `channel.alternatives[0]` with `transcript` and `words[]` of `word`, `punctuated_word`, `start`,
  `end`, `confidence`), `UtteranceEnd` (`last_word_end`), `Metadata` (`request_id`, `duration`, ...),
  `SpeechStarted` (only with `vad_events=true`, not asked for here), and on failure a close frame whose reason
  carries an error code (e.g. 1011 NET-0001, 1008 DATA-0000).

Stream times are seconds since the first byte of audio; `parse_message` maps them onto the call timeline by
adding `origin_ms`, the `at_ms` of the first frame fed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from providers.stt.base import AudioEncoding, Final, Partial, SttError, UtteranceEnd, Word

KEEP_ALIVE = json.dumps({"type": "KeepAlive"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})
FINALIZE = json.dumps({"type": "Finalize"})

_ENCODINGS: dict[str, str] = {"mulaw": "mulaw", "pcm16": "linear16"}


@dataclass(frozen=True, slots=True)
class Metadata:
    """Deepgram's summary of the stream, sent after CloseStream before the socket closes."""

    request_id: str
    duration_ms: float


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message this module does not know: logged by the session, never silently dropped."""

    raw: str


Message = Partial | Final | UtteranceEnd | SttError | Metadata | Unknown


def listen_url(
    base_url: str,
    encoding: AudioEncoding,
    *,
    model: str | None = "nova-3",
    endpointing_ms: int | None = 300,
    utterance_end_ms: int | None = 1000,
    punctuate: bool = True,
    extra: dict[str, str] | None = None,
) -> str:
    """The `/v1/listen` URL with our options; `endpointing_ms=None` sends `endpointing=false`."""
    params: dict[str, str] = {
        "encoding": _ENCODINGS[encoding],
        "sample_rate": "8000",
        "channels": "1",
        "interim_results": "true",
        "endpointing": "false" if endpointing_ms is None else str(endpointing_ms),
        "punctuate": "true" if punctuate else "false",
    }
    if utterance_end_ms is not None:
        params["utterance_end_ms"] = str(utterance_end_ms)
    if model:
        params["model"] = model
    params.update(extra or {})
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}{urlencode(params)}"


def auth_header(api_key: str) -> tuple[str, str]:
    """Deepgram's API-key header (an API key, not a bearer token)."""
    return ("Authorization", f"Token {api_key}")


def _ms(value: Any) -> float:
    return float(value) * 1000.0 if isinstance(value, int | float) else 0.0


def _words(raw: Any, origin_ms: float) -> tuple[Word, ...]:
    out: list[Word] = []
    for w in raw if isinstance(raw, list) else ():
        if not isinstance(w, dict):
            continue
        # punctuated_word is there when punctuate=true; `word` is the bare lower-case form.
        text = w.get("punctuated_word") or w.get("word") or ""
        confidence = w.get("confidence")
        out.append(
            Word(
                str(text),
                origin_ms + _ms(w.get("start")),
                origin_ms + _ms(w.get("end")),
                float(confidence) if isinstance(confidence, int | float) else 0.0,
            )
        )
    return tuple(out)


def parse_message(text: str, origin_ms: float) -> Message | None:
    """One text frame from the server as a typed message; None for an interim result with no words yet."""
    try:
        data = json.loads(text)
    except ValueError:
        return Unknown(text)
    if not isinstance(data, dict):
        return Unknown(text)
    kind = data.get("type")
    if kind == "Results":
        channel = data.get("channel")
        alternatives = channel.get("alternatives") if isinstance(channel, dict) else None
        best = alternatives[0] if isinstance(alternatives, list) and alternatives else {}
        if not isinstance(best, dict):
            return Unknown(text)
        transcript = str(best.get("transcript") or "")
        start_ms = origin_ms + _ms(data.get("start"))
        end_ms = start_ms + _ms(data.get("duration"))
        if not data.get("is_final"):
            return Partial(transcript, start_ms, end_ms) if transcript else None
        return Final(transcript, _words(best.get("words"), origin_ms), start_ms, end_ms, bool(data.get("speech_final")))
    if kind == "UtteranceEnd":
        return UtteranceEnd(origin_ms + _ms(data.get("last_word_end")))
    if kind == "Metadata":
        return Metadata(str(data.get("request_id") or ""), _ms(data.get("duration")))
    if kind == "Error":
        detail = data.get("description") or data.get("message") or data.get("err_msg") or "error"
        return SttError(f"deepgram: {detail}", retryable=False)
    return Unknown(text)


def close_error(code: int | None, reason: str) -> SttError | None:
    """What a close frame means: None for a normal close (1000), else a typed error.

    Deepgram puts its error code in the reason: NET-xxxx (network, timeouts: retryable), DATA-xxxx (audio it
    could not decode: not retryable).
    """
    if code == 1000:
        return None
    retryable = not reason.startswith("DATA-")
    return SttError(f"deepgram: socket closed ({code}) {reason}".rstrip(), retryable=retryable)
