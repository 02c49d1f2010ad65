"""Speech recognition: `base.py` is the interface; `whisper.py` (embedded) and `deepgram.py` (hosted) implement it.

`create_engine` builds one from plain values (the app passes its settings; `providers` never imports `app`).
"""

from __future__ import annotations

from typing import Literal

from providers.stt.base import SttEngine


def create_engine(
    name: Literal["whisper", "deepgram"],
    *,
    workers: int = 1,
    max_pending: int = 16,
    partial_interval_ms: float | None = None,
    deepgram_api_key: str = "",
    deepgram_url: str = "wss://api.deepgram.com/v1/listen",
    deepgram_model: str | None = "nova-3",
    endpointing_ms: int | None = 300,
    utterance_end_ms: int | None = 1000,
    keepalive_s: float = 4.0,
    whisper_window: Literal["short", "full"] = "short",
) -> SttEngine:
    """The engine `name` (STT_ENGINE); raises ValueError for an unknown name or a missing Deepgram key."""
    if name == "whisper":
        from providers.stt.whisper import WhisperStt

        return WhisperStt(workers=workers, max_pending=max_pending, partial_interval_ms=partial_interval_ms or None,
                          window=whisper_window)
    if name == "deepgram":
        from providers.stt.deepgram import DeepgramStt

        return DeepgramStt(
            deepgram_api_key,
            url=deepgram_url,
            model=deepgram_model,
            endpointing_ms=endpointing_ms,
            utterance_end_ms=utterance_end_ms,
            keepalive_s=keepalive_s,
        )
    raise ValueError(f"unknown STT engine {name!r}")
