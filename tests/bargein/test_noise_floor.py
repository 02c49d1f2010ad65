"""NoiseFloor: minimum statistics over frame energies, fed literal energy sequences (one number a frame)."""

from __future__ import annotations

import math

import pytest

from app.bargein.noise_floor import NoiseFloor, dbfs_of_energy, energy_of_dbfs

FRAME = 160


def e(dbfs: float) -> float:
    return energy_of_dbfs(dbfs, FRAME)


def feed(floor: NoiseFloor, levels: list[float]) -> list[float]:
    """The floor in dBFS after each frame of `levels` (dBFS)."""
    out = []
    for level in levels:
        floor.update(e(level))
        out.append(dbfs_of_energy(floor.energy, FRAME))
    return out


def test_levels_round_trip() -> None:
    assert dbfs_of_energy(e(-42.5), FRAME) == pytest.approx(-42.5)
    assert dbfs_of_energy(0.0, FRAME) == -120.0


def test_follows_a_quieter_line_at_once() -> None:
    floor = NoiseFloor(window_frames=50)
    trace = feed(floor, [-40.0] * 10 + [-70.0])
    assert trace[0] == pytest.approx(-40.0)
    assert trace[-1] == pytest.approx(-70.0)


def test_a_step_up_is_followed_within_one_window_and_a_quarter() -> None:
    floor = NoiseFloor(window_frames=50, blocks=4)  # 1 s of 20 ms frames
    feed(floor, [-60.0] * 100)
    trace = feed(floor, [-35.0] * 100)
    risen = next(i for i, level in enumerate(trace) if level > -36.0)
    assert 50 <= risen <= 50 + 13  # not before a window has passed, and no later than a block after it
    assert trace[-1] == pytest.approx(-35.0)


def test_speech_bursts_that_dip_to_the_line_leave_the_floor_alone() -> None:
    floor = NoiseFloor(window_frames=50)
    # syllables at -20 dBFS for 600 ms, gaps of 100 ms at the line's -60 dBFS, for 10 s
    pattern = ([-20.0] * 30 + [-60.0] * 5) * 14
    trace = feed(floor, [-60.0] * 50 + pattern)
    assert max(trace) == pytest.approx(-60.0)


def test_a_burst_longer_than_the_window_lifts_it() -> None:
    # the limit of the method (the docstring's): no dip for more than a window reads as a new floor
    floor = NoiseFloor(window_frames=50)
    trace = feed(floor, [-60.0] * 50 + [-20.0] * 80)
    assert trace[-1] == pytest.approx(-20.0)


def test_initial_value_caps_the_floor_for_the_first_window() -> None:
    floor = NoiseFloor(window_frames=50, initial=e(-55.0))
    trace = feed(floor, [-30.0] * 80)
    assert trace[40] == pytest.approx(-55.0)  # loud from the first frame: still assumed a quiet line
    assert trace[-1] == pytest.approx(-30.0)  # ...until a whole window of it has been heard
    assert math.isinf(NoiseFloor(window_frames=8).energy)


@pytest.mark.parametrize(("window", "blocks"), [(3, 4), (10, 0)])
def test_invalid_sizes_are_refused(window: int, blocks: int) -> None:
    with pytest.raises(ValueError):
        NoiseFloor(window_frames=window, blocks=blocks)
