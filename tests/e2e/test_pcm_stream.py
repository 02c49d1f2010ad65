"""/pcm/stream end to end: the real server under uvicorn, a plain WebSocket client sending PCM16 in real time."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.offline.corpus import load_clip, read_manifest
from providers.resample import resample

CLIP = "speech/read_01_libri3982F.wav"  # 1.7 s: one utterance, so one barge-in
PAD_S = 2.0
MAX_CLEAR_MS = 400.0


def caller_audio(rate: int) -> tuple[np.ndarray, float]:
    [row] = [r for r in read_manifest() if r.path == CLIP]
    assert row.speech_onset_s is not None
    silence = np.zeros(int(PAD_S * 8000), np.int16)
    audio = np.concatenate([silence, load_clip(row), silence])  # trailing silence: the caller's turn ends
    return resample(audio, 8000, rate), PAD_S + row.speech_onset_s


class Client:
    """Sends PCM16 in 20 ms frames on a real-time grid; records what comes back."""

    def __init__(self, ws: ClientConnection, rate: int, echo_marks: bool = False) -> None:
        self.ws, self.rate, self.echo_marks = ws, rate, echo_marks
        self.audio = bytearray()
        self.first_audio_at: float | None = None
        self.texts: list[tuple[float, dict[str, Any]]] = []
        self.sent_at: list[float] = []

    async def receive(self) -> None:
        try:
            async for message in self.ws:
                now = time.monotonic()
                if isinstance(message, bytes):
                    self.first_audio_at = self.first_audio_at or now
                    self.audio += message
                    continue
                frame = json.loads(message)
                self.texts.append((now, frame))
                if self.echo_marks and frame["event"] == "mark":
                    await self.ws.send(message)  # played at once: this client has no playback buffer
        except ConnectionClosed:
            pass

    async def send(self, pcm: np.ndarray) -> None:
        step = self.rate // 50
        t0 = time.monotonic()
        for i, start in enumerate(range(0, len(pcm) - step + 1, step)):
            delay = t0 + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.sent_at.append(time.monotonic())
            await self.ws.send(pcm[start : start + step].astype("<i2").tobytes())

    def events(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, f) for t, f in self.texts if f["event"] == name]


RATES = (16000, 8000, 24000)


def test_pcm_caller_barges_in_on_the_greeting_at_each_rate(server_factory: Any) -> None:
    # The three rates' calls at once, on one server: each is its own call on the real-time grid, and what is checked
    # of each is its own (its audio, its clear, its record), so together they take the time of one.
    srv = server_factory()

    async def one(rate: int) -> tuple[Client, float]:
        pcm, onset_s = caller_audio(rate)
        url = srv.url.replace("http", "ws") + f"/pcm/stream?rate={rate}&call_id=PCtest{rate}"
        async with connect(url, max_size=None) as ws:
            client = Client(ws, rate)
            receiver = asyncio.create_task(client.receive())
            await client.send(pcm)
            await asyncio.sleep(0.5)
            await ws.send(json.dumps({"event": "stop"}))
            await asyncio.wait_for(receiver, 5)
            return client, onset_s

    async def scenario() -> list[tuple[Client, float]]:
        return list(await asyncio.gather(*(one(rate) for rate in RATES)))

    for rate, (client, onset_s) in zip(RATES, asyncio.run(scenario()), strict=True):
        onset_at = client.sent_at[round(onset_s / 0.02)]
        # The greeting arrived as binary PCM16 at the client's rate, and was under way when the caller spoke.
        assert client.first_audio_at is not None and client.first_audio_at < onset_at, rate
        assert len(client.audio) % 2 == 0 and len(client.audio) > rate * 2 * 0.5, rate
        clears = client.events("clear")
        assert len(clears) == 1, (rate, client.texts)
        latency_ms = (clears[0][0] - onset_at) * 1000
        assert 0 < latency_ms <= MAX_CLEAR_MS, (rate, latency_ms)
        assert client.events("mark") == [], rate  # not asked for: the server counts audio as played when due
        record = httpx.get(f"{srv.url}/calls/PCtest{rate}").json()
        assert record["provider"] == "pcm" and len(record["bargeins"]) == 1 and record["end_reason"] == "stop", rate
        heard = record["bargeins"][0]["heard_audio_ms"]
        # Sent-plus-duration: the greeting had been playing since the first audio, minus the 300 ms lead.
        assert heard is not None and heard > 1000, (rate, heard)
        # The caller's turn ended and the agent answered it, in audio the client received after the clear.
        assert len(record["turns"]) >= 3, (rate, record["turns"])


def test_pcm_marks_are_sent_and_echoes_are_taken(server_factory: Any) -> None:
    srv = server_factory()

    async def scenario() -> Client:
        url = srv.url.replace("http", "ws") + "/pcm/stream?rate=8000&marks=1"
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"event": "start", "callId": "PCmarks"}))
            client = Client(ws, 8000, echo_marks=True)
            receiver = asyncio.create_task(client.receive())
            await client.send(np.zeros(8000 * 2, np.int16))
            await ws.close()
            await asyncio.wait_for(receiver, 5)
            return client

    client = asyncio.run(scenario())
    marks = client.events("mark")
    assert len(marks) >= 5 and all(isinstance(f["name"], str) for _, f in marks)
    assert client.events("clear") == []


def test_pcm_refuses_a_bad_rate(server_factory: Any) -> None:
    srv = server_factory()

    async def scenario() -> None:
        with pytest.raises(Exception, match="403"):
            async with connect(srv.url.replace("http", "ws") + "/pcm/stream?rate=44100"):
                pass

    asyncio.run(scenario())


def test_pcm_needs_a_stream_token_when_auth_is_on(server_factory: Any) -> None:
    srv = server_factory(twilio_auth_token="tw-secret", admin_token="adm")
    base = srv.url.replace("http", "ws") + "/pcm/stream?rate=16000"
    assert httpx.post(f"{srv.url}/pcm/token").status_code == 401
    issued = httpx.post(f"{srv.url}/pcm/token", headers={"Authorization": "Bearer adm"}).json()

    async def scenario() -> tuple[int | None, str | None, int]:
        async with connect(base, max_size=None) as ws:  # audio first, no token: refused
            await ws.send(np.zeros(320, np.int16).tobytes())
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            code, reason = ws.close_code, ws.close_reason
        async with connect(base, max_size=None) as ws:  # the issued token in the start frame
            await ws.send(json.dumps({"event": "start", "callId": issued["call_id"], "token": issued["token"]}))
            got = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(got, bytes)
            return code, reason, len(got)

    code, reason, size = asyncio.run(scenario())
    assert (code, reason) == (1008, "bad token")
    assert size > 0
