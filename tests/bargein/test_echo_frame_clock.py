"""EchoGuard places caller frames on the caller's steady frame schedule, not at their (late, bunched) arrivals."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.bargein.echo import FRAME, SAMPLE_RATE, EchoConfig, EchoGuard
from app.bargein.echo_clock import FrameClock
from app.offline.echo_eval import arrivals
from app.offline.echo_path import echo_of, with_caller
from tests.bargein.test_echo import _speechlike  # the same stand-in voice

I16 = npt.NDArray[np.int16]
LEAD = 4000  # the agent starts at 0.5 s


def _run(guard: EchoGuard, mic: I16, agent: I16, times: npt.NDArray[np.float64]) -> I16:
    """The agent's audio 200 ms ahead of its play time (on the grid); caller frame k arrives at times[k]."""
    out, sent = [], 0
    for k in range(len(mic) // FRAME):
        t = float(times[k])
        while sent < len(agent) and (LEAD + sent) / SAMPLE_RATE <= t + 0.2:
            guard.played(agent[sent : sent + 800], (LEAD + sent) / SAMPLE_RATE)
            sent += 800
        cleaned, _ = guard.process(mic[k * FRAME : (k + 1) * FRAME], t)
        out.append(cleaned)
    return np.concatenate(out)


def _db(x: I16) -> float:
    y = x.astype(np.float64)
    return float(10 * np.log10(np.mean(y * y) + 1e-9))


def _echo(agent: I16, erl_db: float, seed: int) -> I16:
    full = np.concatenate([np.zeros(LEAD, np.int16), agent, np.zeros(SAMPLE_RATE // 2, np.int16)])
    return echo_of(full, erl_db=erl_db, delay_ms=150, drift_ms=0, seed=seed, drive=0.01, rt60_ms=30)


def test_late_and_bunched_arrivals_cancel_as_well_as_steady_ones() -> None:
    # Live frames come a few ms late, and bunched after a busy loop. Placed at their arrival, each frame is
    # misaligned against the agent's audio by a different amount and the filter cancels nothing (about
    # -3..0 dB on this echo, measured); on the frame schedule it cancels as on steady frames.
    agent = _speechlike(8.0, seed=1)
    echo = _echo(agent, -12.0, seed=2)
    frames = len(echo) // FRAME
    steady = _run(EchoGuard(EchoConfig(suppress=False)), echo, agent, arrivals(frames, None))
    late = _run(EchoGuard(EchoConfig(suppress=False)), echo, agent, arrivals(frames, 7))
    span = slice(5 * SAMPLE_RATE, 8 * SAMPLE_RATE)
    erle_steady = _db(echo[span]) - _db(steady[span])
    erle_late = _db(echo[span]) - _db(late[span])
    assert erle_steady >= 15.0
    assert erle_late >= erle_steady - 3.0, (erle_steady, erle_late)


def test_frames_after_an_idle_gap_land_on_the_grid_of_their_arrival() -> None:
    clock = FrameClock()
    times = [0.04, 0.0605, 0.0801, 0.1003]  # steady, a little late
    ends = [clock.end(t, FRAME) for t in times]
    assert np.diff(ends).tolist() == [FRAME] * 3  # contiguous whatever the lateness
    assert ends[0] == 320
    # One second without frames (the guard was idle), then a frame 3 ms late: counted on from its arrival.
    end = clock.end(1.123, FRAME)
    assert end % FRAME == 0 and abs(end - 1.12 * SAMPLE_RATE) <= FRAME // 2


def test_double_talk_over_late_frames_keeps_the_callers_voice() -> None:
    # The guard never mutes the caller while the agent talks, however the frames arrive.
    agent = _speechlike(8.0, seed=5)
    caller = _speechlike(2.0, seed=6, rate_hz=4.0)
    full = np.concatenate([np.zeros(LEAD, np.int16), agent, np.zeros(SAMPLE_RATE // 2, np.int16)])
    echo = echo_of(full, erl_db=-12, delay_ms=150, drift_ms=20, seed=7)
    at = 5 * SAMPLE_RATE
    mixed = with_caller(echo, caller, at)
    out = _run(EchoGuard(), mixed, agent, arrivals(len(mixed) // FRAME, 11))
    span = slice(at, at + len(caller))
    assert abs(_db(out[span]) - _db(caller)) <= 3.0


def test_a_schedule_that_went_wrong_is_put_right_within_half_a_second() -> None:
    # The guard skipped 140 ms of frames (the session only feeds it while agent audio can echo), too short
    # to tell from a loop stall, so they were not counted: every later frame looks 7 frames late. The
    # creep alone would take minutes to follow; within 25 frames the schedule is on the arrivals again.
    clock = FrameClock()
    for k in range(50):
        clock.end((k + 1) * 0.02 + 0.001, FRAME)
    ends = [clock.end((58 + i) * 0.02 + 0.001, FRAME) for i in range(40)]
    off = [e - (58 + i) * FRAME for i, e in enumerate(ends)]
    assert all(o == 8 for o in off[25:]), off  # 1 ms late, as before the gap
    assert off[0] == 8 - 7 * FRAME  # (before the fix: the frames it did not see were not counted)
