"""app.logctx: one LogContext per stream, shared by every task the stream creates after binding it, and the
filter that stamps it on records; then end to end, a real call whose every app.* line names its call."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app import logctx
from app.edge.emulator import EmulatedCall
from app.logctx import ContextFilter, LogContext
from app.offline.corpus import load_clip, read_manifest
from tests.conftest import LogCapture, free_port
from tests.test_cli import serve_env, serving


def stamp(**extra: Any) -> logging.LogRecord:
    """A record as it leaves ContextFilter, in the current task's context."""
    record = logging.getLogger("app.call.turn").makeRecord(
        "app.call.turn", logging.WARNING, __file__, 1, "agent turn %s: provider failed", (2,), None,
        extra=extra or None,
    )
    assert ContextFilter().filter(record) is True  # it never drops a record
    return record


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: record.__dict__[name] for name in logctx.FIELDS if name in record.__dict__}


# --- in-process: the context and its tasks -----------------------------------------------------------------


def test_tasks_created_after_bind_see_ids_set_later_and_another_stream_sees_none_of_them() -> None:
    seen: dict[str, dict[str, Any]] = {}

    async def pump(name: str, call_id: str, started: asyncio.Event, done: asyncio.Event) -> None:
        logctx.bind("twilio")

        async def timer() -> None:  # created before the start arrives, as the stream's ticker is
            await started.wait()

            async def turn() -> None:  # created from the timer after the start, as an agent turn can be
                seen[f"{name}/turn"] = fields(stamp())

            await asyncio.create_task(turn())
            seen[f"{name}/timer"] = fields(stamp())

        ticker = asyncio.create_task(timer())
        await asyncio.sleep(0)
        seen[f"{name}/before start"] = fields(stamp())
        logctx.set_call(call_id, f"MZ-{name}")
        started.set()
        await ticker
        done.set()

    async def outsider(done: asyncio.Event) -> None:
        await done.wait()
        seen["outsider"] = fields(stamp())

    async def main() -> None:
        a_started, b_started, a_done, b_done = (asyncio.Event() for _ in range(4))
        await asyncio.gather(
            pump("a", "CA-a", a_started, a_done), pump("b", "CA-b", b_started, b_done), outsider(a_done)
        )
        seen["main"] = fields(stamp())  # the tasks' bindings never leak back into their creator

    asyncio.run(main())
    assert seen["a/before start"] == {"provider": "twilio"}
    for stream in ("a", "b"):
        for where in ("timer", "turn"):
            assert seen[f"{stream}/{where}"] == {
                "call_id": f"CA-{stream}", "stream_id": f"MZ-{stream}", "provider": "twilio"
            }, where
    assert seen["outsider"] == {} and seen["main"] == {}


def test_a_task_created_before_bind_keeps_its_own_context() -> None:
    async def main() -> dict[str, Any]:
        release = asyncio.Event()
        early: dict[str, Any] = {}

        async def created_too_soon() -> None:
            await release.wait()
            early.update(fields(stamp()))

        task = asyncio.create_task(created_too_soon())
        logctx.bind("plivo")
        logctx.set_call("call-1", "stream-1")
        release.set()
        await task
        return early

    assert asyncio.run(main()) == {}


def test_extra_wins_over_the_context_and_unset_fields_are_not_stamped() -> None:
    async def main() -> tuple[logging.LogRecord, logging.LogRecord, LogContext | None]:
        ctx = logctx.bind()
        unset = stamp()
        ctx.call_id = "CA-context"
        return stamp(call_id="CA-extra"), unset, logctx.current()

    overridden, unset, ctx = asyncio.run(main())
    assert overridden.__dict__["call_id"] == "CA-extra"
    assert fields(unset) == {}
    assert ctx is not None and ctx.stream_id is None


def test_peer_chosen_ids_are_escaped_and_bounded() -> None:
    async def main() -> logging.LogRecord:
        logctx.set_call("CA1\nFAKE: admin logged in\x1b[2J", "MZ\u202e" + "x" * 500)  # no bind: set_call binds
        return stamp()

    record = asyncio.run(main())
    assert record.__dict__["call_id"] == "CA1\\nFAKE: admin logged in\\x1b[2J"
    stream = record.__dict__["stream_id"]
    assert stream.startswith("MZ\\u202e") and stream.endswith("...") and len(stream) < 80
    assert "provider" not in record.__dict__


def test_install_adds_one_filter_per_handler() -> None:
    handler = logging.NullHandler()
    logctx.install([handler])
    logctx.install([handler])
    assert sum(isinstance(f, ContextFilter) for f in handler.filters) == 1


# --- end to end: a real call, every app.* line of it names it ----------------------------------------------


@pytest.fixture
def app_info_logs() -> Iterator[LogCapture]:
    """Every record at INFO and above, through ContextFilter as `bargein serve` installs it on its handlers."""
    capture = LogCapture()
    capture.addFilter(ContextFilter())
    root, app_logger = logging.getLogger(), logging.getLogger("app")
    old_level = app_logger.level
    app_logger.setLevel(logging.INFO)
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        app_logger.setLevel(old_level)


async def call_with_a_dead_llm(provider: str, url: str, clients: httpx.AsyncClient) -> EmulatedCall:
    """Greeting, one caller word, the agent's turn fails on the LLM and speaks its fallback, then a hang-up."""
    word = load_clip(next(c for c in read_manifest() if c.category == "isolated_word"))
    async with EmulatedCall.start(provider, url) as call:
        await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 10)
        await call.send_audio(word)
        for _ in range(100):
            record = (await clients.get(f"{url}/calls/{call.call_id}")).json()
            if any(t["role"] == "agent" and t["fallback"] for t in record["turns"]):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no fallback turn: {record}")
        await call.hangup()
        for _ in range(100):
            if (await clients.get(f"{url}/calls/{call.call_id}")).json()["end_reason"] is not None:
                break
            await asyncio.sleep(0.05)
    return call


def test_every_app_log_line_of_a_call_carries_its_ids(
    provider: str, server_factory: Any, app_info_logs: LogCapture
) -> None:
    dead_llm = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: the turn logs a provider failure
    srv = server_factory(llm_base_url=dead_llm, agent_greeting="Hello.")

    async def scenario() -> EmulatedCall:
        async with httpx.AsyncClient(trust_env=False) as clients:
            return await call_with_a_dead_llm(provider, srv.url, clients)

    call = asyncio.run(scenario())
    server_side = [r for r in app_info_logs.records if r.name.startswith("app.") and r.threadName == "uvicorn"]
    started = next(i for i, r in enumerate(server_side) if r.getMessage().startswith("stream started"))
    of_the_call = server_side[started:]
    loggers = {r.name for r in of_the_call}
    assert {"app.call.session", "app.call.turn"} <= loggers, [r.getMessage() for r in of_the_call]
    assert any(r.getMessage().startswith("stream ended") for r in of_the_call)
    for record in of_the_call:
        assert fields(record) == {"call_id": call.call_id, "stream_id": call.stream_id, "provider": provider}, (
            record.name, record.getMessage(), fields(record)
        )


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_bargein_serve_names_the_call_on_its_lines_in_either_format(log_format: str, tmp_path: Path) -> None:
    """The real `bargein serve`: configure_logging installs the filter on its handlers, for both formats."""
    port = free_port()
    env = serve_env(LOG_FORMAT=log_format, LOG_LEVEL="INFO", AGENT_GREETING="Hello.",
                    PUBLIC_URL=f"http://127.0.0.1:{port}", LLM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    log = tmp_path / "stderr.log"

    async def scenario(url: str) -> EmulatedCall:
        async with httpx.AsyncClient(trust_env=False) as clients:
            return await call_with_a_dead_llm("twilio", url, clients)

    with serving(tmp_path, ["--port", str(port), "--host", "127.0.0.1"], env) as url:
        call = asyncio.run(scenario(url))
        deadline = time.monotonic() + 5
        while "stream ended" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = log.read_text().splitlines()
    names = f"call={call.call_id} stream={call.stream_id}:"
    if log_format == "json":
        records = [json.loads(line) for line in lines]
    else:  # "<date> <time> LEVEL logger[ call=... stream=...]: message"; a traceback's lines have no logger
        records = [
            {"logger": line.split()[3].rstrip(":"), "message": line, "named": names in line}
            for line in lines if len(line.split()) > 3 and line.split()[2].isupper()
        ]
    started = next(i for i, r in enumerate(records) if "stream started" in r["message"])
    of_the_call = [r for r in records[started:] if r["logger"].startswith("app.")]
    assert any(r["logger"] == "app.call.turn" for r in of_the_call), lines
    assert any("stream ended" in r["message"] for r in of_the_call), lines
    for r in of_the_call:
        if log_format == "json":
            assert (r.get("call_id"), r.get("stream_id"), r.get("provider")) == (
                call.call_id, call.stream_id, "twilio"), r
        else:
            assert r["named"], r["message"]
