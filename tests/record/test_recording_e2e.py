"""Recording real calls: the real app under uvicorn with RECORD_DIR set, the provider-edge emulator over a real
WebSocket, real speech from the corpus. What the file holds, what `bargein export` makes of it, what it never
holds (secrets), and a RECORD_DIR that cannot be written."""

from __future__ import annotations

import argparse
import asyncio
import logging
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.audio import pcm16_to_ulaw, ulaw_to_pcm16
from app.edge import wire
from app.edge.emulator import EmulatedCall
from app.offline.corpus import load_clip, read_manifest
from app.record import export
from app.record.format import Recording, decompress, read_recording, recording_path
from app.record.heard import agent_heard
from tests.conftest import LogCapture

GREETING = "Welcome. " + " ".join(["I will keep talking until you interrupt me."] * 6)
PUBLIC = "https://agent.example.com/voice"
TOKENS = {"twilio": "twilio-auth-token-for-tests", "plivo": "plivo-auth-token-for-tests"}


def speech() -> npt.NDArray[np.int16]:
    return load_clip(next(c for c in read_manifest() if c.category == "read"))[: int(1.2 * 8000)]


async def finished_recording(path: Path, timeout_s: float = 10.0) -> Recording:
    """The recording once the writer has closed it with the call record (it writes about once a second)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if path.exists():  # noqa: ASYNC240 - a test polling a local file
            rec = read_recording(path)
            if rec.record is not None and rec.record.get("end_reason") is not None:
                return rec
        if loop.time() > deadline:
            raise AssertionError(f"{path} has no final call record")
        await asyncio.sleep(0.05)


async def barge_in_call(provider: str, url: str, **kwargs: Any) -> tuple[EmulatedCall, list[float]]:
    async with EmulatedCall.start(provider, url, **kwargs) as call:
        await call.wait_until(lambda: call.played_samples > 8000, 10)  # a second of the greeting
        sent = await call.send_audio(speech())
        await call.wait_until(lambda: bool(call.clears), 5)
        await call.send_silence(0.3)
        await call.hangup()
    return call, sent


def test_a_recorded_barge_in_exports_to_a_wav_the_way_the_caller_heard_it(
    provider: str, server_factory: Any, tmp_path: Path
) -> None:
    srv = server_factory(agent_greeting=GREETING, record_dir=str(tmp_path / "calls"))

    async def scenario() -> tuple[EmulatedCall, list[float], Recording]:
        call, sent = await barge_in_call(provider, srv.url)
        rec = await finished_recording(recording_path(tmp_path / "calls", call.call_id))
        return call, sent, rec

    call, sent, rec = asyncio.run(scenario())
    assert call.clears, "no barge-in"
    h = rec.header
    assert (h["call_id"], h["stream_id"], h["provider"], h["redacted"]) == (call.call_id, call.stream_id, provider, [])
    assert rec.record is not None and rec.record["call_id"] == call.call_id and len(rec.record["bargeins"]) == 1
    types = {line["type"] for line in rec.lines}
    assert {"ws_in", "ws_out", "vad", "barge_in", "clear", "mark_sent", "turn_end", "call_end"} <= types
    times = [line["t"] for line in rec.lines]
    assert times == sorted(times) or max(a - b for a, b in zip(times, times[1:], strict=False)) < 0.05
    [start] = [line for line in rec.of_type("ws_in") if '"start"' in line["text"]]
    clear_out = [line for line in rec.of_type("ws_out") if '"clear' in line["text"]]
    assert len(clear_out) == 1
    clear_t = clear_out[0]["t"]
    # The file's clock and the emulator's are the same monotonic clock, offset by when the stream opened: the
    # clear reached the emulator a loopback hop after the server wrote it.
    t0 = call.clears[0] - clear_t
    assert 0 <= (t0 + start["t"]) - call.started_at < 0.1  # the start arrived after it was sent

    # What the caller heard, rebuilt from the file, is what the emulated edge played.
    heard = agent_heard(rec.lines)
    heard_samples = sum(len(c.ulaw) for c in heard if c.start_s < clear_t)
    assert abs(heard_samples - call.played_samples) <= 0.03 * 8000, (heard_samples, call.played_samples)

    wav_path = tmp_path / "call.wav"
    assert export.run(argparse.Namespace(recording=str(rec.path), output=str(wav_path))) == 0
    with wave.open(str(wav_path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    left, right = samples[:, 0].astype(np.float64), samples[:, 1].astype(np.float64)

    def at(t: float) -> int:
        return int(round(t * 8000))

    # The agent was talking up to the clear, and is silent right after it (the caller is still speaking).
    assert np.abs(right[at(clear_t - 0.3):at(clear_t)]).max() > 1000
    assert np.abs(right[at(clear_t + 0.005):at(clear_t + 0.5)]).max() == 0
    # The caller's clip sits in the left channel where the emulator sent it (frame k ends when it was sent),
    # sample for sample: no frame lost, doubled or shifted against the one before it.
    sent_pcm = ulaw_to_pcm16(pcm16_to_ulaw(speech())).astype(np.float64)
    expected = sent[0] - 0.02 - t0
    lo = at(expected - 0.1)
    window = left[lo:lo + at(0.2) + len(sent_pcm)]
    scores = [float(np.dot(window[k:k + len(sent_pcm)], sent_pcm)) for k in range(len(window) - len(sent_pcm))]
    offset = lo + int(np.argmax(scores))
    assert abs(offset / 8000 - expected) < 0.03, (offset / 8000, expected)
    assert np.array_equal(left[offset:offset + len(sent_pcm)], sent_pcm)


def test_a_recording_with_auth_on_holds_no_secret(provider: str, server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory(
        public_url=PUBLIC, twilio_auth_token=TOKENS["twilio"], plivo_auth_token=TOKENS["plivo"],
        plivo_enforce_upgrade_signature=True, admin_token="admin-secret-for-recording",
        stream_token_secret="stream-token-secret-for-recording", agent_greeting=GREETING,
        record_dir=str(tmp_path),
    )

    async def scenario() -> tuple[EmulatedCall, Recording]:
        call, _ = await barge_in_call(provider, srv.url, public_url=PUBLIC, auth_token=TOKENS[provider])
        return call, await finished_recording(recording_path(tmp_path, call.call_id))

    call, rec = asyncio.run(scenario())
    stream_token = call.custom_parameters.get("token") or call.extra_headers.partition("token=")[2].split(";")[0]
    assert len(stream_token) > 20
    raw = decompress(recording_path(tmp_path, call.call_id).read_bytes()).decode()
    secrets = [*TOKENS.values(), "admin-secret-for-recording", "stream-token-secret-for-recording", stream_token]
    if provider == "twilio":
        secrets += list(wire.upgrade_headers(call, TOKENS[provider], None, call.stream_url or "").values())
    for secret in secrets:
        assert secret not in raw
    assert "authorization" not in raw.lower() and "x-plivo-signature" not in raw.lower()
    assert "x-twilio-signature" not in raw.lower()
    # ...and the recording is still whole: the start frame is there, with the token's place marked.
    [start] = [line for line in rec.of_type("ws_in") if '"start"' in line["text"]]
    assert "[redacted]" in start["text"]
    assert rec.header["settings"]["public_url"] == PUBLIC
    assert {"twilio_auth_token", "plivo_auth_token", "admin_token", "stream_token_secret"} <= set(
        rec.header["secrets_omitted"])


def test_an_unwritable_record_dir_logs_once_and_the_call_goes_on(server_factory: Any, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("not a directory")
    srv = server_factory(agent_greeting=GREETING, record_dir=str(not_a_dir))
    capture = LogCapture()
    logger = logging.getLogger("app.record.recorder")
    logger.addHandler(capture)
    try:
        call, _ = asyncio.run(barge_in_call("twilio", srv.url))
    finally:
        logger.removeHandler(capture)
    assert call.clears and not call.violations  # the barge-in worked as without recording
    record = srv.registry.get(call.call_id)
    assert record is not None and len(record.bargeins) == 1
    warnings = [r for r in capture.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "recording stopped" in warnings[0].getMessage()
    assert not_a_dir.read_text() == "not a directory"
