"""Outbox: queued agent audio goes out whole and in order, and queuing it holds no second copy of it."""

from __future__ import annotations

import asyncio
import base64
import json
import tracemalloc

from app.bargein.playback import PlaybackLedger
from app.call.outbox import Outbox
from app.clock import MonotonicClock
from providers.telephony.twilio import TwilioProtocol

START = json.dumps({"event": "start", "streamSid": "MZ1",
                    "start": {"streamSid": "MZ1", "callSid": "CA1", "accountSid": "AC1"}})


def make_outbox(chunk_ms: int = 160, lead_ms: int = 10_000) -> tuple[Outbox, list[str]]:
    protocol = TwilioProtocol()
    protocol.receive(START)
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    return Outbox(protocol, send, PlaybackLedger(), MonotonicClock(), chunk_ms, lead_ms), sent


def test_audio_goes_out_in_chunks_in_order_each_followed_by_its_mark() -> None:
    outbox, sent = make_outbox(chunk_ms=20)
    first, second = bytes(range(256)) * 2, bytes(range(255, -1, -1))  # 512 + 256 bytes: 3.2 and 1.6 chunks

    async def run() -> None:
        outbox.enqueue(1, first)
        outbox.enqueue(2, second)
        pacer = asyncio.create_task(outbox.run())
        await asyncio.wait_for(outbox.wait_for_room(0.0, 0.0), 5.0)  # returns once the queue is empty
        pacer.cancel()

    asyncio.run(run())
    frames = [json.loads(t) for t in sent]
    media = [base64.b64decode(f["media"]["payload"]) for f in frames if f["event"] == "media"]
    assert [len(m) for m in media] == [160, 160, 160, 32, 160, 96]  # chunks never span two enqueued pieces
    assert b"".join(media) == first + second
    assert [f["event"] for f in frames] == ["media", "mark"] * len(media)
    assert outbox.queued_ms == 0.0 and outbox.sent_chunks == len(media)


def test_queuing_audio_does_not_copy_it() -> None:
    outbox, _ = make_outbox()
    audio = bytes(2_000_000)  # 250 s of mu-law: a long agent turn, which the turn itself keeps
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        outbox.enqueue(1, audio)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 1563 chunk entries of a few hundred bytes each at most, nowhere near the audio's 2 MB
    assert after - before < len(audio) // 4
    assert outbox.queued_ms == len(audio) / 8


def test_the_calls_first_markers_follow_short_chunks_until_enough_round_trip_samples_are_on_their_way() -> None:
    # 160 ms chunks: the third acknowledgement (the round-trip estimate's minimum) would come back only after
    # ~480 ms of audio; 40 ms chunks until three markers are out bring it in after ~120 ms.
    outbox, sent = make_outbox(chunk_ms=160)
    audio = bytes(range(256)) * 5  # 1280 bytes: 160 ms

    async def run() -> None:
        outbox.enqueue(1, audio * 3)
        pacer = asyncio.create_task(outbox.run())
        await asyncio.wait_for(outbox.wait_for_room(0.0, 0.0), 5.0)
        pacer.cancel()

    asyncio.run(run())
    frames = [json.loads(t) for t in sent]
    media = [base64.b64decode(f["media"]["payload"]) for f in frames if f["event"] == "media"]
    assert [len(m) for m in media] == [320, 320, 320, 320, 1280, 1280]  # the rest of the first chunk, then whole
    assert b"".join(media) == audio * 3
    assert [f["event"] for f in frames] == ["media", "mark"] * len(media)


def test_once_acknowledgements_came_back_chunks_are_whole_again() -> None:
    outbox, sent = make_outbox(chunk_ms=160)
    ledger = outbox.ledger
    for i in range(3):  # a previous turn's markers, acknowledged: the estimate has its samples
        ledger.ack(ledger.chunk_sent(0, 160.0, float(i)), float(i) + 0.3)
    assert not ledger.needs_rtt_samples

    async def run() -> None:
        outbox.enqueue(1, bytes(2560))
        pacer = asyncio.create_task(outbox.run())
        await asyncio.wait_for(outbox.wait_for_room(0.0, 0.0), 5.0)
        pacer.cancel()

    asyncio.run(run())
    media = [json.loads(t) for t in sent if '"media"' in t]
    assert [len(base64.b64decode(f["media"]["payload"])) for f in media] == [1280, 1280]
