"""SileroBatcher.settle and SileroStream's kept states: what a second window phase starts from."""

from __future__ import annotations

import asyncio

import numpy as np

from app.bargein.silero import WINDOW, Settles, SileroBatcher, SileroModel, SileroStream


def windows(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.normal(0, 0.05, WINDOW).astype(np.float32) for _ in range(n)]


def test_settle_runs_the_deferred_windows_now_and_keeps_their_states() -> None:
    batcher = SileroBatcher(SileroModel())
    assert isinstance(batcher, Settles)
    ws = windows(6)
    # the same windows one by one, outside any loop: the states a settled stream must have kept
    reference = SileroStream()
    expected = []
    for w in ws:
        batcher.infer_now(reference, w)
        expected.append(reference.state.copy())

    async def run() -> SileroStream:
        stream = SileroStream(keep=3)
        for w in ws:
            batcher.defer(stream, w)  # would wait for the lazy timer (96 ms)
        await asyncio.wait_for(batcher.settle(stream), 0.05)  # runs them at once
        return stream

    stream = asyncio.run(run())
    assert not stream.queue and stream.waiting == 0 and stream.deferred == 0
    assert stream.windows_run == 6
    assert len(stream.states) == 3
    for kept, want in zip(stream.states, expected[-3:], strict=True):
        np.testing.assert_allclose(kept, want, atol=1e-6)
    np.testing.assert_allclose(stream.state, expected[-1], atol=1e-6)


def test_settle_on_an_idle_stream_returns_at_once_and_keeps_nothing_by_default() -> None:
    batcher = SileroBatcher(SileroModel())

    async def run() -> SileroStream:
        stream = SileroStream()
        await batcher.settle(stream)
        await batcher.infer(stream, windows(1)[0])
        return stream

    stream = asyncio.run(run())
    assert stream.windows_run == 1 and len(stream.states) == 0
