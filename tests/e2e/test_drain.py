"""Graceful drain over real sockets: the real `bargein serve` as a subprocess, calls placed through the provider-
edge emulator, SIGTERM sent to the process (app/drain.py, app/cli.py's DrainingServer).

- 20 live calls and a SIGTERM: readiness 503 at once (liveness 200), a new call hears the busy line, every live
  call keeps its agent audio and its barge-in clear, each ends when its caller hangs up, none is cut, and the
  process exits (status 0) within 5 s of the last one;
- DRAIN_TIMEOUT_S short: the calls still up hear the goodbye in full, then the server ends them itself and
  exits; in process, a goodbye ends the call with reason "drain" and the after-stream webhook hangs up
  without the apology;
- a second SIGTERM stops the process at once, live calls or not.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import pytest

from app.call.session import CallSession
from app.edge.emulator import CallRejected, EmulatedCall, Provider
from app.offline.corpus import load_clip, read_manifest
from app.settings import Settings
from providers.tts.espeak import EspeakTts
from tests.conftest import free_port

SERVE = [sys.executable, "-m", "app.cli", "serve"]
# About 11 s of speech: the agent is still talking through every step of the 20-call test.
GREETING = Settings.model_fields["agent_greeting"].default
GOODBYE = "We are closing now. Goodbye."
BUSY = Settings.model_fields["agent_busy_text"].default


def speech() -> np.ndarray:
    """1.2 s of read speech: a caller talking over the agent."""
    row = next(r for r in read_manifest() if r.category == "read")
    return load_clip(row)[: int(1.2 * 8000)]


def serve_env(**values: str) -> dict[str, str]:
    """The test's environment without any bargein setting (nor a proxy), plus `values`."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names and "PROXY" not in k.upper()}
    env.update(values)
    return env


class Served:
    """`bargein serve` in a subprocess: its URL, the process and its log."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    async def exited(self, timeout_s: float) -> float:
        """Wait for the process to exit; returns when it did (time.monotonic, to 10 ms)."""
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, "the server did not exit:\n" + self.log.read_text()[-3000:]
            await asyncio.sleep(0.01)
        return time.monotonic()


@contextmanager
def serving(tmp_path: Path, workers: int = 1, timeout_s: float = 60.0, **settings: str) -> Iterator[Served]:
    """`bargein serve --workers N` on a free loopback port until /healthz answers 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Every call comes from 127.0.0.1 at once: more than the default 10 unstarted streams per address.
    env = serve_env(PUBLIC_URL=url, LOG_LEVEL="INFO", MAX_UNSTARTED_STREAMS_PER_ADDRESS="50", **settings)
    log = tmp_path / "server.log"
    args = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen([*SERVE, *args], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "no /healthz 200: " + log.read_text()
                try:
                    if httpx.get(f"{url}/healthz", timeout=1.0, trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            yield Served(proc, url, log)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


async def place(url: str, n: int) -> list[EmulatedCall]:
    """`n` calls through the answer webhooks (Twilio and Plivo in turn), each hearing the agent."""
    calls = [EmulatedCall.start("twilio" if i % 2 == 0 else "plivo", url, answer=True) for i in range(n)]
    await asyncio.gather(*(call.connect() for call in calls))
    await asyncio.gather(*(call.wait_until(lambda c=call: c.played_samples > 0, 20) for call in calls))  # type: ignore[misc]
    return calls


async def busy_answers(client: httpx.AsyncClient, url: str) -> tuple[str, str]:
    twilio = await client.post(f"{url}/twilio/voice", data={"CallSid": "CA" + "d" * 32, "From": "+1", "To": "+2"})
    plivo = await client.post(f"{url}/plivo/answer", data={"CallUUID": "5f0c9c8e-0000-4000-8000-000000000001"})
    assert twilio.status_code == plivo.status_code == 200
    return twilio.text, plivo.text


def test_sigterm_with_20_live_calls_drops_none_and_exits_after_the_last(tmp_path: Path) -> None:
    async def scenario(srv: Served) -> dict[str, Any]:
        calls = await place(srv.url, 20)
        at_signal = [call.received_samples for call in calls]
        signalled = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            # Readiness turns at once (the signal reaches the loop within one iteration).
            tries = 0
            while True:
                tries += 1
                ready = await client.get(f"{srv.url}/healthz")
                if ready.status_code == 503 or tries == 50:
                    break
                await asyncio.sleep(0.01)
            ready_after_s = time.monotonic() - signalled
            live = await client.get(f"{srv.url}/healthz", params={"probe": "live"})
            metrics = (await client.get(f"{srv.url}/metrics")).text
            twilio_xml, plivo_xml = await busy_answers(client, srv.url)
        newcomer = EmulatedCall.start("twilio", srv.url, answer=True)
        with pytest.raises(CallRejected) as rejected:
            await newcomer.connect()
        await newcomer.close()
        # Every live call keeps hearing the agent (1 s more of audio each)...
        await asyncio.gather(*(
            call.wait_until(lambda c=call, n=n: c.received_samples > n + 8000, 15)  # type: ignore[misc]
            for call, n in zip(calls, at_signal, strict=True)
        ))
        # ... and its caller can still talk over it: a clear each.
        spoke = time.monotonic()
        await asyncio.gather(*(call.send_audio(speech()) for call in calls))
        await asyncio.gather(*(
            call.wait_until(lambda c=call: any(t > spoke for t in c.clears), 10)  # type: ignore[misc]
            for call in calls
        ))
        cut_early = [call.call_id for call in calls if call.closed]
        # Each call ends by itself: its caller hangs up, a few at a time.
        exit_watch = asyncio.create_task(srv.exited(30))
        for i in range(0, len(calls), 5):
            if i:
                await asyncio.sleep(0.2)
            await asyncio.gather(*(call.hangup() for call in calls[i:i + 5]))
        last_end = time.monotonic()
        exited = await exit_watch
        for call in calls:
            await call.close()
        return {
            "ready": ready.status_code, "ready_after_s": ready_after_s, "ready_body": ready.json(), "tries": tries,
            "live": live.status_code, "draining_gauge": "bargein_draining 1.0" in metrics,
            "twilio": twilio_xml, "plivo": plivo_xml, "rejected": rejected.value,
            "cut_early": cut_early, "closed_by": [call.closed_by for call in calls],
            "violations": [v for call in calls for v in call.violations],
            "exit_after_s": exited - last_end, "status": srv.proc.returncode,
        }

    # Every caller's last words are heard before its call is let go (tests/e2e/test_hearing.py): the 20 turns
    # ending within a second queue on the recognizer, so the exit after the last call waits for that queue. With
    # one worker it took 3.3-3.4 s here and 5.3 s once under the whole suite's load; two workers, one per core.
    with serving(tmp_path, DRAIN_TIMEOUT_S="60", STT_WORKERS="2") as srv:
        out = asyncio.run(scenario(srv))
        log = srv.log.read_text()
    assert out["ready"] == 503 and out["ready_body"]["status"] == "draining", out
    assert out["ready_body"]["active_calls"] == 20
    assert out["ready_after_s"] < 0.5, out["ready_after_s"]
    assert out["live"] == 200
    assert out["draining_gauge"], "bargein_draining is not 1 while draining"
    assert BUSY in out["twilio"] and "<Hangup" in out["twilio"] and "<Stream" not in out["twilio"]
    assert BUSY in out["plivo"] and "<Hangup" in out["plivo"] and "<Stream" not in out["plivo"]
    assert out["rejected"].stage == "webhook"
    assert out["cut_early"] == []  # 0 dropped: no call ended before its caller hung up
    assert out["closed_by"] == ["caller"] * 20
    assert out["violations"] == []
    assert out["exit_after_s"] < 5.0, out["exit_after_s"]
    assert out["status"] == 0, log[-3000:]
    assert "draining 20 live calls" in log and "drain over (drained)" in log
    print(f"\nreadiness 503 after {out['ready_after_s'] * 1000:.0f} ms (request {out['tries']} after the signal); "
          f"exit {out['exit_after_s']:.2f} s after the last call's end")


def test_drain_timeout_says_the_goodbye_then_ends_the_calls_and_exits(tmp_path: Path) -> None:
    goodbye_ms = asyncio.run(EspeakTts().synthesize(GOODBYE)).duration_ms

    async def scenario(srv: Served) -> dict[str, Any]:
        calls = await place(srv.url, 2)
        signalled = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        exit_watch = asyncio.create_task(srv.exited(30))
        await asyncio.gather(*(call.wait_closed(20) for call in calls))
        exited = await exit_watch
        out = []
        for call in calls:
            clear = max(call.clears)  # the drain's clear: the greeting is cut for the goodbye
            out.append({
                "clear_after_s": clear - signalled,
                "goodbye_heard_ms": len(call.heard_audio(since=clear)) / 8.0,
                "closed_by": call.closed_by, "violations": call.violations,
            })
            await call.close()
        return {"calls": out, "exit_after_s": exited - max(c.closed_at or 0.0 for c in calls),
                "status": srv.proc.returncode}

    with serving(tmp_path, DRAIN_TIMEOUT_S="1", AGENT_DRAIN_GOODBYE_TEXT=GOODBYE) as srv:
        out = asyncio.run(scenario(srv))
        log = srv.log.read_text()
    for call in out["calls"]:
        assert 0.9 < call["clear_after_s"] < 3.0, call
        assert call["goodbye_heard_ms"] >= goodbye_ms - 100, (call, goodbye_ms)  # heard in full, then closed
        assert call["closed_by"] == "server" and call["violations"] == []
    assert out["exit_after_s"] < 5.0 and out["status"] == 0, log[-3000:]
    assert log.count("stream ended: drain") == 2
    print(f"\nexit {out['exit_after_s']:.2f} s after the last call's end")


def test_a_goodbye_ends_the_call_cleanly_and_the_after_stream_hangs_up(server_factory: Any, provider: str) -> None:
    """In process (the session and the webhook): the goodbye cuts the agent, plays in full, ends the stream
    with reason "drain", and the after-stream webhook then hangs up without the apology."""
    seen: list[tuple[CallSession, asyncio.AbstractEventLoop]] = []
    srv = server_factory(observers=[lambda s: seen.append((s, asyncio.get_running_loop()))])
    goodbye_ms = asyncio.run(EspeakTts().synthesize(GOODBYE)).duration_ms

    async def scenario() -> dict[str, Any]:
        async with EmulatedCall.start(cast(Provider, provider), srv.url, answer=True) as call:
            await call.wait_until(lambda: call.played_samples > 2000, 10)
            session, loop = seen[0]
            said = asyncio.run_coroutine_threadsafe(session.drain_goodbye(GOODBYE, 10.0), loop)
            await call.wait_closed(10)
            await asyncio.wrap_future(said)
            record = srv.registry.get(call.call_id)
            path = "/twilio/after-stream" if provider == "twilio" else "/plivo/after-stream"
            field = "CallSid" if provider == "twilio" else "CallUUID"
            async with httpx.AsyncClient(trust_env=False) as client:
                after = await client.post(srv.url + path, data={field: call.call_id})
            return {"closed_by": call.closed_by, "heard_ms": len(call.heard_audio(since=call.clears[-1])) / 8.0,
                    "reason": record.end_reason, "turns": [(t.role, t.text) for t in record.turns],
                    "after": after.text, "violations": call.violations}

    out = asyncio.run(scenario())
    assert out["closed_by"] == "server" and out["violations"] == []
    assert out["reason"] == "drain"
    assert out["turns"][-1] == ("agent", GOODBYE)
    assert out["heard_ms"] >= goodbye_ms - 100
    assert "<Hangup" in out["after"] and "<Say" not in out["after"] and "<Speak" not in out["after"], out["after"]


def test_a_second_sigterm_stops_at_once(tmp_path: Path) -> None:
    async def scenario(srv: Served) -> dict[str, Any]:
        calls = await place(srv.url, 2)
        srv.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        still_up = [not call.closed for call in calls]
        second = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        exited = await srv.exited(5)
        await asyncio.gather(*(call.wait_closed(5) for call in calls))
        closed_by = [call.closed_by for call in calls]
        for call in calls:
            await call.close()
        return {"still_up": still_up, "exit_after_s": exited - second, "closed_by": closed_by,
                "status": srv.proc.returncode}

    with serving(tmp_path, DRAIN_TIMEOUT_S="60") as srv:
        out = asyncio.run(scenario(srv))
        log = srv.log.read_text()
    assert out["still_up"] == [True, True]  # the first signal only drains
    assert out["exit_after_s"] < 1.5, (out, log[-3000:])
    assert out["closed_by"] == ["server", "server"]
    assert out["status"] == 1  # the drain was cut short
    assert "during the drain: stopping now" in log
    print(f"\nsecond SIGTERM -> exit in {out['exit_after_s']:.2f} s")
