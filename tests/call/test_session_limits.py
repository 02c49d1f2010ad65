"""The session's start deadline and its budget for bad-frame warnings, on a fake clock."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.call.session import INVALID_LOG_BURST, INVALID_LOG_INTERVAL_S, StreamRefused

from .test_session import Harness


def test_junk_frames_do_not_move_the_start_deadline() -> None:
    async def scenario() -> None:
        h = Harness()
        deadline = h.session.opened_at + h.settings.stream_start_timeout_s
        while h.clock.now() + 0.2 < deadline:
            h.clock.advance(0.2)
            await h.session.handle_text('{"event":"keepalive"}', h.clock.now())
            await h.session.on_tick(h.clock.now())  # still inside the deadline: nothing happens
        h.clock.advance(deadline - h.clock.now() + 0.01)
        with pytest.raises(StreamRefused, match="no start"):
            await h.session.on_tick(h.clock.now())
        await h.session.close("no start")

    asyncio.run(scenario())


def test_a_started_stream_is_not_held_to_the_start_deadline() -> None:
    async def scenario() -> None:
        h = Harness()
        await h.start()
        for _ in range(int(h.settings.stream_start_timeout_s / 0.5) + 2):
            h.clock.advance(0.5)
            await h.session.handle_text(h.media_frame(loud=False), h.clock.now())
            await h.session.on_tick(h.clock.now())
        await h.session.close("stop")

    asyncio.run(scenario())


def test_bad_frames_are_all_counted_but_logged_in_a_burst_then_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        h = Harness()
        await h.start()
        for _ in range(200):
            h.clock.advance(0.001)
            await h.session.handle_text('{"event":"keepalive\\u001b[2J\\n"}', h.clock.now())
        assert h.session.record is not None and h.session.record.invalid_frames == 200
        h.clock.advance(INVALID_LOG_INTERVAL_S)
        await h.session.on_tick(h.clock.now())  # the timer sums up what the burst left out
        await h.session.on_tick(h.clock.now())  # once
        await h.session.close("stop")

    with caplog.at_level(logging.WARNING, logger="app.call.session"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if "inbound frame" in r.getMessage()]
    assert len(lines) == INVALID_LOG_BURST + 1, lines
    assert lines[-1].startswith(f"ignored {200 - INVALID_LOG_BURST} more inbound frames")
    assert all("\x1b" not in line and "\n" not in line for line in lines)
