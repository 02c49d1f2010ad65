"""The emulator's echo path: the caller leg carries the agent audio the edge played, delayed and attenuated."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection

from app.audio import pcm16_to_ulaw, ulaw_to_pcm16
from app.edge.echo import FRAME, EchoSpec, StreamingEcho
from app.edge.emulator import EmulatedCall, Playout
from tests.edge.test_emulator import FakeServer, twilio_media


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Band-limited noise in 200 ms syllables with gaps: a stand-in for speech with a clear delay peak."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 8000)
    x = rng.standard_normal(n) * 3000.0
    envelope = (np.arange(n) // 1600) % 3 != 2
    out: np.ndarray = np.clip(x * envelope, -32000, 32000).astype(np.int16)
    return out


def lag_and_level(played: np.ndarray, leg: np.ndarray, max_lag: int) -> tuple[float, float]:
    """(lag in ms of the best correlation, the leg's level relative to the played audio in dB)."""
    n = min(len(played), len(leg))
    p, q = played[:n].astype(np.float64), leg[:n].astype(np.float64)
    corr = [float(np.dot(p[: n - k], q[k:])) for k in range(max_lag)]
    k = int(np.argmax(corr))
    level = 10 * np.log10(np.mean(q[k:] ** 2) / np.mean(p[: n - k] ** 2))
    return k / 8.0, float(level)


@pytest.mark.parametrize("erl_db", [-6.0, -18.0])
def test_streaming_echo_has_the_set_delay_and_level(erl_db: float) -> None:
    x = speech_like(6.0).astype(np.float64)
    path = StreamingEcho(EchoSpec(erl_db, delay_ms=150.0, drift_ms=0.0, seed=2))
    y = np.concatenate([path.frame(x[i : i + FRAME]) for i in range(0, len(x), FRAME)])
    lag, level = lag_and_level(x, y, 2400)
    assert lag == pytest.approx(150.0, abs=1.0)
    assert level == pytest.approx(erl_db, abs=2.0)


def test_echo_path_drift_stays_within_its_range() -> None:
    x = speech_like(4.0, seed=1).astype(np.float64)
    path = StreamingEcho(EchoSpec(-12.0, delay_ms=80.0, drift_ms=20.0, seed=5))
    y = np.concatenate([path.frame(x[i : i + FRAME]) for i in range(0, len(x), FRAME)])
    lag, _ = lag_and_level(x, y, 2400)
    assert 80.0 <= lag <= 101.0


def test_playout_render_reads_what_played_on_any_grid() -> None:
    p = Playout()
    p.audio(10.0, bytes(range(200)))
    # 10 samples starting 5 samples before the audio began: silence, then bytes 0..4
    assert p.render(11.0, 10.0 - 5 / 8000, 10) == b"\xff" * 5 + bytes(range(5))
    assert p.render(11.0, 10.0 + 195 / 8000, 10) == bytes(range(195, 200)) + b"\xff" * 5


def test_caller_leg_carries_the_played_agent_audio_at_the_set_delay_and_erl() -> None:
    agent = speech_like(2.0, seed=3)
    spec = EchoSpec(erl_db=-12.0, delay_ms=120.0, drift_ms=0.0, seed=4)

    async def script(ws: ServerConnection, server: FakeServer) -> None:
        sid = await server.stream_id()
        await asyncio.sleep(0.3)
        await ws.send(twilio_media(sid, pcm16_to_ulaw(agent)))

    async def main() -> tuple[np.ndarray, np.ndarray]:
        async with FakeServer(script) as server, EmulatedCall.start("twilio", server.url, echo=spec) as call:
            await call.wait_until(lambda: call.played_samples >= len(agent), 5.0)
            await asyncio.sleep(0.5)  # the echo's tail
            await call.hangup()
            assert call.started_at is not None
            played = ulaw_to_pcm16(call.playout.render(call.closed_at or 0.0, call.started_at,
                                                       len(call.caller_audio)))
            frames = [m["media"]["payload"] for m in server.events("media")]
            sent = ulaw_to_pcm16(b"".join(base64.b64decode(f) for f in frames))
            assert len(sent) == len(call.caller_audio)  # the leg as the server got it is the leg as logged
            return played, sent

    played, sent = asyncio.run(main())
    assert np.abs(played).max() > 1000 and np.abs(sent[:2000]).max() == 0  # silence until the echo arrives
    lag, level = lag_and_level(played, sent, 2400)
    assert lag == pytest.approx(120.0, abs=1.5)
    assert level == pytest.approx(-12.0, abs=2.0)
