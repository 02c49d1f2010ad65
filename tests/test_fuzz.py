"""The fuzzer (app/edge/fuzz.py) on its own, then its frames against the real app over real sockets, beside two
honest calls that must still barge in with their records intact."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from app.edge.emulator import EmulatedCall
from app.edge.fuzz import ALWAYS_INVALID, WS_MAX_MESSAGE, Target, aimed, frames, hostile_frames, media_of_size
from app.edge.hostile import FuzzTally, HealthPoller, hostile_connection, invalid_frame_counts
from app.edge.llm_server import ScriptedLlmServer
from app.offline.corpus import load_clip, read_manifest
from providers.telephony import PROTOCOLS
from providers.telephony.events import CallEnded, CallStarted, InvalidMessage, UnknownEvent
from tests.conftest import LogCapture

PROVIDERS = ("twilio", "plivo")
REPLY = (
    "Sure. Let me look that up for you right now, it should only take a moment. "
    "Your order left our warehouse yesterday afternoon and it is on the delivery truck this morning. "
    "The driver usually arrives between nine and eleven, and you will get a text message about an hour before."
)
FUZZ_CONNECTIONS = 6
FUZZ_FRAMES_EACH = 500  # 3,000 in all
WATCHED_LOGGERS = ("app", "providers", "uvicorn", "uvicorn.error", "asyncio")


# --- the fuzzer alone --------------------------------------------------------------------------------------


def test_frames_are_the_same_for_the_same_seed_and_differ_between_seeds() -> None:
    for provider in PROVIDERS:
        first = list(frames(provider, 7, 400))
        assert first == list(frames(provider, 7, 400))
        assert first != list(frames(provider, 8, 400))
        assert len(first) == 400
    assert list(frames("twilio", 7, 50)) != list(frames("plivo", 7, 50))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_kind_appears_and_only_marked_frames_break_the_rules(provider: str) -> None:
    made = list(hostile_frames(provider, 3, 4000, live=[Target("CA" + "1" * 32, "MZ" + "1" * 32)]))  # type: ignore[arg-type]
    kinds = Counter(h.kind for h in made)
    expected = {"opening", "media", "mutated", "truncated", "bad_media", "big_media", "over_cap", "unknown_event",
                "mark", "start", "stop", "binary", "bad_utf8_text", "garbage", "non_object", "cross", "dtmf", "live"}
    assert expected <= set(kinds), expected - set(kinds)
    for h in made:
        size = len(h.data.encode("utf-8")) if isinstance(h.data, str) else len(h.data)
        assert h.above_cap == (size > WS_MAX_MESSAGE)
        if isinstance(h.data, str):
            h.data.encode("utf-8")  # a text frame is always valid UTF-8 (lone surrogates go out as \\ud800)
        else:
            assert h.as_text == (h.kind == "bad_utf8_text")
            if h.as_text:
                with pytest.raises(UnicodeDecodeError):
                    h.data.decode("utf-8")
    assert any(h.above_cap for h in made) and not all(h.above_cap for h in made if h.kind == "big_media")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_codec_never_raises_and_refuses_every_always_invalid_frame(provider: str) -> None:
    codec = PROTOCOLS[provider]()
    events: Counter[str] = Counter()
    for h in hostile_frames(provider, 11, 3000):  # type: ignore[arg-type]
        if not isinstance(h.data, str):
            continue
        out = codec.receive(h.data)
        events.update(type(e).__name__ for e in out)
        if h.kind in ALWAYS_INVALID:
            assert all(isinstance(e, InvalidMessage | UnknownEvent) for e in out), (h.kind, h.data[:200], out)
        if any(isinstance(e, CallEnded) for e in out) or h.expect_close:
            codec = PROTOCOLS[provider]()  # the server closes that socket; the next frames meet a new one
    assert events["CallStarted"] >= 1 and events["AudioReceived"] >= 1 and events["InvalidMessage"] > 1000


def test_aimed_frames_all_name_the_target() -> None:
    target = Target("CA" + "2" * 32, "MZ" + "3" * 32)
    made = list(aimed("twilio", 1, 40, target))
    assert all(h.kind == "live" for h in made)
    assert all(target.call_id in h.data or target.stream_id in str(h.data) for h in made)
    starts = [h for h in made if '"event":"start"' in str(h.data)]
    assert starts, "no hijacking start among the aimed frames"
    codec = PROTOCOLS["twilio"]()
    [started] = codec.receive(str(starts[0].data))
    assert isinstance(started, CallStarted) and started.call_id == target.call_id


def test_media_of_size_is_a_well_formed_frame_of_that_size() -> None:
    for provider in PROVIDERS:
        text = media_of_size(provider, "MZ" + "4" * 32, 100 * 1024, tail=b"\x01" * 800)  # type: ignore[arg-type]
        assert abs(len(text) - 100 * 1024) < 8
        assert json.loads(text)["event"] == "media"


# --- over real sockets -------------------------------------------------------------------------------------




@pytest.fixture
def captured_logs() -> Iterator[LogCapture]:
    handler = LogCapture()
    loggers = [logging.getLogger(name) for name in WATCHED_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.name in ("app", "providers"):
            lg.setLevel(logging.INFO)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def _injected(message: str) -> bool:
    """A raw control character (a forged line, an escape sequence) or text no UTF-8 log file can hold."""
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return any((ord(c) < 32 and c != "\t") or 0x7F <= ord(c) < 0xA0 for c in message)


def _speech() -> np.ndarray:
    rows = [r for r in read_manifest() if r.category == "read"]
    return load_clip(rows[1])[: int(1.2 * 8000)]


def _word() -> np.ndarray:
    rows = [r for r in read_manifest() if r.category == "isolated_word"]
    return load_clip(rows[0])


async def _get(url: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as client:
        return await client.get(path)


def test_fuzzed_and_hostile_frames_beside_two_live_calls(server_factory: Any, captured_logs: LogCapture) -> None:
    async def scenario() -> dict[str, Any]:
        async with ScriptedLlmServer([REPLY], token_delay_s=0.05) as llm:
            # No greeting: the honest callers say a word and the agent answers with the long reply; a hostile
            # stream that starts a call gets no free synthesis.
            srv = server_factory(llm_base_url=llm.base_url, agent_greeting="")
            async with (
                EmulatedCall.start("twilio", srv.url) as tw,
                EmulatedCall.start("plivo", srv.url) as pl,
            ):
                honest = (tw, pl)
                await asyncio.gather(*(c.send_audio(_word()) for c in honest))
                for call in honest:
                    await call.wait_until(lambda c=call: c.played_samples > 4000, 15)
                targets = [Target(c.call_id, c.stream_id) for c in honest]
                tallies = [FuzzTally() for _ in range(FUZZ_CONNECTIONS)]
                async with HealthPoller(srv.url, interval_s=0.05) as health:
                    fuzz = asyncio.gather(*(
                        hostile_connection(
                            srv.url, PROVIDERS[i % 2],
                            hostile_frames(PROVIDERS[i % 2], 100 + i, FUZZ_FRAMES_EACH, live=targets),
                            tally, interval_s=0.004, close_wait_s=0.5,
                        )
                        for i, tally in enumerate(tallies)
                    ))
                    await asyncio.sleep(0.3)
                    speech = _speech()
                    await asyncio.gather(*(c.send_audio(speech) for c in honest))
                    for call in honest:
                        await call.wait_until(lambda c=call: bool(c.clears), 5)
                    fuzz_running_at_clears = not fuzz.done()
                    await asyncio.wait_for(fuzz, 60)
                    fuzz_ended = time.monotonic()
                    await asyncio.sleep(0.2)
                records = {c.provider: (await _get(srv.url, f"/calls/{c.call_id}")).json() for c in honest}
                ended = {c.provider: (c.closed_by, c.close_code) for c in honest if c.closed}
                metrics = (await _get(srv.url, "/metrics")).text
                total = FuzzTally()
                for tally in tallies:
                    total.merge(tally)
                return {
                    "calls": honest, "records": records, "ended": ended, "metrics": metrics, "tally": total,
                    "health": health,
                    "running_at_clears": fuzz_running_at_clears, "fuzz_ended": fuzz_ended,
                }

    out = asyncio.run(scenario())
    tally: FuzzTally = out["tally"]
    health: HealthPoller = out["health"]

    # The fuzz really ran beside the barge-ins, and every frame went out (sockets the server closed reconnect).
    assert out["running_at_clears"], "the fuzz was over before the honest callers barged in"
    assert tally.frames + tally.lost == FUZZ_CONNECTIONS * FUZZ_FRAMES_EACH and tally.lost <= 10, tally
    assert tally.connections >= FUZZ_CONNECTIONS

    # The server stayed up and answered /healthz 200 all along.
    assert health.polls >= 10 and not health.failures, health.summary()
    assert health.worst_ms < 1000, health.summary()

    # No traceback from our code, uvicorn, or the server's event loop (the thread named "uvicorn": the test's own
    # loop also runs the emulator and the loopback LLM); nothing a peer sent reached a log line raw.
    server_side = [r for r in captured_logs.records if not r.name.startswith("asyncio") or r.threadName == "uvicorn"]
    tracebacks = [r for r in server_side if r.levelno >= logging.ERROR and (r.exc_info or r.stack_info)]
    assert not tracebacks, [f"{r.name}: {r.getMessage()[:200]}" for r in tracebacks]
    errors = [r for r in server_side if r.levelno >= logging.ERROR and r.name.startswith("asyncio")]
    assert not errors, [r.getMessage()[:200] for r in errors]
    ours = [r for r in captured_logs.records if r.name.split(".")[0] in ("app", "providers", "uvicorn")]
    injected = [r for r in ours if _injected(r.getMessage())]
    assert not injected, [f"{r.name}: {r.getMessage()[:200]!r}" for r in injected]

    # The server shut the socket on every frame it must (over the cap, not UTF-8, a stop for its stream).
    assert not tally.unclosed, tally.unclosed

    # Both honest calls barged in while the fuzz ran, and their records are their own.
    for call in out["calls"]:
        record = out["records"][call.provider]
        assert call.clears and call.clears[0] < out["fuzz_ended"]
        assert not call.violations, call.violations
        assert call.provider not in out["ended"], f"the server ended the call: {out['ended']}"
        assert record["provider"] == call.provider
        assert record["stream_ids"] == [call.stream_id], record["stream_ids"]
        assert record["active"] and record["end_reason"] is None
        assert record["invalid_frames"] == 0
        assert len(record["bargeins"]) == 1, record["bargeins"]
        assert any(t["role"] == "agent" and t["interrupted"] for t in record["turns"]), record["turns"]

    # The server counted what it refused; never more frames than it was sent.
    counted = invalid_frame_counts(out["metrics"])
    surely_invalid = sum(v for k, v in tally.kinds.items() if k in ALWAYS_INVALID)
    assert sum(counted.values()) >= 0.5 * surely_invalid, (counted, tally.kinds)
    assert sum(counted.values()) <= tally.frames, (counted, tally.frames)
    assert counted.get("binary", 0) >= 1 and counted.get("unknown", 0) >= 1
