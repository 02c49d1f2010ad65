"""An OpenAI-compatible speech endpoint (`POST {base}/audio/speech`) behind the `TtsEngine` interface.

The request is OpenAI's: JSON `{"model", "input", "voice", "response_format"}` with `Authorization: Bearer <key>`;
the reply body is the audio, streamed (chunked) as it is made. Two formats are taken:

- `pcm` (the default): raw 16-bit signed little-endian mono at 24 kHz, no header (OpenAI's text-to-speech guide);
- `wav`: the same in a RIFF container, whose header names the rate. A streamed WAV may carry a placeholder data
  size (the length is not known when the header goes out), so the data runs to the end of the body.

Either way the audio is resampled to `sample_rate` (8 kHz for the phone; providers/resample.py, no delay).

**No alignment from the vendor.** The endpoint returns audio only, so the word timings are estimated
(`estimate_words`): the voiced stretch of the audio is found (10 ms frames above the noise floor); if the
audio has as many pauses (>= `PAUSE_MS` of silence) as the text has clause breaks (, ; : . ? ! inside it), each
clause is laid over its own voiced stretch; otherwise the whole text is laid over the whole voiced stretch.
Inside a stretch, each word gets time in proportion to its characters (plus one for the space after it).
`Synthesis` then finds each word's sound end in the audio, as for every engine. The estimate is good to a
word or so where the speaker's pace is even and worse across long words; a barge-in cut is only as exact as
that (tests/tts/test_openai_speech.py measures it against espeak's own timings).

Failures: a refused request (401, 404, 429, 5xx) carries OpenAI's `{"error": {"message": ...}}` body; it becomes a
`ProviderError` (retryable for 429 and 5xx), with the vendor's message cut short (not for 401/403: OpenAI's
message there echoes part of the key). A body that stops arriving for
`read_timeout_s` is a `ProviderTimeout`; a connection dropped mid-body is a retryable `ProviderError`. The
key goes in the header only, never into a message or a log line.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Sequence

import httpx
import numpy as np
import numpy.typing as npt

from providers.errors import ProviderError, ProviderTimeout
from providers.resample import resample
from providers.tts.base import Synthesis, WordTiming, word_spans

Pcm16 = npt.NDArray[np.int16]

OPENAI_PCM_RATE = 24_000  # response_format="pcm" is always 24 kHz
MAX_BODY_BYTES = 32 * 1024 * 1024  # 4096 input characters are about 5 minutes: 14 MB at 24 kHz
PAUSE_MS = 150.0  # silence inside speech that counts as a clause pause
_FRAME_MS = 10
_VOICED_FLOOR = 20.0  # frame RMS in int16 units below which a frame is silent...
_VOICED_RELATIVE = 0.01  # ...or below this share of the loudest frame's RMS
_CLAUSE_END = ",;:.?!"
_ERROR_CHARS = 200


# ---- word timings estimated from the audio (pure) -----------------------------------------------------------


def _voiced(pcm: Pcm16, sample_rate: int) -> npt.NDArray[np.bool_]:
    frame = max(1, sample_rate * _FRAME_MS // 1000)
    n = int(pcm.shape[0]) // frame
    if n == 0:
        return np.zeros(0, dtype=bool)
    samples = pcm[: n * frame].astype(np.float64).reshape(n, frame)
    rms = np.sqrt(np.mean(samples * samples, axis=1))
    voiced: npt.NDArray[np.bool_] = rms > max(_VOICED_FLOOR, _VOICED_RELATIVE * float(rms.max()))
    return voiced


def _stretches(voiced: npt.NDArray[np.bool_]) -> list[tuple[float, float]]:
    """Voiced stretches (ms) separated by silences of at least PAUSE_MS; shorter gaps are inside speech."""
    hits = np.flatnonzero(voiced)
    if hits.size == 0:
        return []
    min_gap = int(PAUSE_MS // _FRAME_MS)
    out: list[tuple[float, float]] = []
    start = prev = int(hits[0])
    for f in hits[1:]:
        f = int(f)
        if f - prev - 1 >= min_gap:
            out.append((start * float(_FRAME_MS), (prev + 1) * float(_FRAME_MS)))
            start = f
        prev = f
    out.append((start * float(_FRAME_MS), (prev + 1) * float(_FRAME_MS)))
    return out


def _spread(spans: Sequence[tuple[int, int, int]], t0: float, t1: float) -> list[float]:
    """Start times of `spans` laid over [t0, t1) in proportion to their characters (plus a space each)."""
    weights = [token_end - start + 1 for start, _, token_end in spans]
    total = float(sum(weights)) or 1.0
    out, acc = [], 0
    for w in weights:
        out.append(t0 + (t1 - t0) * acc / total)
        acc += w
    return out


def estimate_words(text: str, pcm: Pcm16, sample_rate: int) -> tuple[WordTiming, ...]:
    """Word timings for audio that came without any (see the module docstring)."""
    spans = word_spans(text)
    stretches = _stretches(_voiced(pcm, sample_rate))
    if not spans or not stretches:
        return ()
    # Clause groups: a token ending in clause punctuation closes its group (the last token always does).
    groups: list[list[tuple[int, int, int]]] = [[]]
    for k, span in enumerate(spans):
        groups[-1].append(span)
        if text[span[2] - 1] in _CLAUSE_END and k + 1 < len(spans):
            groups.append([])
    starts: list[float] = []
    if len(groups) == len(stretches) > 1:
        for group, (t0, t1) in zip(groups, stretches, strict=True):
            starts.extend(_spread(group, t0, t1))
    else:
        starts = _spread(spans, stretches[0][0], stretches[-1][1])
    words: list[WordTiming] = []
    for (start, end, _), ms in zip(spans, starts, strict=True):
        if words and ms <= words[-1].audio_ms:
            continue  # strictly increasing, as the ledger's map needs
        words.append(WordTiming(char_start=start, char_end=end, audio_ms=ms))
    return tuple(words)


# ---- the audio body (pure) ----------------------------------------------------------------------------------


def decode_pcm(body: bytes, sample_rate: int = OPENAI_PCM_RATE) -> tuple[Pcm16, int]:
    """Raw s16le mono: the samples (a trailing odd byte dropped) and their rate."""
    usable = len(body) - len(body) % 2
    return np.frombuffer(body[:usable], dtype="<i2").astype(np.int16), sample_rate


def decode_wav(body: bytes) -> tuple[Pcm16, int]:
    """A RIFF/WAVE body of 16-bit PCM mono; the data chunk runs to the end of the body whatever size it says."""
    if len(body) < 12 or body[:4] != b"RIFF" or body[8:12] != b"WAVE":
        raise ValueError("not a WAV body")
    pos, rate = 12, 0
    while pos + 8 <= len(body):
        chunk_id, size = body[pos : pos + 4], struct.unpack("<I", body[pos + 4 : pos + 8])[0]
        pos += 8
        if chunk_id == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", body[pos : pos + 8])
            bits = struct.unpack("<H", body[pos + 14 : pos + 16])[0]
            if fmt not in (1, 0xFFFE) or channels != 1 or bits != 16:
                raise ValueError(f"WAV format {fmt}, {channels} channels, {bits} bits: want 16-bit PCM mono")
        elif chunk_id == b"data":
            if not rate:
                raise ValueError("WAV data before its fmt chunk")
            return decode_pcm(body[pos:], rate)
        pos += size + (size & 1)
    raise ValueError("WAV body without a data chunk")


def error_message(status: int, body: bytes) -> str:
    """The vendor's error message from an OpenAI-style error body, cut short; the status if there is none."""
    message = ""
    try:
        parsed = json.loads(body)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("code") or "")
        elif isinstance(error, str):
            message = error
    except ValueError:
        message = body[:_ERROR_CHARS].decode("utf-8", "replace")
    message = " ".join(message.split())[:_ERROR_CHARS]
    return f"openai speech: HTTP {status}" + (f": {message}" if message else "")


# ---- the engine ---------------------------------------------------------------------------------------------


class OpenAiSpeechTts:
    """`POST {base_url}/audio/speech`, one request per sentence (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        model: str = "tts-1",
        voice: str = "alloy",
        response_format: str = "pcm",
        sample_rate: int = 8000,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
        speed: float = 1.0,
    ) -> None:
        if response_format not in ("pcm", "wav"):
            raise ValueError(f"response_format must be pcm or wav, got {response_format!r}")
        self.url = base_url.rstrip("/") + "/audio/speech"
        self._api_key = api_key
        self.model = model
        self.voice = voice
        self.response_format = response_format
        self.sample_rate = sample_rate
        timeout = httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=5.0, pool=5.0)
        self.speed = speed  # the API's `speed` (0.25-4.0); sent only when not 1
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout, trust_env=False)

    def __repr__(self) -> str:  # never the key
        return f"OpenAiSpeechTts({self.url!r}, model={self.model!r}, voice={self.voice!r})"

    @property
    def identity(self) -> str:
        """Everything that changes the output for a text (the cache key's first half)."""
        pace = "" if self.speed == 1.0 else f":speed={self.speed:g}"
        return f"openai:{self.url}:{self.model}:{self.voice}:{self.response_format}:{self.sample_rate}{pace}"

    def paced(self, factor: float) -> OpenAiSpeechTts:
        """The same voice at `factor` x this handle's speed, on this handle's HTTP client (closed with it)."""
        paced = OpenAiSpeechTts(self.url.removesuffix("/audio/speech"), self._api_key, model=self.model,
                                voice=self.voice, response_format=self.response_format,
                                sample_rate=self.sample_rate, client=self._client,
                                speed=min(max(self.speed * factor, 0.25), 4.0))
        return paced

    async def synthesize(self, text: str) -> Synthesis:
        if not text.strip():
            return Synthesis(text=text, pcm=np.zeros(0, dtype=np.int16), sample_rate=self.sample_rate, words=())
        body = await self._fetch(text)
        # Decoding, resampling and the estimate take a few ms per second of speech: off the event loop.
        return await asyncio.to_thread(self._build, text, body)

    def _build(self, text: str, body: bytes) -> Synthesis:
        try:
            raw, rate = decode_wav(body) if self.response_format == "wav" else decode_pcm(body)
        except (ValueError, struct.error) as exc:
            raise ProviderError(f"openai speech: bad audio body: {exc}") from exc
        pcm = resample(raw, rate, self.sample_rate)
        return Synthesis(text=text, pcm=pcm, sample_rate=self.sample_rate,
                         words=estimate_words(text, pcm, self.sample_rate))

    async def _fetch(self, text: str) -> bytes:
        payload: dict[str, object] = {"model": self.model, "input": text, "voice": self.voice,
                                      "response_format": self.response_format}
        if self.speed != 1.0:
            payload["speed"] = self.speed
        headers = {"Authorization": f"Bearer {self._api_key}"}
        try:
            async with self._client.stream("POST", self.url, json=payload, headers=headers) as response:
                if response.status_code != 200:
                    head = await _read_capped(response, 4096)
                    status = response.status_code
                    # OpenAI's 401 message echoes a masked form of the key: it is not passed on.
                    message = (f"openai speech: HTTP {status}: the key was refused" if status in (401, 403)
                               else error_message(status, head))
                    if self._api_key:
                        message = message.replace(self._api_key, "***")
                    raise ProviderError(message, retryable=status == 429 or status >= 500)
                body = await _read_capped(response, MAX_BODY_BYTES)
                if len(body) >= MAX_BODY_BYTES:
                    raise ProviderError(f"openai speech: audio body past {MAX_BODY_BYTES} bytes")
                return body
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(f"openai speech: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:  # refused, reset, closed mid-body: the text says which, not the key
            raise ProviderError(f"openai speech: {type(exc).__name__}", retryable=True) from exc

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    out = bytearray()
    async for chunk in response.aiter_bytes():
        out += chunk
        if len(out) >= cap:
            break
    return bytes(out[:cap])
