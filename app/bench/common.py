"""What every part of `bargein bench` shares: the server under test as a child process, its /stats, and the
small statistics and table helpers of the report.

The server runs in a process of its own (`python -m app.cli serve`), so its CPU time and RSS are its own and
the load generator competes with it for the cores the way a real edge would not (the report says how much
the generator used). It runs in an empty temporary directory so a developer's `.env` cannot change what is
measured; every security setting is passed explicitly, and any other server setting exported in the
environment (a VAD threshold, say) is inherited and listed in the report's header.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import psutil

from app.background import BackgroundTask
from app.settings import Settings

FRAME_S = 0.02
MB = 1024 * 1024
_SECURITY_KEYS = ("TWILIO_AUTH_TOKEN", "TWILIO_WEBHOOK_KEYS", "PLIVO_AUTH_TOKEN", "ADMIN_TOKEN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# What the benchmark sets itself for every server it starts (the rest is inherited from the environment).
BENCH_SETTINGS = (
    *_SECURITY_KEYS,
    *("PORT", "HOST", "PUBLIC_URL", "LOG_LEVEL", "MAX_CALLS", "CALL_RECORDS_MAX", "AGENT_GREETING", "LLM_BASE_URL",
      "WORKERS"),
)


def inherited_settings() -> dict[str, str]:
    """Server settings exported in this environment that the benchmark does not set itself."""
    names = {name.upper() for name in Settings.model_fields}
    return {k: v for k, v in os.environ.items() if k.upper() in names and k.upper() not in BENCH_SETTINGS}


@dataclass(frozen=True)
class Auth:
    """Credentials for `--auth`: the server checks signatures and the emulator signs, webhook first."""

    twilio_token: str
    plivo_token: str
    admin_token: str

    def env(self) -> dict[str, str]:
        return {
            "TWILIO_AUTH_TOKEN": self.twilio_token,
            "PLIVO_AUTH_TOKEN": self.plivo_token,
            "ADMIN_TOKEN": self.admin_token,
        }


class ServerProcess:
    """`bargein serve` on a free loopback port, with its log in a temporary file."""

    def __init__(self, env: dict[str, str], auth: Auth | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth = auth
        self._workdir = tempfile.TemporaryDirectory(prefix="bargein-bench-")
        self.log_path = Path(self._workdir.name) / "server.log"
        overrides = {key: "" for key in _SECURITY_KEYS}
        if auth is not None:
            overrides |= auth.env()
        overrides |= {
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "PUBLIC_URL": self.url,
            "LOG_LEVEL": "WARNING",
            "MAX_CALLS": "2000",
            "CALL_RECORDS_MAX": "10000",
            # One process: /stats (CPU, RSS) describes the one server the calls reach.
            "WORKERS": "1",
        }
        overrides |= env
        self.env = overrides
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._http: httpx.AsyncClient | None = None
        self.started_in_s = 0.0

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._log = open(self.log_path, "wb")  # closed in stop()
        # A session of its own, so a Ctrl-C at the terminal reaches only the benchmark, which then stops it.
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            env=os.environ | self.env,
            cwd=self._workdir.name,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def start(self, timeout_s: float = 60.0) -> None:
        t0 = time.monotonic()
        self._proc = self._spawn()
        headers = {"Authorization": f"Bearer {self.auth.admin_token}"} if self.auth else {}
        self._http = httpx.AsyncClient(base_url=self.url, trust_env=False, timeout=10, headers=headers)
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"server exited with {self._proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"server not healthy after {timeout_s:.0f} s:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                response = await self._http.get("/healthz", timeout=1)
                if response.status_code == 200:
                    break
            await asyncio.sleep(0.05)
        self.started_in_s = time.monotonic() - t0

    async def stop(self) -> int | None:
        """SIGINT (uvicorn's graceful shutdown), then SIGTERM, then SIGKILL; returns the exit status."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        proc, self._proc = self._proc, None
        code: int | None = None
        if proc is not None:
            for sig, wait_s in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                if proc.poll() is not None:
                    break
                proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(proc.wait, wait_s)
            code = proc.poll()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def cleanup(self) -> None:
        self._workdir.cleanup()

    # --- the server's own figures -----------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("server not started")
        return self._http

    async def stats(self) -> dict[str, Any]:
        response = await self._client().get("/stats")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def reset_stats(self) -> None:
        (await self._client().post("/stats/reset")).raise_for_status()

    async def call_record(self, call_id: str) -> dict[str, Any] | None:
        response = await self._client().get(f"/calls/{call_id}")
        if response.status_code != 200:
            return None
        data: dict[str, Any] = response.json()
        return data

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text("utf-8", "replace").splitlines()
        except OSError:
            return []

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_lines()[-n:])

    def log_counts(self) -> dict[str, int]:
        """WARNING / ERROR lines and tracebacks in the server's log (the insecure-mode banner excluded)."""
        counts = {"warning": 0, "error": 0, "traceback": 0}
        for line in self.log_lines():
            if " WARNING " in line and "INSECURE DEVELOPMENT MODE" not in line:
                counts["warning"] += 1
            elif " ERROR " in line or " CRITICAL " in line:
                counts["error"] += 1
            elif line.startswith("Traceback"):
                counts["traceback"] += 1
        return counts


@dataclass
class Sampler:
    """Polls /stats while a phase runs: the highest RSS and active-call count seen."""

    server: ServerProcess
    interval_s: float = 0.5
    rss_max: int = 0
    active_max: int = 0
    errors: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(httpx.HTTPError):
            self.observe(await self.server.stats())

    def observe(self, stats: dict[str, Any]) -> None:
        self.rss_max = max(self.rss_max, int(stats["rss_bytes"]))
        self.active_max = max(self.active_max, int(stats["active_calls"]))

    async def _run(self) -> None:
        while True:
            try:
                self.observe(await self.server.stats())
            except httpx.HTTPError:
                self.errors += 1
            await asyncio.sleep(self.interval_s)


@dataclass
class CpuMeter:
    """This process's CPU time and the whole machine's busy time over an interval."""

    wall0: float = field(default_factory=time.monotonic)
    proc0: float = field(default_factory=time.process_time)
    sys0: Any = field(default_factory=psutil.cpu_times)

    def read(self) -> dict[str, float]:
        wall = time.monotonic() - self.wall0
        proc = time.process_time() - self.proc0
        now = psutil.cpu_times()
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (self.sys0.idle + getattr(self.sys0, "iowait", 0.0))
        total = sum(now) - sum(self.sys0)
        busy = (total - idle) / total if total > 0 else 0.0
        return {"wall_s": wall, "bench_cpu_s": proc, "machine_busy": busy, "cores": float(psutil.cpu_count() or 1)}


class GcWatch:
    """Garbage-collector pauses in this process (the load generator): a long one delays caller frames.

    On entry everything alive is moved to the permanent generation (`gc.freeze()`), so a full collection
    during the measurement walks only what the phase itself allocates: the emulator keeps a log of every
    message of every call, and walking all of it took up to ~90 ms, long enough to send 100 calls' frames
    in a burst (a real edge does not stall like that).
    """

    def __init__(self) -> None:
        self.pauses_ms: list[float] = []
        self._t0 = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        elif info.get("generation", 0) >= 1:
            self.pauses_ms.append((time.perf_counter() - self._t0) * 1000.0)

    def __enter__(self) -> GcWatch:
        gc.collect()
        gc.freeze()
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)
        gc.unfreeze()

    @property
    def max_ms(self) -> float:
        return max(self.pauses_ms, default=0.0)


class LoopMonitor(BackgroundTask):
    """How late this process's event loop wakes a 5 ms sleeper: a stall here delays the caller frames."""

    def __init__(self, period_s: float = 0.005) -> None:
        self.period_s = period_s
        self.late_ms: list[float] = []

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.period_s)
            self.late_ms.append((time.perf_counter() - t0 - self.period_s) * 1000.0)

    @property
    def max_ms(self) -> float:
        return max(self.late_ms, default=0.0)

    def over(self, ms: float) -> int:
        return sum(v > ms for v in self.late_ms)


# --- statistics and formatting ---------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def fmt_pct(num: int, den: int) -> str:
    return "-" if den == 0 else f"{100.0 * num / den:.1f}% ({num}/{den})"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ", left: int = 1) -> str:
    """A plain-text table: the first `left` columns left-aligned, the rest right-aligned."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return indent + "  ".join(parts).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def progress(message: str) -> None:
    """Progress goes to stderr, so stdout holds the report alone."""
    print(message, file=sys.stderr, flush=True)
