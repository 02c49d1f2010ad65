"""Redaction on literal wire text of both providers: stream tokens never reach a recording."""

from __future__ import annotations

import json

from app.record.redact import (
    REDACTED,
    blank_payload,
    public_settings,
    redact_event_text,
    redact_extra_headers,
    redact_inbound,
    redact_record_text,
    scrub,
    strip_url_secrets,
)

TOKEN = "v1.CA0123.1764472800.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"

TWILIO_START = (
    '{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC0123","streamSid":"MZ0123",'
    '"callSid":"CA0123","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,'
    '"channels":1},"customParameters":{"token":"' + TOKEN + '","lang":"en"}},"streamSid":"MZ0123"}'
)
PLIVO_START = (
    '{"event":"start","sequenceNumber":0,"start":{"callId":"7a1c-uuid","streamId":"b2f0-uuid",'
    '"accountId":"MA0123","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000}},'
    '"extra_headers":"token=' + TOKEN + ';lang=en"}'
)
TWILIO_MEDIA = (
    '{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5",'
    '"payload":"//7+/w=="},"streamSid":"MZ0123"}'
)
PLIVO_MEDIA = (
    '{"event":"media","sequenceNumber":3,"streamId":"b2f0-uuid","media":{"track":"inbound",'
    '"timestamp":"1764472800123","chunk":2,"payload":"//7+/w=="}}'
)
TWILIO_OUT = '{"event":"media","streamSid":"MZ0123","media":{"payload":"fn5+fn5+"}}'
PLIVO_OUT = ('{"event":"playAudio","streamId":"b2f0-uuid","media":{"contentType":"audio/x-mulaw",'
             '"sampleRate":8000,"payload":"fn5+fn5+"}}')


def test_twilio_start_loses_its_token_and_keeps_everything_else() -> None:
    text, found = redact_inbound(TWILIO_START, drop_audio=False)
    assert TOKEN not in text and found == [TOKEN]
    msg = json.loads(text)
    assert msg["start"]["customParameters"] == {"token": REDACTED, "lang": "en"}
    original = json.loads(TWILIO_START)
    original["start"]["customParameters"]["token"] = REDACTED
    assert msg == original


def test_plivo_start_loses_its_token_in_every_extra_headers_form() -> None:
    text, found = redact_inbound(PLIVO_START, drop_audio=False)
    assert TOKEN not in text and found == [TOKEN]
    assert json.loads(text)["extra_headers"] == f"token={REDACTED};lang=en"
    assert redact_extra_headers(f"lang=en,Token={TOKEN}") == (f"lang=en,Token={REDACTED}", [TOKEN])
    as_json, found = redact_extra_headers(json.dumps({"X-Auth": TOKEN, "lang": "en"}))
    assert json.loads(as_json) == {"X-Auth": REDACTED, "lang": "en"} and found == [TOKEN]
    assert redact_extra_headers({"signature": TOKEN}) == ({"signature": REDACTED}, [TOKEN])
    assert redact_extra_headers(["token", TOKEN]) == (REDACTED, [])


def test_a_start_that_does_not_parse_is_dropped_if_it_could_hold_a_token() -> None:
    broken = TWILIO_START[:-3]
    assert redact_inbound(broken, drop_audio=False) == (REDACTED, [])
    assert redact_inbound('{"event":"start"', drop_audio=False) == ('{"event":"start"', [])


def test_media_frames_pass_untouched_unless_audio_is_redacted() -> None:
    for frame in (TWILIO_MEDIA, PLIVO_MEDIA):
        assert redact_inbound(frame, drop_audio=False) == (frame, [])
        blanked, _ = redact_inbound(frame, drop_audio=True)
        msg = json.loads(blanked)
        assert msg["media"]["payload"] == ""
        original = json.loads(frame)
        original["media"]["payload"] = ""
        assert msg == original
    spaced = '{"event": "media", "media": {"payload" : "AAAA"}}'
    assert json.loads(blank_payload(spaced))["media"]["payload"] == ""
    # A start with audio redaction on is redacted for both.
    text, _ = redact_inbound(TWILIO_START, drop_audio=True)
    assert TOKEN not in text


def test_agent_audio_is_blanked_for_both_providers() -> None:
    for frame in (TWILIO_OUT, PLIVO_OUT):
        msg = json.loads(blank_payload(frame))
        assert msg["media"]["payload"] == ""
    mark = '{"event":"mark","streamSid":"MZ0123","mark":{"name":"g1-m3"}}'
    assert blank_payload(mark) == mark


def test_text_redaction_empties_what_was_said_and_keeps_the_timing() -> None:
    assert redact_event_text({"type": "llm_token", "t": 1.5, "turn_id": 2, "text": "Sure"}) == {
        "type": "llm_token", "t": 1.5, "turn_id": 2, "text": ""}
    line = {"type": "turn_end", "t": 2.0, "turn_id": 2, "role": "agent", "text": "Hi there", "interrupted": True,
            "heard_text": "Hi", "heard_chars": 2, "heard_audio_ms": 200.0, "audio_ms": 900.0}
    assert redact_event_text(line) == {**line, "text": "", "heard_text": ""}
    vad = {"type": "vad", "t": 1.0, "state": "speaking"}
    assert redact_event_text(vad) is vad
    record = {"call_id": "CA1", "turns": [{"id": 1, "role": "agent", "text": "Hello", "intended_text": "Hello you",
                                           "heard_text": None}]}
    assert redact_record_text(record)["turns"] == [{"id": 1, "role": "agent", "text": "", "intended_text": "",
                                                    "heard_text": None}]


def test_settings_lose_secrets_and_url_userinfo() -> None:
    kept, omitted = public_settings({
        "twilio_auth_token": "abc", "llm_api_key": "sk-1", "admin_token": "", "twilio_webhook_keys": "k=v",
        "stream_token_ttl_s": 60.0, "plivo_enforce_upgrade_signature": True,
        "llm_base_url": "https://user:pw@llm.example.com/v1?key=sk-2", "max_calls": 200,
    })
    assert sorted(omitted) == ["admin_token", "llm_api_key", "twilio_auth_token", "twilio_webhook_keys"]
    assert kept == {"stream_token_ttl_s": 60.0, "plivo_enforce_upgrade_signature": True,
                    "llm_base_url": "https://llm.example.com/v1", "max_calls": 200}
    assert strip_url_secrets("plain text") == "plain text"


def test_scrub_replaces_every_known_secret() -> None:
    assert scrub(f"a {TOKEN} b {TOKEN}", [TOKEN, "other"]) == f"a {REDACTED} b {REDACTED}"


def test_a_plain_pcm_clients_start_loses_its_top_level_token() -> None:
    start = '{"event":"start","callId":"c1","token":"' + TOKEN + '","customParameters":{"lang":"en","apiKey":"k1"}}'
    text, found = redact_inbound(start, drop_audio=False)
    assert json.loads(text) == {"event": "start", "callId": "c1", "token": REDACTED,
                                "customParameters": {"lang": "en", "apiKey": REDACTED}}
    assert found == [TOKEN, "k1"]
