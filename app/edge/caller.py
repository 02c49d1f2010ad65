"""The caller's side of an emulated call: audio goes out as 20 ms mu-law frames, each sent at the end of its
20 ms on an absolute schedule (or as fast as possible for a non-realtime batch), with digital silence, a
quiet line's hiss, or nothing, in between (docs/reference: telephony-protocols.md §0-2)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from websockets.exceptions import ConnectionClosed

from app.audio import pcm16_to_ulaw, white_noise
from app.edge.playout import SAMPLE_RATE

Clock = Callable[[], float]
# Between the caller's own audio: "silence" is digital silence (every sample 0, as a muted or silence-suppressed
# leg), "hiss" a quiet line (white noise at HISS_DBFS, like a PSTN line's floor), "none" no frames at all.
IdleAudio = Literal["silence", "hiss", "none"]
SendFrame = Callable[[bytes, float], Awaitable[float]]  # (payload, slot timestamp in ms) -> when it was sent

FRAME_SAMPLES = 160
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
ULAW_SILENCE = 0xFF
_SILENCE_FRAME = bytes([ULAW_SILENCE]) * FRAME_SAMPLES
HISS_DBFS = -70.0
_HISS_FRAMES = 500  # 10 s of hiss, cycled: no period a detector could lock on to within a call's turn


def _hiss_frames() -> list[bytes]:
    ulaw = pcm16_to_ulaw(white_noise(_HISS_FRAMES * FRAME_S, HISS_DBFS, seed=70))
    return [ulaw[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(_HISS_FRAMES)]


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait for `event` up to `seconds`; False on timeout.

    Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that arrives as the event fires, and
    a cancelled task then loops on (seen here: a call's close() waited forever on its playout task).
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


@dataclass(slots=True)
class _Batch:
    remaining: int
    done: asyncio.Future[None]
    times: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Frame:
    payload: bytes
    batch: _Batch
    fast: bool


class CallerFrames:
    """The queue of caller frames and the task that paces them onto the stream's 20 ms grid."""

    def __init__(self, send_frame: SendFrame, clock: Clock, idle_audio: IdleAudio) -> None:
        self._send_frame = send_frame
        self._clock = clock
        self._idle_audio = idle_audio
        self._queue: deque[_Frame] = deque()
        self._wake = asyncio.Event()

    async def send(self, ulaw: bytes, realtime: bool) -> list[float]:
        """Queue whole frames of mu-law and wait until they have gone out; returns each frame's send time."""
        batch = _Batch(len(ulaw) // FRAME_SAMPLES, asyncio.get_running_loop().create_future())
        frames = [
            _Frame(ulaw[i : i + FRAME_SAMPLES], batch, not realtime)
            for i in range(0, len(ulaw), FRAME_SAMPLES)
        ]
        self._queue.extend(frames)
        self._wake.set()
        try:
            await batch.done
        except asyncio.CancelledError:
            self._queue = deque(f for f in self._queue if f.batch is not batch)
            raise
        return batch.times

    def release(self) -> None:
        """The call is over: every waiting `send` returns with the times of the frames that went out."""
        for frame in self._queue:
            if not frame.batch.done.done():
                frame.batch.done.set_result(None)
        self._queue.clear()

    async def run(self, grid0: float) -> None:
        """Send frames on the absolute grid that starts at `grid0` until the connection closes."""
        slot = 0
        silence = self._idle_audio != "none"  # something goes out in every idle slot
        idle = _hiss_frames() if self._idle_audio == "hiss" else [_SILENCE_FRAME]
        try:
            while True:
                if not self._queue and not silence:
                    self._wake.clear()
                    await self._wake.wait()
                    # Idle with nothing sent: the next frame is the one being captured now.
                    slot = max(slot, int((self._clock() - grid0) / FRAME_S))
                if self._queue and self._queue[0].fast:
                    frame = self._queue.popleft()
                    self._frame_sent(frame, await self._send_frame(frame.payload, slot * FRAME_S * 1000))
                    continue
                # Sleep to the end of this slot on the absolute grid; when late, catch up without drifting.
                delay = grid0 + (slot + 1) * FRAME_S - self._clock()
                if delay > 0:
                    self._wake.clear()
                    await wait_event(self._wake, delay)
                    if self._clock() < grid0 + (slot + 1) * FRAME_S:
                        continue  # woken early by new audio: re-evaluate (it may be a fast batch)
                if self._queue:
                    frame = self._queue.popleft()
                    self._frame_sent(frame, await self._send_frame(frame.payload, slot * FRAME_S * 1000))
                elif silence:
                    await self._send_frame(idle[slot % len(idle)], slot * FRAME_S * 1000)
                slot += 1
        except ConnectionClosed:
            pass
        finally:
            self.release()

    @staticmethod
    def _frame_sent(frame: _Frame, sent_at: float) -> None:
        frame.batch.times.append(sent_at)
        frame.batch.remaining -= 1
        if frame.batch.remaining == 0 and not frame.batch.done.done():
            frame.batch.done.set_result(None)
