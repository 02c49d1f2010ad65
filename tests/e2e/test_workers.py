"""`bargein serve --workers N`: N processes on one port (app/cli.py `supervise`), over real sockets.

Two workers: concurrent calls all hear the greeting and get an LLM reply (not the fallback: the embedded LLM's
key is shared, so a turn's request may reach either worker), /healthz answers, and one SIGTERM to the
supervisor drains both workers, which exit once their calls are gone. More than one worker with provider auth
on and no STREAM_TOKEN_SECRET refuses to start, saying why.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.offline.corpus import load_clip, read_manifest
from app.settings import available_cores
from tests.conftest import free_port
from tests.e2e.test_drain import SERVE, Served, place, serve_env, serving

CALLS = 4


def test_two_workers_serve_calls_on_one_port_and_drain_together(tmp_path: Path) -> None:
    word = load_clip(next(r for r in read_manifest() if r.category == "isolated_word"))

    async def scenario(srv: Served) -> dict[str, Any]:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            health = [(await client.get(f"{srv.url}/healthz")).status_code for _ in range(4)]
        calls = await place(srv.url, CALLS)
        # The greeting is one sentence: wait until it has played, then each caller asks something.
        await asyncio.gather(*(call.wait_until(lambda c=call: c.played_samples > 0 and c.buffered_samples == 0, 15)  # type: ignore[misc]
                               for call in calls))
        greeted = [call.received_samples for call in calls]
        await asyncio.gather(*(call.send_audio(word) for call in calls))
        # The reply (several sentences of the scripted LLM: 1 s of it) and not the fallback line (0.4 s).
        await asyncio.gather(*(call.wait_until(lambda c=call, n=n: c.received_samples > n + 8000, 20)  # type: ignore[misc]
                               for call, n in zip(calls, greeted, strict=True)))
        before = [call.received_samples for call in calls]
        srv.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            draining = [(await client.get(f"{srv.url}/healthz")).status_code for _ in range(4)]
        await asyncio.gather(*(call.wait_until(lambda c=call, n=n: c.received_samples > n + 4000, 10)  # type: ignore[misc]
                               for call, n in zip(calls, before, strict=True)))
        cut_early = [call.call_id for call in calls if call.closed]
        exit_watch = asyncio.create_task(srv.exited(30))
        await asyncio.gather(*(call.hangup() for call in calls))
        last_end = time.monotonic()
        exited = await exit_watch
        for call in calls:
            await call.close()
        return {"health": health, "draining": draining, "cut_early": cut_early,
                "closed_by": [call.closed_by for call in calls], "exit_after_s": exited - last_end,
                "status": srv.proc.returncode}

    with serving(tmp_path, workers=2, AGENT_GREETING="Hello.", AGENT_FALLBACK_TEXT="Oops.",
                 EMBEDDED_LLM_TOKEN_DELAY_MS="5", DRAIN_TIMEOUT_S="60") as srv:
        out = asyncio.run(scenario(srv))
        log = srv.log.read_text()
    assert out["health"] == [200] * 4
    assert out["draining"] == [503] * 4
    assert out["cut_early"] == [] and out["closed_by"] == ["caller"] * CALLS
    assert out["exit_after_s"] < 5.0 and out["status"] == 0, (out, log[-3000:])
    # Two workers, each signalled once and each drained: the calls they held add up to all of them.
    assert log.count("Started server process") == 2
    held = [int(line.split("draining ")[1].split()[0]) for line in log.splitlines() if ": draining " in line]
    assert len(held) == 2 and sum(held) == CALLS, held
    assert log.count("drain over (drained)") == 2
    print(f"\ncalls per worker at SIGTERM: {held}; exit {out['exit_after_s']:.2f} s after the last call's end")


@pytest.mark.parametrize("workers", ["2", "default"])
def test_several_workers_with_auth_need_a_stream_token_secret(tmp_path: Path, workers: str) -> None:
    """--workers 2, or WORKERS left at 0 on a machine with more than one core: refused, saying why."""
    if workers == "default" and available_cores() < 2:
        pytest.skip("one core available: WORKERS=0 means one worker here")
    env = serve_env(TWILIO_AUTH_TOKEN="x" * 32, PUBLIC_URL="https://agent.example.com")
    args = ["--port", "1"] + (["--workers", workers] if workers != "default" else [])
    proc = subprocess.run([*SERVE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "STREAM_TOKEN_SECRET must be set" in proc.stderr, proc.stderr


def test_sigterm_while_workers_start_is_a_clean_stop(tmp_path: Path) -> None:
    """`docker stop` right after `docker run`: a worker still importing dies by the forwarded SIGTERM before it
    installs its handler. It held no call, so the supervisor still exits 0 (CI once saw exit 1 here)."""
    port = free_port()
    log = tmp_path / "server.log"
    env = serve_env(LOG_LEVEL="INFO")
    with log.open("wb") as out:
        proc = subprocess.Popen([*SERVE, "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "supervising 2 workers" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)  # the workers are still importing the app
        status = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text(errors="replace")
    assert status == 0, output[-3000:]
    assert "failed to start" not in output and "starting another" not in output, output[-3000:]
