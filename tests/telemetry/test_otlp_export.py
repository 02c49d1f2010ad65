"""Spans over a real OTLP/HTTP export: the real app under uvicorn with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a
receiver on loopback (app/edge/otlp_receiver.py), a call from the provider-edge emulator with real recorded
speech, and the protobuf the SDK's batch thread POSTed, decoded, checked against the call record."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.edge.emulator import EmulatedCall
from app.edge.llm_server import ScriptedLlmServer
from app.edge.otlp_receiver import OtlpReceiver, ReceivedSpan
from app.offline.corpus import load_clip, read_manifest

REPO = Path(__file__).resolve().parents[2]
REPLY = (
    "Sure. Your order left our warehouse yesterday afternoon and it is on the truck now. "
    "The driver usually arrives between nine and eleven in the morning. If nobody is home, the parcel goes to "
    "the pickup point on Main Street. You can also change the address until tonight. Is there anything else?"
)
GREETING = (
    "Thanks for calling. This is a long announcement that keeps the agent talking for a while. "
    "Our opening hours are nine to five on weekdays, and ten to two on Saturdays."
)


def speech(category: str, index: int = 0) -> Any:
    return load_clip([r for r in read_manifest() if r.category == category][index])


async def ended_record(url: str, call_id: str, timeout_s: float = 5.0) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(int(timeout_s / 0.05)):
            record: dict[str, Any] = (await client.get(f"{url}/calls/{call_id}")).json()
            if record.get("ended_at") is not None:
                return record
            await asyncio.sleep(0.05)
    raise AssertionError("the call never ended")


def exported(receiver: OtlpReceiver, srv: Any) -> list[ReceivedSpan]:
    assert srv.app.state.tracer.force_flush(5000)  # the batch thread POSTs now, not after its 5 s delay
    return receiver.wait_for(lambda spans: any(s.name == "call" for s in spans), 5)


def one(spans: list[ReceivedSpan], name: str, **attributes: Any) -> ReceivedSpan:
    found = [s for s in spans if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, (name, attributes, [(s.name, s.attributes) for s in spans])
    return found[0]


def test_a_barge_in_call_is_exported_as_call_turn_and_barge_in_spans(server_factory: Any) -> None:
    async def scenario(receiver: OtlpReceiver) -> tuple[dict[str, Any], str, Any]:
        async with ScriptedLlmServer([REPLY], token_delay_s=0.1) as llm:
            srv = server_factory(llm_base_url=llm.base_url, agent_greeting="Hello.",
                                 otel_exporter_otlp_endpoint=receiver.url)
            async with EmulatedCall.start("twilio", srv.url) as call:
                await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 10)
                await asyncio.sleep(0.3)
                greeting = call.received_samples
                await call.send_audio(speech("isolated_word"))  # one word: the agent answers
                await call.wait_until(lambda: call.played_samples - greeting > 1.5 * 8000, 20)
                await call.send_audio(speech("read", 1)[: int(2.0 * 8000)])  # the caller talks over the answer
                await call.wait_until(lambda: bool(call.clears), 5)
                await asyncio.sleep(0.3)
                await call.hangup()
            record = await ended_record(srv.url, call.call_id)
            async with httpx.AsyncClient(trust_env=False) as client:
                metrics = (await client.get(f"{srv.url}/metrics")).text
        return record, metrics, srv

    with OtlpReceiver() as receiver:
        record, metrics, srv = asyncio.run(scenario(receiver))
        spans = exported(receiver, srv)

    # One trace per call, rooted at the call span, service.name from OTEL_SERVICE_NAME's default.
    root = one(spans, "call")
    mine = [s for s in spans if s.trace_id == root.trace_id]
    assert root.parent_span_id == "" and root.resource["service.name"] == "bargein"
    assert root.attributes["call_id"] == record["call_id"] and root.attributes["provider"] == "twilio"
    assert root.attributes["stream_id"] == record["stream_ids"][0]
    assert root.attributes["end_reason"] == record["end_reason"] == "stop"
    assert root.attributes["turns"] == len(record["turns"]) and root.attributes["bargeins"] == len(record["bargeins"])
    assert all(root.start_ns <= s.start_ns and s.end_ns <= root.end_ns for s in mine)

    # A span per turn of the record, each the call's child.
    by_id = {s.attributes["turn_id"]: s for s in mine if s.name.endswith(" turn")}
    assert sorted(by_id) == [t["id"] for t in record["turns"]]
    for turn in record["turns"]:
        span = by_id[turn["id"]]
        assert span.name == f"{turn['role']} turn" and span.parent_span_id == root.span_id
        if span.attributes.get("ended_by_call_end"):  # the caller was talking at the hang-up: no turn end
            assert turn["ended_at"] is None and span.end_ns == root.end_ns
        else:
            assert span.attributes["interrupted"] == turn["interrupted"]
        assert span.end_ns >= span.start_ns

    # The barge-in: under the agent turn it cut, with the record's own figures.
    [bargein] = [b for b in record["bargeins"] if b["outcome"] == "stopped"]
    span = one(mine, "barge-in", barge_in_event_id=bargein["id"])
    cut = by_id[bargein["turn_id"]]
    assert span.parent_span_id == cut.span_id and cut.name == "agent turn"
    a = span.attributes
    assert a["turn_id"] == bargein["turn_id"]
    assert (a["vad_confidence"], a["vad_duration_ms"], a["energy_dbfs"]) == (
        bargein["confidence"], bargein["sustained_ms"], bargein["peak_dbfs"])
    assert (a["clear_sent_ms"], a["tts_flush_ms"], a["llm_cancel_ms"], a["total_handle_ms"], a["settled_ms"]) == (
        bargein["clear_sent_ms"], bargein["tts_stopped_ms"], bargein["llm_closed_ms"], bargein["total_ms"],
        bargein["settled_ms"])
    assert a["agent_utterance_truncated_at"] == bargein["cut_char_offset"] is not None
    assert a["heard_audio_ms"] == bargein["heard_audio_ms"]
    assert (a["outcome"], a["reason"], a["false_barge_in"]) == ("stopped", bargein["reason"], False)
    # Timed by the events: deciding frame -> handled is the settling plus the handling.
    assert span.duration_ms == pytest.approx(bargein["settled_ms"] + bargein["total_ms"], abs=0.01)
    [cut_turn] = [t for t in record["turns"] if t["id"] == bargein["turn_id"]]
    assert cut.attributes["agent_utterance_truncated_at"] == cut_turn["heard_chars"]
    assert cut.attributes["heard_audio_ms"] == cut_turn["heard_audio_ms"]

    # The answer's LLM request hangs under its turn, closed by the barge-in; it waited turn_gap_ms after the
    # caller's turn ended, which the Prometheus histogram counted too.
    llm = one(mine, "llm", turn_id=bargein["turn_id"])
    assert llm.parent_span_id == cut.span_id and llm.attributes["reason"] in ("cancelled", "stopped")
    assert 0 < llm.attributes["first_token_ms"] < llm.duration_ms
    gap = cut.attributes["turn_gap_ms"]
    assert 0 < gap < 5000
    assert "bargein_turn_gap_seconds_count 1.0" in metrics
    assert all(s.parent_span_id in {x.span_id for x in mine} for s in mine if s is not root)


def test_a_backchannel_is_a_false_barge_in_span(server_factory: Any) -> None:
    async def scenario(receiver: OtlpReceiver) -> tuple[dict[str, Any], Any]:
        srv = server_factory(agent_greeting=GREETING, otel_exporter_otlp_endpoint=receiver.url)
        async with EmulatedCall.start("plivo", srv.url) as call:
            await call.wait_until(lambda: call.played_samples > 2.0 * 8000, 20)
            await call.send_audio(speech("isolated_word"))  # a one-word digit: the stand-in for "yeah"
            await call.wait_until(lambda: bool(call.clears), 5)
            at_clear = call.received_samples
            await call.wait_until(lambda: call.received_samples > at_clear + 4000, 3)  # it resumed
            await call.hangup()
        return await ended_record(srv.url, call.call_id), srv

    with OtlpReceiver() as receiver:
        record, srv = asyncio.run(scenario(receiver))
        spans = exported(receiver, srv)
    [bargein] = record["bargeins"]
    assert bargein["outcome"] == "resumed"
    span = one(spans, "barge-in", barge_in_event_id=bargein["id"])
    assert span.attributes["false_barge_in"] is True and span.attributes["reason"] == bargein["reason"]
    assert span.attributes["resumed_from_ms"] == bargein["resumed_from_ms"]
    assert "llm_cancel_ms" not in span.attributes  # nothing was closed
    assert one(spans, "call").attributes["false_barge_ins"] == 1


ZERO_COST = textwrap.dedent("""
    import asyncio, sys
    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(_env_file=None, otel_exporter_otlp_endpoint=sys.argv[1]))

    async def main():
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(main())
    loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter",
                                                            "app.telemetry.tracing")))
    print(app.state.tracer is not None, len(loaded))
""")


@pytest.mark.parametrize("endpoint", ["", "http://127.0.0.1:9"])
def test_with_no_endpoint_the_sdk_is_never_imported(endpoint: str) -> None:
    """FastAPI itself imports the OpenTelemetry *API*; the SDK, the exporter and our tracer stay out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FASTAPI_OTEL"))}
    result = subprocess.run([sys.executable, "-c", ZERO_COST, endpoint], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    tracing, loaded = result.stdout.split()
    if endpoint:
        assert tracing == "True" and int(loaded) > 0  # the check can see an import
    else:
        assert tracing == "False" and loaded == "0"
