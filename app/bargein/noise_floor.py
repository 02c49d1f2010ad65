"""A call's line-noise floor: minimum statistics over the energy of its 20 ms frames.

Theory of operation
-------------------
The floor is the quietest recent frame: the minimum of the frames' energies (sum of squares, so no
logarithm is taken per frame) over the last `window_frames`, kept as the minima of `blocks` equal blocks.

- Down fast: a frame quieter than the floor is the new floor at once (a line that goes quiet, or the
  first frames of a call).
- Up within one window: a frame louder than the floor changes nothing until every block that held a
  quieter frame has aged out, so a step up of steady noise (a car starting, hiss that steps up) is the new
  floor `window_frames` to `window_frames * (blocks + 1) / blocks` frames after the step.
- Speech bursts are ignored: speech always has a frame near the floor (between words, before the onset)
  within a window of a second or so, so the floor stays under it. A burst longer than the window without
  any such frame would lift the floor, which only makes the next onset harder to start, never easier.

Per frame that is two comparisons and a counter; once per block, a minimum over `blocks` numbers. The
minimum under-reads the mean level of fluctuating noise by a few dB, which errs on the side of hearing
speech: the floor is a veto on windows that are barely louder than the line, not a detector.

Pure: no clock, no I/O; frames are counted, so time is frames times 20 ms.
"""

from __future__ import annotations

import math

_FULL_SCALE_DB = 20 * math.log10(32768.0)


def energy_of_dbfs(dbfs: float, frame: int) -> float:
    """The sum of squares of a `frame`-sample frame whose RMS level is `dbfs`."""
    return frame * 10 ** ((dbfs + _FULL_SCALE_DB) / 10)


def dbfs_of_energy(energy: float, frame: int) -> float:
    """The RMS level in dBFS of a `frame`-sample frame with this sum of squares (-120 for silence)."""
    if energy <= 0.0:
        return -120.0
    return 10 * math.log10(energy / frame) - _FULL_SCALE_DB


class NoiseFloor:
    """Minimum of the last `window_frames` frame energies, down at once, up one window after a step."""

    def __init__(self, window_frames: int, blocks: int = 4, initial: float = math.inf) -> None:
        if blocks < 1 or window_frames < blocks:
            raise ValueError("need blocks >= 1 and window_frames >= blocks")
        self._block_len = -(-window_frames // blocks)  # ceil: the window is at least window_frames long
        # Minima of the last `blocks` complete blocks. They start at `initial`: until one window of the line
        # has been heard, the floor is at most that (CallVad passes its absolute gate: a call is assumed
        # quiet until it has shown otherwise for a whole window).
        self._blocks = [initial] * blocks
        self._next = 0  # ring index of the oldest complete block
        self._count = 0  # frames in the current block
        self._block_min = math.inf
        self.energy = initial  # the floor as a frame's sum of squares

    def update(self, energy: float) -> None:
        """Account one frame's sum of squares."""
        if energy < self._block_min:
            self._block_min = energy
            if energy < self.energy:
                self.energy = energy
        self._count += 1
        if self._count == self._block_len:
            self._count = 0
            self._blocks[self._next] = self._block_min
            self._next = (self._next + 1) % len(self._blocks)
            self._block_min = math.inf
            # The block that aged out may have held the minimum: the floor rises to what is left.
            self.energy = min(self._blocks)
