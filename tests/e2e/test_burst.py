"""Calls arriving together (issue 14), over real sockets: the real app under uvicorn on a loopback port.

- The greeting is the same for every call: a burst synthesises each of its sentences once (espeak-ng, the
  TTS cache in providers/tts/cached.py), whatever the number of calls; /stats shows the cache's counters.
- A stream holds a slot among the unstarted ones (MAX_UNSTARTED_STREAMS_PER_ADDRESS) from its upgrade until
  its `start` is found valid; the store read that follows (a call moved from another replica carries on) is
  no longer inside that window, so calls arriving together from one media server are not refused while a
  real SQLite store catches up.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx

from app.call.turn import split_sentences
from app.edge.emulator import EmulatedCall
from app.transcript import CallRecord
from tests.e2e.test_connection_limits import GREETING, RawStream, new_ids, start_frame, upgrade_status, wait_for

CALLS = 12


async def heard_a_second(call: EmulatedCall) -> None:
    await call.wait_until(lambda: call.received_samples >= 8000, 10)


def test_a_burst_of_calls_synthesises_each_greeting_sentence_once(server_factory: Any) -> None:
    srv = server_factory(agent_greeting=GREETING, max_unstarted_streams_per_address=CALLS)  # all from 127.0.0.1
    sentences = len(split_sentences(GREETING))

    async def scenario() -> dict[str, int]:
        calls = [EmulatedCall.start("twilio" if i % 2 else "plivo", srv.url) for i in range(CALLS)]
        try:
            await asyncio.gather(*(call.connect() for call in calls))  # all at once: the first synthesis is shared
            for call in calls:
                await heard_a_second(call)
            async with httpx.AsyncClient(trust_env=False) as client:
                response = await client.get(f"{srv.url}/stats")
            cache: dict[str, int] = response.json()["tts_cache"]
            return cache
        finally:
            for call in calls:
                await call.close()

    cache = asyncio.run(scenario())
    # The fallback line at start-up, then each sentence of the greeting once: the first call to ask for a sentence
    # synthesises it, the other calls join that synthesis or find it kept.
    assert cache["misses"] <= 1 + sentences, cache
    assert cache["hits"] + cache["shared"] >= (CALLS - 1), cache
    assert cache["entries"] == cache["misses"], cache


def test_a_valid_start_frees_its_unstarted_slot_before_the_store_is_read(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory(max_unstarted_streams_per_address=1, stream_start_timeout_s=10, agent_greeting=GREETING,
                         call_store_url=f"sqlite:///{tmp_path / 'calls.db'}")
    store = srv.registry.writer.store
    reading, gate = threading.Event(), threading.Event()
    read_call = store.get_call

    async def slow_get_call(call_id: str) -> CallRecord | None:
        reading.set()
        await asyncio.to_thread(gate.wait, 10)  # the store is busy (a burst's writes): the read waits
        record: CallRecord | None = await read_call(call_id)
        return record

    store.get_call = slow_get_call

    async def scenario() -> None:
        started = await RawStream.open(srv.url, "plivo")
        await started.ws.send(start_frame("plivo", *new_ids("plivo")))
        await wait_for(reading.is_set, 5)
        # Its start is valid and its store read pending: the address's one slot is free for the next call.
        unstarted = await RawStream.open(srv.url, "plivo")
        # ... which, not having started, holds the slot: the cap still refuses a third.
        assert await upgrade_status(srv.url, "plivo", "127.0.0.1") == 403
        assert started.received == 0  # the first call is still waiting for the store
        gate.set()
        await wait_for(lambda: started.received > 0, 5)  # then it starts: the greeting plays
        for stream in (started, unstarted):
            await stream.aclose()

    try:
        asyncio.run(scenario())
    finally:
        gate.set()
