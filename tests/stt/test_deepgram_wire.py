"""Deepgram's wire format, parsed without a socket: literal messages in, typed results out."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

from providers.stt.base import Final, Partial, SttError, UtteranceEnd, Word
from providers.stt.deepgram_wire import (
    CLOSE_STREAM,
    KEEP_ALIVE,
    Metadata,
    Unknown,
    auth_header,
    close_error,
    listen_url,
    parse_message,
)

# Shaped like Deepgram's live Results (API reference, "Live Audio" response).
RESULTS_FINAL = json.dumps({
    "type": "Results",
    "channel_index": [0, 1],
    "duration": 1.98,
    "start": 0.5,
    "is_final": True,
    "speech_final": True,
    "channel": {"alternatives": [{
        "transcript": "Wait, no.",
        "confidence": 0.97,
        "words": [
            {"word": "wait", "start": 0.62, "end": 0.9, "confidence": 0.99, "punctuated_word": "Wait,"},
            {"word": "no", "start": 1.0, "end": 1.3, "confidence": 0.95, "punctuated_word": "no."},
        ],
    }]},
    "metadata": {"request_id": "r", "model_info": {"name": "n", "version": "v", "arch": "a"}, "model_uuid": "u"},
    "from_finalize": False,
})


def test_url_carries_the_options_deepgram_documents() -> None:
    url = listen_url("wss://api.deepgram.com/v1/listen", "mulaw", endpointing_ms=300, utterance_end_ms=1000)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("wss", "api.deepgram.com", "/v1/listen")
    params = dict(parse_qsl(parts.query))
    assert params == {
        "encoding": "mulaw", "sample_rate": "8000", "channels": "1", "interim_results": "true",
        "endpointing": "300", "punctuate": "true", "utterance_end_ms": "1000", "model": "nova-3",
    }
    assert dict(parse_qsl(urlsplit(listen_url("ws://x/v1/listen", "pcm16", endpointing_ms=None)).query))[
        "encoding"] == "linear16"
    assert dict(parse_qsl(urlsplit(listen_url("ws://x/v1/listen", "pcm16", endpointing_ms=None)).query))[
        "endpointing"] == "false"


def test_control_messages_and_auth() -> None:
    assert json.loads(KEEP_ALIVE) == {"type": "KeepAlive"}
    assert json.loads(CLOSE_STREAM) == {"type": "CloseStream"}
    assert auth_header("k3y") == ("Authorization", "Token k3y")


def test_final_results_map_onto_the_call_timeline() -> None:
    result = parse_message(RESULTS_FINAL, origin_ms=10_000.0)
    assert result == Final(
        text="Wait, no.",
        words=(Word("Wait,", 10_620.0, 10_900.0, 0.99), Word("no.", 11_000.0, 11_300.0, 0.95)),
        start_ms=10_500.0,
        end_ms=12_480.0,
        speech_final=True,
    )


def test_interim_results_are_partials_and_empty_ones_are_skipped() -> None:
    data = json.loads(RESULTS_FINAL)
    data["is_final"] = data["speech_final"] = False
    assert parse_message(json.dumps(data), 0.0) == Partial("Wait, no.", 500.0, 2480.0)
    data["channel"]["alternatives"][0]["transcript"] = ""
    assert parse_message(json.dumps(data), 0.0) is None


def test_is_final_without_speech_final() -> None:
    data = json.loads(RESULTS_FINAL)
    data["speech_final"] = False
    result = parse_message(json.dumps(data), 0.0)
    assert isinstance(result, Final) and not result.speech_final


def test_utterance_end_metadata_error_and_unknown() -> None:
    assert parse_message('{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.5}', 100.0) == UtteranceEnd(2600.0)
    meta = parse_message('{"type":"Metadata","request_id":"abc","duration":3.25,"channels":1}', 0.0)
    assert meta == Metadata("abc", 3250.0)
    error = parse_message('{"type":"Error","description":"bad audio","variant":"x"}', 0.0)
    assert isinstance(error, SttError) and "bad audio" in error.message
    assert parse_message('{"type":"SpeechStarted","timestamp":1.0}', 0.0) == Unknown(
        '{"type":"SpeechStarted","timestamp":1.0}')
    assert parse_message("not json", 0.0) == Unknown("not json")


def test_close_frames() -> None:
    assert close_error(1000, "") is None
    net = close_error(1011, "NET-0001")
    assert net is not None and net.retryable and "NET-0001" in net.message
    data = close_error(1008, "DATA-0000")
    assert data is not None and not data.retryable
