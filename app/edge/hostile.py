"""Hostile connections over real sockets: the frames of `app.edge.fuzz` sent to a server's stream endpoints.

`hostile_connection` sends one connection's frames, opening a new socket each time the server closes one, and
counts what happened (`FuzzTally`); `hammer` runs several at once; `hammer_process` runs `hammer` in a child
process (`python -m app.edge.hostile SPEC`), so generating and sending hundreds of thousands of frames does not
slow the honest callers in the caller's process. `HealthPoller` polls /healthz beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from app.background import BackgroundTask
from app.edge.fuzz import WS_MAX_MESSAGE, Hostile, Target, hostile_frames
from app.edge.wire import Provider

PROVIDERS: tuple[Provider, ...] = ("twilio", "plivo")


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


@dataclass
class FuzzTally:
    """What hostile connections sent and what the server did with them."""

    frames: int = 0  # messages handed to a socket
    bytes: int = 0
    above_cap: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    connections: int = 0  # upgrades the server accepted
    refused: int = 0  # upgrades refused, or connections that failed
    refusals: dict[str, int] = field(default_factory=dict)  # by HTTP status or error
    closed_by_server: int = 0
    unclosed: dict[str, int] = field(default_factory=dict)  # by kind: a close was due (expect_close), none came
    close_codes: dict[str, int] = field(default_factory=dict)
    lost: int = 0  # frames dropped after the server closed several fresh sockets on them
    replies: int = 0  # messages the server sent back
    wall_s: float = 0.0
    started_at: float = 0.0  # time.monotonic() (system-wide on Linux, so comparable across processes)
    ended_at: float = 0.0

    def count(self, frame: Hostile) -> None:
        self.frames += 1
        self.bytes += len(frame.data)
        self.above_cap += frame.above_cap
        self.kinds[frame.kind] = self.kinds.get(frame.kind, 0) + 1

    def merge(self, other: FuzzTally) -> None:
        for name in ("frames", "bytes", "above_cap", "connections", "refused", "closed_by_server", "lost", "replies"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in ((self.kinds, other.kinds), (self.refusals, other.refusals),
                             (self.close_codes, other.close_codes), (self.unclosed, other.unclosed)):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value
        self.wall_s = max(self.wall_s, other.wall_s)
        starts = [t for t in (self.started_at, other.started_at) if t]
        self.started_at = min(starts, default=0.0)
        self.ended_at = max(self.ended_at, other.ended_at)


def _bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def ws_url(base: str, provider: Provider) -> str:
    return "ws" + base.removeprefix("http") + f"/{provider}/stream"


async def _drain(ws: ClientConnection, tally: FuzzTally) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            tally.replies += 1


async def hostile_connection(
    base_url: str,
    provider: Provider,
    frames: Iterable[Hostile],
    tally: FuzzTally,
    *,
    stop: asyncio.Event | None = None,
    interval_s: float = 0.0,
    close_wait_s: float = 1.0,
    max_refusals: int = 500,
) -> None:
    """Send `frames` on one socket after another: when the server closes one, open the next and go on.

    After a frame the server should close the socket on (`Hostile.expect_close`), wait up to `close_wait_s`
    for the close (`unclosed` counts those it did not come for). A frame that meets a closed socket is sent
    again on the next one; after three fresh sockets in a row are closed before taking a frame, it is dropped
    (`lost`). Never raises on what the server does.
    """
    url = ws_url(base_url, provider)
    it: Iterator[Hostile] = iter(frames)
    pending = next(it, None)
    refusals = dead = 0
    while pending is not None and not (stop is not None and stop.is_set()):
        try:
            ws = await connect(url, max_size=None, compression=None, ping_interval=None, proxy=None,
                               open_timeout=10, close_timeout=2, user_agent_header=None)
        except InvalidStatus as exc:
            _bump(tally.refusals, f"HTTP {exc.response.status_code}")
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            _bump(tally.refusals, type(exc).__name__)
        else:
            tally.connections += 1
            reader = asyncio.create_task(_drain(ws, tally))
            sent = 0
            try:
                while pending is not None and not (stop is not None and stop.is_set()):
                    frame = pending
                    await ws.send(frame.data, text=True if frame.as_text else None)
                    tally.count(frame)
                    sent += 1
                    pending = next(it, None)
                    if frame.expect_close:
                        # A correct server closes on this frame: wait for that rather than pour more frames into
                        # a socket whose unread data it will discard.
                        await asyncio.wait({reader}, timeout=close_wait_s)
                        if reader.done():
                            tally.closed_by_server += 1
                            _bump(tally.close_codes, str(ws.close_code))
                            dead = 0
                            break
                        _bump(tally.unclosed, frame.kind)
                    # Let the rest of this process run: a send into a socket with room never yields.
                    await asyncio.sleep(interval_s)
            except ConnectionClosed as exc:
                tally.closed_by_server += 1
                _bump(tally.close_codes, str(exc.rcvd.code) if exc.rcvd is not None else "no close frame")
                dead = 0 if sent else dead + 1
                if dead >= 3 and pending is not None:
                    tally.lost += 1
                    pending, dead = next(it, None), 0
            finally:
                with contextlib.suppress(Exception):
                    await ws.close()
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            continue
        tally.refused += 1
        refusals += 1
        if refusals >= max_refusals:
            tally.lost += 1 + sum(1 for _ in it)
            return
        await asyncio.sleep(0.05)


def connection_specs(frames: int, connections: int, seed: int) -> list[tuple[Provider, int, int]]:
    """(provider, seed, frames) for each hostile connection: providers alternate, the frames are shared out."""
    connections = max(1, min(connections, frames or 1))
    share, extra = divmod(frames, connections)
    return [(PROVIDERS[i % 2], seed * 1000 + i, share + (i < extra)) for i in range(connections)]


async def hammer(
    base_url: str,
    specs: Sequence[tuple[Provider, int, int]],
    *,
    max_message: int = WS_MAX_MESSAGE,
    live: Sequence[Target] = (),
) -> FuzzTally:
    """Every spec's frames on a connection of its own, all at once; the merged tally."""
    tallies = [FuzzTally() for _ in specs]
    t0 = time.monotonic()
    await asyncio.gather(*(
        hostile_connection(base_url, provider, hostile_frames(provider, seed, n, max_message=max_message, live=live),
                           tally)
        for (provider, seed, n), tally in zip(specs, tallies, strict=True)
    ))
    total = FuzzTally()
    for tally in tallies:
        total.merge(tally)
    total.started_at, total.ended_at = t0, time.monotonic()
    total.wall_s = total.ended_at - t0
    return total


async def hammer_process(base_url: str, frames: int, connections: int, seed: int, max_message: int) -> FuzzTally:
    """`hammer` in a process of its own, so generating and sending frames does not slow the honest callers."""
    spec = json.dumps({"url": base_url, "frames": frames, "connections": connections, "seed": seed,
                       "max_message": max_message})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.edge.hostile", spec, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"fuzz process exited with {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return FuzzTally(**json.loads(out))


# --- /healthz, polled beside them ----------------------------------------------------------------------------


class HealthPoller(BackgroundTask):
    """GET /healthz every `interval_s` (after the previous answer); latency of each, and every failure."""

    def __init__(self, base_url: str, interval_s: float = 0.02, timeout_s: float = 5.0) -> None:
        self.base_url = base_url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.latencies_ms: list[float] = []
        self.failures: dict[str, int] = {}

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, trust_env=False, timeout=self.timeout_s) as client:
            while True:
                t0 = time.perf_counter()
                try:
                    response = await client.get("/healthz")
                    if response.status_code != 200:
                        _bump(self.failures, f"HTTP {response.status_code}")
                except httpx.HTTPError as exc:
                    _bump(self.failures, type(exc).__name__)
                self.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
                await asyncio.sleep(self.interval_s)

    @property
    def polls(self) -> int:
        return len(self.latencies_ms)

    @property
    def worst_ms(self) -> float:
        return max(self.latencies_ms, default=0.0)

    def summary(self) -> dict[str, Any]:
        return {"polls": self.polls, "failed": sum(self.failures.values()), "failures": dict(self.failures),
                "p50_ms": _pct(self.latencies_ms, 50), "p99_ms": _pct(self.latencies_ms, 99), "max_ms": self.worst_ms}


def invalid_frame_counts(metrics_text: str) -> dict[str, float]:
    """`bargein_invalid_frames_total` from a /metrics page, summed over providers, by kind."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "bargein_invalid_frames":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                kind = sample.labels.get("kind", "")
                counts[kind] = counts.get(kind, 0.0) + sample.value
    return counts


def _main(spec_json: str) -> int:
    """`python -m app.edge.hostile SPEC`: run `hammer` and print its tally as JSON (see `hammer_process`)."""
    spec = json.loads(spec_json)
    specs = connection_specs(spec["frames"], spec["connections"], spec["seed"])
    tally = asyncio.run(hammer(spec["url"], specs, max_message=spec["max_message"]))
    print(json.dumps(asdict(tally)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1]))
