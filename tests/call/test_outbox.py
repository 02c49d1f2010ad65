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
