"""TTS_ENGINE and its settings: build_tts (app/main.py) picks the engine, caches it, refuses a half-built one."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.main import build_tts
from app.settings import Settings
from providers.tts.cached import CachedTts
from providers.tts.elevenlabs import ElevenLabsTts
from providers.tts.espeak import EspeakTts
from providers.tts.openai_speech import OpenAiSpeechTts

KEY = "xi-build-secret-0123456789"


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, call_store_url="memory://", **values)


def test_each_engine_is_built_behind_the_cache() -> None:
    espeak = build_tts(settings(tts_espeak_processes=2))
    assert isinstance(espeak, CachedTts) and isinstance(espeak._inner, EspeakTts) and espeak._inner.processes == 2
    eleven = build_tts(settings(tts_engine="elevenlabs", elevenlabs_api_key=KEY, elevenlabs_voice_id="v1",
                                elevenlabs_url="ws://127.0.0.1:9", elevenlabs_warm_connections=0))
    assert isinstance(eleven, CachedTts) and isinstance(eleven._inner, ElevenLabsTts)
    assert eleven._inner.url.startswith("ws://127.0.0.1:9/v1/text-to-speech/v1/stream-input?")
    assert KEY not in eleven.identity
    openai = build_tts(settings(tts_engine="openai", llm_base_url="http://127.0.0.1:9/v1", llm_api_key=KEY,
                                tts_cache_max_mb=0))
    assert isinstance(openai, OpenAiSpeechTts) and openai.url == "http://127.0.0.1:9/v1/audio/speech"


@pytest.mark.parametrize(("values", "needs"), [
    ({"tts_engine": "elevenlabs", "elevenlabs_voice_id": "v1"}, "ELEVENLABS_API_KEY"),
    ({"tts_engine": "elevenlabs", "elevenlabs_api_key": KEY}, "ELEVENLABS_VOICE_ID"),
    ({"tts_engine": "openai"}, "OPENAI_TTS_BASE_URL"),
    ({"tts_engine": "polly"}, "tts_engine"),
])
def test_a_half_configured_engine_is_refused_without_echoing_the_key(values: dict[str, Any], needs: str) -> None:
    with pytest.raises(ValidationError) as info:
        settings(**values)
    assert needs in str(info.value)
    assert KEY not in str(info.value)
