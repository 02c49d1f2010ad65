"""Hostile connections over real sockets: the real app under uvicorn (websockets-sansio), raw `websockets` clients.

Streams that never start are closed at the start deadline whatever junk they send; unstarted streams are capped
per source address (a second loopback address, 127.0.0.2, plays the attacker); bad frames are counted one by one
but logged within a budget and escaped; a text frame that is not UTF-8 closes only its own stream, without a
traceback; the API docs are off by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.edge.emulator import EmulatedCall
from app.main import create_app
from tests.conftest import LogCapture, make_settings

RECORDINGS = Path(__file__).resolve().parents[1] / "recordings"
ATTACKER = "127.0.0.2"  # all of 127.0.0.0/8 is loopback on Linux: a second source address for one host
GREETING = "Hello, thanks for calling. This greeting is long enough to keep audio flowing through the whole test. " * 3


class Captured(LogCapture):
    def lines(self, level: int = logging.INFO) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def watch_uvicorn(self) -> None:
        """Also record uvicorn's error logger, which does not propagate to the root. Call it once the server is
        built: uvicorn's logging config (applied by each uvicorn.Config) removes the handlers found there."""
        logging.getLogger("uvicorn.error").addHandler(self)


@pytest.fixture
def logs() -> Iterator[Captured]:
    """Records of the app (at INFO); see `watch_uvicorn` for uvicorn's."""
    handler = Captured()
    app_logger = logging.getLogger("app")
    old_level = app_logger.level
    app_logger.setLevel(logging.INFO)
    targets = [app_logger, logging.getLogger("providers"), logging.getLogger("uvicorn.error")]
    for target in targets[:2]:
        target.addHandler(handler)
    yield handler
    for target in targets:
        target.removeHandler(handler)
    app_logger.setLevel(old_level)


def start_frame(provider: str, call_id: str, stream_id: str) -> str:
    """The `start` of the recorded basic call, with fresh ids (no token: the test servers run without auth)."""
    lines = (RECORDINGS / provider / "basic_call.jsonl").read_text().splitlines()
    frame = next(f for f in map(json.loads, lines) if f.get("event") == "start")
    if provider == "twilio":
        frame["streamSid"] = frame["start"]["streamSid"] = stream_id
        frame["start"]["callSid"] = call_id
    else:
        frame["start"]["streamId"] = stream_id
        frame["start"]["callId"] = call_id
    return json.dumps(frame)


def new_ids(provider: str) -> tuple[str, str]:
    if provider == "twilio":
        return "CA" + uuid.uuid4().hex, "MZ" + uuid.uuid4().hex
    return str(uuid.uuid4()), str(uuid.uuid4())


class RawStream:
    """A bare WebSocket to a stream path that reads (and discards) whatever the server sends."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.opened_at = time.monotonic()
        self.received = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, provider: str, source: str = "127.0.0.1") -> RawStream:
        ws_url = url.replace("http://", "ws://") + f"/{provider}/stream"
        ws = await websockets.connect(
            ws_url, local_addr=(source, 0), compression=None, ping_interval=None, proxy=None, open_timeout=5
        )
        return cls(ws)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in self.ws:
                self.received += 1

    async def closed(self, timeout_s: float) -> float:
        """Wait until the server closed the socket; seconds since the upgrade."""
        await asyncio.wait_for(self.ws.wait_closed(), timeout_s)
        return time.monotonic() - self.opened_at

    @property
    def close(self) -> tuple[int | None, str | None]:
        return self.ws.close_code, self.ws.close_reason

    async def aclose(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def upgrade_status(url: str, provider: str, source: str) -> int:
    """101 if the upgrade was accepted (the socket is closed again at once), else the HTTP status."""
    try:
        stream = await RawStream.open(url, provider, source)
    except InvalidStatus as exc:
        return exc.response.status_code
    await stream.aclose()
    return 101


async def get_json(url: str) -> Any:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.json()


# --- the start deadline ----------------------------------------------------------------------------------


def test_streams_without_a_valid_start_are_closed_at_the_deadline_junk_or_not(server_factory: Any) -> None:
    srv = server_factory(stream_start_timeout_s=0.5, idle_timeout_s=20)

    async def junk(stream: RawStream, provider: str) -> None:
        bad_start = json.loads(start_frame(provider, *new_ids(provider)))
        bad_start["start"].pop("callSid" if provider == "twilio" else "callId")  # an invalid start is junk too
        frames = ['{"event":"keepalive"}', "{not json", json.dumps(bad_start)]
        with contextlib.suppress(ConnectionClosed):
            for i in range(100):
                await stream.ws.send(frames[i % len(frames)])
                await asyncio.sleep(0.2)

    async def scenario() -> None:
        silent = {p: await RawStream.open(srv.url, p) for p in ("twilio", "plivo")}
        noisy = {p: await RawStream.open(srv.url, p) for p in ("twilio", "plivo")}
        senders = [asyncio.create_task(junk(s, p)) for p, s in noisy.items()]
        for stream in [*silent.values(), *noisy.values()]:
            elapsed = await stream.closed(5)
            assert 0.45 <= elapsed <= 1.5, elapsed
            assert stream.close == (1008, "no start")
        for sender in senders:
            await asyncio.wait_for(sender, 1)

    asyncio.run(scenario())


# --- the cap on unstarted streams per address ------------------------------------------------------------


def test_a_flood_of_unstarted_streams_is_refused_past_the_address_cap_and_honest_calls_go_on(
    server_factory: Any, logs: Captured
) -> None:
    srv = server_factory(
        max_unstarted_streams_per_address=4, stream_start_timeout_s=10, agent_greeting=GREETING
    )
    logs.watch_uvicorn()

    async def scenario() -> None:
        async with EmulatedCall.start("twilio", srv.url) as before:
            await before.wait_until(lambda: before.received_samples > 0, 10)
            flood = [await RawStream.open(srv.url, "plivo", ATTACKER) for _ in range(4)]
            refused = [await upgrade_status(srv.url, "plivo", ATTACKER) for _ in range(6)]
            refused += [await upgrade_status(srv.url, "twilio", ATTACKER) for _ in range(3)]
            assert refused == [403] * 9
            heard_then = before.received_samples

            # Another address is not held back by the attacker's: an honest call starts during the flood.
            async with EmulatedCall.start("plivo", srv.url) as during:
                await during.wait_until(lambda: during.received_samples > 0, 10)
                assert not during.closed and not during.violations

            # Once the flood's sockets close, the address is admitted again.
            for stream in flood:
                await stream.aclose()
            deadline = time.monotonic() + 3
            while (status := await upgrade_status(srv.url, "plivo", ATTACKER)) != 101:
                assert status == 403 and time.monotonic() < deadline
                await asyncio.sleep(0.05)

            # A stream holds its slot only until its valid start: then four more unstarted ones fit again.
            starter = await RawStream.open(srv.url, "plivo", ATTACKER)
            call_id, stream_id = new_ids("plivo")
            await starter.ws.send(start_frame("plivo", call_id, stream_id))
            await wait_for(lambda: starter.received > 0, 5)  # the greeting: the stream started
            again = [await RawStream.open(srv.url, "plivo", ATTACKER) for _ in range(4)]
            assert await upgrade_status(srv.url, "plivo", ATTACKER) == 403

            await before.wait_until(lambda: before.received_samples > heard_then, 5)
            assert not before.closed and not before.violations
            record = await get_json(f"{srv.url}/calls/{before.call_id}")
            assert record["ended_at"] is None
            for stream in [starter, *again]:
                await stream.aclose()

    asyncio.run(scenario())
    refusals = [line for line in logs.lines(logging.WARNING) if "upgrade" in line and "refused" in line]
    assert 1 <= len(refusals) <= 2, refusals  # 10 refusals, one line (the next would come 10 s later)
    assert "MAX_UNSTARTED_STREAMS_PER_ADDRESS" in refusals[0] and ATTACKER in refusals[0]


async def wait_for(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- bad frames: counted, logged within a budget, escaped ------------------------------------------------


def test_junk_frames_are_all_counted_but_logged_within_a_budget_and_escaped(
    provider: str, server_factory: Any, logs: Captured
) -> None:
    srv = server_factory(agent_greeting=GREETING)
    logs.watch_uvicorn()
    call_id, stream_id = new_ids(provider)
    evil = json.dumps({"event": "evil\nINFO app.main: forged line \x1b[31mred\x1b[0m"})
    junk: list[str | bytes] = ['{"event":"keepalive"}', "{not json", b"\x00\x01binary", "[1, 2]"]

    async def scenario() -> None:
        stream = await RawStream.open(srv.url, provider)
        await stream.ws.send(start_frame(provider, call_id, stream_id))
        await stream.ws.send(evil)
        for i in range(200):
            await stream.ws.send(junk[i % len(junk)])
        deadline = time.monotonic() + 5
        while (await get_json(f"{srv.url}/calls/{call_id}"))["invalid_frames"] < 201:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(trust_env=False) as client:
            metrics = (await client.get(f"{srv.url}/metrics")).text
        counted = sum(
            float(m.group(1)) for m in re.finditer(r"^bargein_invalid_frames_total\{[^}]*\} (\S+)$", metrics, re.M)
        )
        assert counted == 201
        await stream.aclose()
        await wait_for(lambda: any("stream ended" in line for line in logs.lines()), 5)

    asyncio.run(scenario())
    frame_lines = [r for r in logs.records if r.levelno == logging.WARNING and "inbound frame" in r.getMessage()]
    full = [r for r in frame_lines if r.getMessage().startswith("ignored inbound frame:")]
    summaries = [r for r in frame_lines if r not in full]
    assert len(full) == 5 and 1 <= len(summaries) <= 3, [r.getMessage() for r in frame_lines]
    assert 5 + sum(int(r.args[0]) for r in summaries) == 201  # type: ignore[index]  # every frame in a line
    assert "evil\\" in full[0].getMessage()  # the forged event is logged in full, escaped
    for record in logs.records:
        text = record.getMessage() + json.dumps(getattr(record, "call_sid", ""))
        assert "\n" not in text and "\x1b" not in text, text


# --- invalid UTF-8 -------------------------------------------------------------------------------------


def test_invalid_utf8_closes_its_stream_with_1007_without_a_traceback_and_other_calls_go_on(
    server_factory: Any, logs: Captured
) -> None:
    srv = server_factory(agent_greeting=GREETING)
    logs.watch_uvicorn()
    call_id, stream_id = new_ids("plivo")

    async def scenario() -> None:
        async with EmulatedCall.start("twilio", srv.url) as honest:
            await honest.wait_until(lambda: honest.received_samples > 0, 10)
            started = await RawStream.open(srv.url, "plivo")
            await started.ws.send(start_frame("plivo", call_id, stream_id))
            await wait_for(lambda: started.received > 0, 5)
            unstarted = await RawStream.open(srv.url, "twilio")
            heard_then = honest.received_samples
            for stream in (started, unstarted):
                await stream.ws.send(b'{"event":"media","x":"\xff\xfe\xc3\x28"}', text=True)
                await stream.closed(5)
                assert stream.close[0] == 1007
            await wait_for(lambda: sum("utf-8" in line.lower() for line in logs.lines()) >= 2, 5)
            await asyncio.sleep(0.2)  # anything else the server would log about it
            await honest.wait_until(lambda: honest.received_samples > heard_then, 5)
            assert not honest.closed and not honest.violations
            assert (await get_json(f"{srv.url}/calls/{honest.call_id}"))["ended_at"] is None
            record = await get_json(f"{srv.url}/calls/{call_id}")
            assert record["end_reason"] == "invalid utf-8"

    asyncio.run(scenario())
    assert not [r for r in logs.records if r.levelno >= logging.ERROR or r.exc_info], [
        r.getMessage() for r in logs.records
    ]
    utf8_lines = [line for line in logs.lines() if "utf-8" in line.lower()]
    assert len(utf8_lines) == 2, utf8_lines  # one line per bad stream


# --- API docs and the admin token ---------------------------------------------------------------------------


def test_api_docs_are_off_unless_api_docs_is_set(server_factory: Any) -> None:
    default = server_factory()
    with_docs = server_factory(api_docs=True)
    with httpx.Client(trust_env=False) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(f"{default.url}{path}").status_code == 404, path
            assert client.get(f"{with_docs.url}{path}").status_code == 200, path


def test_auth_without_an_admin_token_is_reported_at_start_up(server_factory: Any, logs: Captured) -> None:
    srv = server_factory(twilio_auth_token="twilio-auth-token-for-tests")
    warnings = [line for line in logs.lines(logging.WARNING) if "ADMIN_TOKEN" in line]
    assert len(warnings) == 1 and "/metrics" in warnings[0]
    with httpx.Client(trust_env=False) as client:
        assert client.get(f"{srv.url}/metrics").status_code == 401
    logs.records.clear()
    create_app(make_settings(twilio_auth_token="t", admin_token="admin-secret"))
    create_app(make_settings())  # insecure mode: the admin endpoints are open, nothing to warn about
    assert not [line for line in logs.lines(logging.WARNING) if "ADMIN_TOKEN" in line]
