"""EchoGuard: removes the agent's own voice from the caller's leg and says how much of what is left is echo.

Theory of operation
-------------------
On a speakerphone the caller's microphone hears the agent, and without a guard the detector hears the agent
"barge in" on itself. The server tells the guard what it plays (`played(pcm16, start_t)`, per chunk, with
the chunk's planned play start on the caller-frame clock; chunks may come up to a few hundred ms early and
with gaps), and when a clear cut the rest off (`stop_at(t)`). Per 20 ms caller frame (`process(frame, t)`,
`t` the frame's arrival time) the guard:

0. Frame clock. The frame is placed in the caller leg's history on the caller's own steady 20 ms schedule,
   not at `t`: live frames arrive a few ms late and bunched after a busy loop turn, and a frame placed at its
   arrival is misaligned against the agent's audio by its own lateness, which no filter can follow (this,
   not the echo path, is why the live canceller barely converged: ERLE ~0-3 dB live vs 7-23 dB offline;
   offline with live-like arrivals -3..0 dB, on the schedule back to the steady figure). The schedule is
   the earliest arrivals (a frame cannot come before it was sent); see `_frame_end`.
1. Bulk delay. GCC-PHAT between the caller leg and the agent's audio, both decimated to 4 kHz, over lags
   `min_delay_ms..max_delay_ms`; PHAT whitening keeps the peak sharp through the band limit, clipping and
   reverb. Until the first lock it is tried every `lock_retry_s` from `lock_first_s` after the agent's
   audio starts (echo needs a few hundred ms of speech to correlate on), later every `reestimate_s`. A
   peak that does not stand out of the correlation floor (double talk, silence) leaves the estimate alone.
2. Echo path. A partitioned-block frequency-domain NLMS filter (block = one 20 ms frame, `partitions`
   blocks: 80 ms of taps) starts `lead_ms` before the bulk delay; the drift between estimates is absorbed
   by adaptation, a jump moves the taps. The reference spectra sit in a doubled ring (each block written
   twice) so the newest `partitions` are always one contiguous view: no roll, no copy. The gradient is
   constrained every `constrain_every` frames on the weights, not on every update.
2b. Two paths (issue 12). Two filters share the reference spectra and the FFT calls: the background adapts
   every frame as in 2; the foreground is the one whose estimate is subtracted and judged in 4. The foreground
   adopts the background's weights (after its pending update, so it is not a step behind) on every frame the
   background gives no reason to doubt (`follow`): no double talk, its residual no worse than the foreground's
   and no more than `follow_consistent` x what the measured ERLE says an echo leaves. A caller the double-talk
   test misses (within ~6 dB of the echo) stays in the background's residual, so from its first frames the
   foreground keeps the weights from before the caller, and the background is put back to the foreground when
   its residual grows louder than the input (diverged). ERLE, which scales how much residual echo a frame is
   taken to hold, is measured only on frames the echo dominates (`_echo_dominated`), so a caller does not drag
   it down until the caller reads as echo, which is what the single filter did live: it adapted on the caller,
   its ERLE fell to -4..-16 dB and the caller was reported as 100% echo for seconds.
3. Double talk. Adaptation freezes while the caller's leg is much louder than the echo can be (`dt_ratio`
   over the larger of the filter's echo estimate and echo-path gain x agent energy), with a hangover.
   The caller's voice is never muted: the filter only subtracts its estimate of the echo.
4. Echo fraction. Per frame, the share of the cleaned frame's energy that is leftover echo:
   - before the delay is locked the filter cannot cancel, so the frame is bounded by the loudest echo the
     agent's audio could produce at any lag in range (`prelock_gain_db` x `prelock_margin`): a frame under
     that bound is reported as echo, one above it as mostly caller. The frame is NOT attenuated then
     (`prelock_floor` = 1): a caller talking over an unlocked guard must get through at once;
   - after lock, the residual is the echo estimate's energy over the measured ERLE (echo in / residual
     out on echo-only frames, smoothed) times `residual_margin`, which covers the loudspeaker's
     non-linear residual, but never more than `echo_bound_margin` x the most the uncancelled echo could
     be. Frames reported as mostly echo (fraction over `suppress_from`) are attenuated, down to
     `suppress_floor` at `suppress_full`: leftover echo must not hold the detector in "speaking", or the
     caller's real onset raises no new candidate. Frames the caller dominates pass untouched.
5. Candidate check. The fractions and energies of the last `history_s` are kept; `echo_share(since_t,
   until_t)` is the energy-weighted share of echo in that span. The decision layer rejects a speech
   candidate whose share is above `reject_share` (ECHO_REJECT_SHARE), e.g. for a SpeechStarted event
   `guard.echo_share(ev.at - ev.sustained_ms / 1000, ev.at) > ECHO_REJECT_SHARE` -> ignore it.

When no agent audio can be echoing (nothing played within `max_delay_ms + active_tail_ms`, or the next chunk
is not due yet) the frame is returned as is; when the reference in the filter's span is silent the filter
is skipped. Cost: two FFT calls a frame (the last frame's error spectrum is batched with this frame's
reference block; both filters' outputs come out of one inverse FFT) plus ~30 small numpy calls; numpy's
per-call overhead, not arithmetic, is the cost.

Limits (measured with `python -m app.offline.echo_eval`): on the simulated path, whose 100 ppm clock skew
and jitter-buffer jumps keep moving the echo, the filter reaches only ~7 dB of ERLE. A caller near or under
the echo's level is then not told from echo by energy: the double-talk test misses them, the filter adapts
on them, ERLE collapses and they are reported as echo (and attenuated) until they are clearly louder.
Two cures were tried and dropped because they reported echo as caller after a path jump (self-stops): a
residual-based double-talk test and a residual-scaled step size (see `_cancel`). A third, the echo fraction
bin by bin (`per_bin`), helps such a caller a little and costs echo-only spans as much: off (`_bin_fraction`).

Live, before the frame clock (step 0) the filter never converged: offline with live-like arrivals it still
locked a delay, but its output carried more energy than its input (ERLE -2..-5 dB, 12-18 dB on the clock).
That added energy read as "more than the echo can explain" on echo and caller frames alike: double talk
passed (94-98%), and so did echo now and then (self-stops) and, with noise adding its own unexplained
energy, echo under noise (42/95 false clears: the share fell under 0.75 and the echo's speech carried the
second look; offline, `echo_eval --noise-echo`: 4x the candidates through the guard, 4/24 false clears). The
frame is now judged at the smaller of its energy before and after the filter. With the guard working,
the limit above is what double talk meets: a caller who talks over the first second of a reply, before the
filter converges, is bounded by levels alone and is taken for echo unless clearly louder than the agent's
own audio (bench, twilio, 20 calls a condition, one tree: double talk detected 11-13/20 against 19/20
before; echo-only self-stops 0/20 against 6/20; noise over echo false clears 0/20 against 14/20).

Two paths, measured. On a linear echo at -6 dB ERL with a steady caller at the echo's own level
(tests/bargein/test_echo_two_path.py, `two_path` off / on) one filter left the echo at -7 dB under the caller
and 9 dB of ERLE after it, two filters -32 dB and 32 dB; 0.57 against 0.95 of the caller's 100 ms spans read
as caller. On the simulated phone path (echo_eval; ERLE only ~5 dB there: clipping, drift, jumps) the
echo-fraction margins, not divergence, decide: pool double talk 46/60 against 45/60 before the two paths
(caller 3 s into the reply), 12/60 both (caller 0.3 s in: before the filter converges, levels alone decide);
echo-only self-stops 0/36 both; noise over echo false clears 1/24 against 0/24. Counting every frame the
filters cannot explain as caller (no `match_min`) took double talk to 55/60 and let 3/36 echo-only calls
self-stop after jitter-buffer jumps. Live (bench, speakerphone preset, report set, 20 calls at once) double
talk stayed at 58-70%: there the caller starts 0.3 s into the reply, the case levels decide. Cost: the guard
~5% more per active frame (echo_eval --bench, 3 alternating runs against the tree before: 63-71 against
63-64 us), as the second filter is computed only while the two differ (`_same`).

Pure and synchronous: no clock reads (times are arguments), no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
FRAME = 160
I16 = npt.NDArray[np.int16]
F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]

_RING = 1 << 15  # 4.1 s of history for both legs: estimation window + max delay + send-ahead, with room to spare
_DECIM = 2
_IDLE_S = 0.2  # a longer gap between the frames process() saw: the guard was idle (no loop stalls this long)
_RESYNC_FRAMES = 25  # 0.5 s of frames all nearly a frame late or more: the frame schedule is off, move it
_CREEP = 0.02  # samples a frame the schedule may drift later: 125 ppm, more than two telephony clocks differ
_QUIET = 1.0  # mean square (RMS 1 LSB): a reference block this quiet contributes no echo worth modelling


@dataclass(frozen=True)
class EchoConfig:
    """Every threshold of the echo guard; defaults cover 20-400 ms of delay, 20 ms of drift, ERL -6..-18 dB.

    Tuned with `python -m app.offline.echo_eval` (espeak agent, tuning-pool callers, simulated phone path).
    """

    min_delay_ms: float = 20.0
    max_delay_ms: float = 400.0
    frame_clock: bool = True  # place caller frames on their steady schedule (False: at arrival; for A/B runs)
    lead_ms: float = 12.0  # filter starts this long before the estimated delay: covers a jump of ~12 ms earlier
    partitions: int = 4  # 20 ms each: 80 ms of taps (direct path, early reflections, most of the tail)
    mu: float = 0.8  # NLMS step; 0.5 tracked the drift too slowly (echo-only self-stops), 1.5 diverged
    constrain_every: int = 8  # gradient constraint every 8th update: 1, 4 and 8 gave the same ERLE within 1 dB
    # First GCC try this long after the agent's audio starts, then every lock_retry_s until locked: each 50 ms
    # sooner is 50 ms less of uncancelled echo holding the detector in "speaking" (0.3/0.1 s: a caller 1 s
    # into a reply was detected 19/36 times, 0.15/0.05 s: 29/36).
    lock_first_s: float = 0.15
    lock_retry_s: float = 0.05
    reestimate_s: float = 2.0  # after lock: the filter absorbs drift; GCC only has to catch jitter-buffer jumps
    relock_retry_s: float = 0.2  # ... but while the locked filter cancels under `converged_erle`, this often
    window_s: float = 0.5  # caller-leg history correlated per estimate: short, as drift smears the peak
    min_peak_ratio: float = 6.0  # GCC peak over the correlation's RMS floor: two such estimates must agree
    sure_peak_ratio: float = 12.0  # ... or one this clear is taken alone
    agree_ms: float = 2.0
    jump_ms: float = 3.0  # a GCC delay this far from the current one moves the filter (when confirmed)
    keep_peak_share: float = 0.5  # ... unless the correlation at the current delay is still this share of the peak
    converged_erle: float = 2.0  # 3 dB: from here on the filter's own peak tap tracks the drift ...
    recentre_max_ms: float = 4.0  # ... by at most this much at a time (drift creeps; jumps are GCC's)
    dt_ratio: float = 4.0  # 6 dB: caller leg this much louder than the echo could be -> double talk
    dt_hangover_frames: int = 5
    tail_frames: int = 8  # the room tail (RT60 150 ms) and a late jump: echo can follow a quiet span this long
    active_tail_ms: float = 150.0  # keep running this long after the last echo could have arrived
    prelock_gain_db: float = 0.0  # before lock: assume the loudest echo path (0 dB ERL; real ones are -6 and under)
    prelock_margin: float = 2.0  # x the loudest 20 ms of agent audio in the lag range: reverb and clipping
    # Until a delay first locks, levels alone bound the echo for this long into the call's first reply (the
    # longest echo delay, 400 ms, plus time for GCC to lock on it); past it with no lock, the line has no echo.
    prelock_evidence_s: float = 1.5
    # ... and from then on, with no echo path found, GCC looks for one this often instead of every
    # `lock_retry_s` (one GCC costs about 0.4 ms: every 0.5 s that was 20 us a frame, measured): the guard
    # costs little on a handset line, the common case, and an echo that appears later (the caller switches
    # to speakerphone) is found within this long.
    dormant_retry_s: float = 2.0
    prelock_floor: float = 1.0  # before lock nothing is attenuated: the fraction (echo_share) alone tells echo
    per_bin: bool = False  # echo fraction bin by bin: tried, off (see `_bin_fraction`); broadband as before
    residual_margin: float = 4.0  # residual estimate x this for echo_fraction: the non-linear residual varies a lot
    echo_bound_margin: float = 2.0  # ... but never more echo than 2 x the most the uncancelled echo could be
    suppress: bool = True
    suppress_floor: float = 0.03  # -30 dB at most, and only on frames reported as (nearly) all echo
    # Attenuation starts at this echo_fraction (gain 1) and reaches the floor at suppress_full, linear in
    # amplitude between. sqrt(1 - fraction) (margins 1.5-4) took 2-7 dB off callers and did no better.
    suppress_from: float = 0.5
    suppress_full: float = 0.95
    # Two paths (step 2b of the module docstring). Residual energies are smoothed on frames with the reference
    # active, this weight per frame (0.3: an echo-only test's caller spans read as echo; 0.15 passed).
    two_path: bool = True  # False: one filter, adapted and used (the foreground mirrors it; for A/B runs)
    two_path_smooth: float = 0.15
    # `follow` (the default): the foreground adopts the background on every frame it gives no reason to doubt:
    # no double talk, residual no more than `follow_ratio` x the foreground's and no more than
    # `follow_consistent` x input / measured ERLE. Without it the foreground adopts only a background that has
    # been clearly better: under `transfer_ratio` x the foreground's residual and under input / ERLE (capped at
    # `transfer_erle`) for `transfer_frames` frames running; measured on echo_eval's echo-only calls, that
    # lagging foreground cancelled 3.4 dB against one filter's 6.5 (follow: 6.2), and the echo's candidates
    # through the guard rose from 18 to 63-90 (--noise-echo 24).
    follow: bool = True
    follow_ratio: float = 1.05
    follow_consistent: float = 4.0
    transfer_ratio: float = 0.8
    transfer_erle: float = 4.0
    transfer_frames: int = 3
    # A residual over this x the input is a diverged estimate: the background is put back to the foreground,
    # and a foreground residual that loud (this frame and smoothed) makes the frame's echo bounded by levels.
    diverged_ratio: float = 1.0
    # ERLE (how much residual echo a frame is taken to hold) is measured only on frames the echo dominates
    # (`_echo_dominated`): the background no worse than `fg_keep_ratio` x the foreground, one filter's residual
    # under `erle_gate` x the input, and the residual under `erle_consistent` x input / ERLE so far unless the
    # estimate no longer matches the input (<mic, y> / <y, y> under `match_min`: the path moved).
    fg_keep_ratio: float = 1.0
    erle_gate: float = 0.5
    erle_consistent: float = 4.0
    # 0.7: echo_eval (pool, 20 callers x 3 ERL, 36 echo-only; before `gate_once_converged`): echo-only
    # self-stops 0, double talk 46/60; 0.5: 1 self-stop, 49/60; 0.3: 2, 51/60; without the match test: 3, 55/60.
    match_min: float = 0.7
    # ... and all of that only once the filter has converged (since the last lock): before, ERLE is measured on
    # every frame as with one filter. Gated from the start, a caller over the first second of a reply kept ERLE
    # at 0 dB, the guard never counted as converged and the level bound took the caller for echo
    # (echo_eval --caller-at 0.3: double talk 1/60 against 12/60 with one filter; 12/60 with this).
    gate_once_converged: bool = True
    recentre_keeps_erle: bool = True  # a small recentre (drift) moves the taps exactly: keep ERLE and convergence
    history_s: float = 4.0  # per-frame fractions kept for echo_share()
    # echo_share above this: the candidate is echo. On the pool (echo_eval --limit 12 --echo-seeds 4 --shares)
    # the 42 echo-only candidates read 0.78-1.00 (the two under 0.9 just after drift jumps at ERL -6 dB), the
    # callers' first candidates 0.00-0.41 but for two: 0.68, and 1.00 (a caller 7 dB under the echo).
    reject_share: float = 0.75

    def __post_init__(self) -> None:
        if not 0 < self.min_delay_ms < self.max_delay_ms:
            raise ValueError("need 0 < min_delay_ms < max_delay_ms")
        if self.partitions < 1 or not 0 < self.mu < 2:
            raise ValueError("need partitions >= 1 and 0 < mu < 2")
        if not 0.0 <= self.reject_share <= 1.0:
            raise ValueError("need 0 <= reject_share <= 1")


ECHO_REJECT_SHARE = EchoConfig().reject_share


def _energy(x: F64) -> float:
    """Sum of squares of a 1-D float64 array (a 160-320 sample dot product: far under BLAS's threading size)."""
    return float(np.dot(x, x))


def _fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: pocketfft is as fast there as at a power of two, and up to ~45% shorter."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p235 = p35
            while p235 < n:
                p235 *= 2
            best = min(best, p235)
            p35 *= 3
        p5 *= 5
    return best


class _Ring:
    """Samples indexed by absolute sample number (play time x 8000); unwritten spans read as zeros."""

    def __init__(self) -> None:
        # float32: the rings are most of a call's memory (2 x 128 KB), and int16 samples fit exactly.
        self.buf = np.zeros(_RING, np.float32)
        self.end = 0  # one past the last sample written

    def write(self, start: int, x: F64) -> None:
        i = start % _RING
        if start == self.end and i + len(x) <= _RING:  # the usual case: the next frame, no wrap
            self.buf[i : i + len(x)] = x
            self.end += len(x)
            return
        if start > self.end:  # a gap (nothing played): stale samples there must read as silence
            self._fill(self.end, np.zeros(min(start - self.end, _RING)))
        if len(x) > _RING:  # only the newest _RING samples can be kept
            start, x = start + len(x) - _RING, x[-_RING:]
        self._fill(start, x)
        self.end = max(self.end, start + len(x))

    def truncate(self, end: int) -> None:
        """Forget everything from sample `end` on (it was never played)."""
        self.end = min(self.end, end)

    def _fill(self, start: int, x: F64) -> None:
        i = start % _RING
        k = min(len(x), _RING - i)
        self.buf[i : i + k] = x[:k]
        self.buf[: len(x) - k] = x[k:]

    def read(self, start: int, n: int) -> F64:
        i = start % _RING
        if i + n <= _RING:
            out = self.buf[i : i + n].astype(np.float64)
        else:
            out = np.concatenate((self.buf[i:], self.buf[: n - (_RING - i)])).astype(np.float64)
        if start + n > self.end:  # not written yet (not played yet): silence, not what was there 4 s ago
            out[max(0, self.end - start) :] = 0.0
        if start < self.end - _RING:
            out[: min(n, self.end - _RING - start)] = 0.0
        return out


class GccBudget:
    """How many delay estimates (GCC-PHAT, about 0.4 ms each) all calls may run per `per_s` of the callers'
    time: 100 calls starting together would otherwise run theirs in the same loop turns and hold the loop up
    to 50 ms (hold mode, measured). A call refused now tries again on its next frame. Times are arguments."""

    def __init__(self, runs: int = 4, per_s: float = 0.02) -> None:
        self.runs, self.per_s = runs, per_s
        self._slot = -1
        self._left = runs

    def take(self, t: float) -> bool:
        slot = int(t // self.per_s)
        if slot != self._slot:
            self._slot, self._left = slot, self.runs
        if self._left <= 0:
            return False
        self._left -= 1
        return True


# One per process: the loop all calls share is what the budget protects.
SHARED_GCC_BUDGET = GccBudget()


class EchoGuard:
    """One call's echo canceller: `played()` the agent's audio by play time, `process()` each caller frame."""

    def __init__(self, config: EchoConfig | None = None, budget: GccBudget = SHARED_GCC_BUDGET) -> None:
        self._budget = budget
        self.config = c = config or EchoConfig()
        self._ref = _Ring()
        self._mic = _Ring()
        self._run_start: float | None = None  # play start of the agent's current stretch of audio
        self._first_run_start: float | None = None  # ... of the call's first stretch
        self._phase = 0.0  # in [0, 1): this call's offset for its GCC retries, from its first play time
        self.echo_seen = False  # a delay has locked in this call: there is an echo path
        self._last_play_end: float | None = None
        self._active_from, self._active_until = math.inf, -math.inf  # active() while from < t < until
        p, bins = c.partitions, FRAME + 1
        # Two filters on the same reference spectra (step 2b above): row 0 the background, which
        # adapts; row 1 the foreground, whose estimate is used. One array, so both filter in the same calls.
        self._ws: C128 = np.zeros((2, p, bins), np.complex128)
        self._w: C128 = self._ws[0]  # views: only ever written in place
        self._wf: C128 = self._ws[1]
        self._prod2: C128 = np.zeros((2, p, bins), np.complex128)  # scratch: both filters' W * X
        self._bg_e = self._fg_e = self._in_e = 0.0  # smoothed residual energies (and the input's), reference on
        self._bg_better = 0  # consecutive such frames the background has been clearly better
        self._adopt = False  # the foreground takes the background's weights on the next frame
        # The foreground IS the background (it adopted it and nothing has cast doubt since): one filter is
        # computed, not two (the common case: echo alone). `_wf` is only written when the two part.
        self._same = c.follow or not c.two_path
        # Reference spectra, newest first, in p + 1 slots each written twice (rows h and h + p + 1), so rows
        # h..h+p-1 are always one contiguous view: the filter's input.
        self._xbuf: C128 = np.zeros((2 * (p + 1), bins), np.complex128)
        self._pbuf: F64 = np.zeros((2 * (p + 1), bins))  # |X|^2 of the same rows
        self._power: F64 = np.full(bins, 1e-3)  # sum of |X|^2 over the filter's rows, kept incrementally, + _reg
        self._h = 0
        self._reg = 1e-3
        self._prod: C128 = np.zeros((p, bins), np.complex128)  # scratch: W * X, then the gradient
        self._quiet_blocks = p + 2  # consecutive quiet reference blocks: >= p means the filter's input is silent
        self._x_start: int | None = None  # where the newest block starts in the reference
        self._grid_base: float | None = None  # the caller's frame schedule: frame k ends at base + k * FRAME
        self._grid_k = 0
        self._grid_t = -math.inf  # arrival of the last frame placed
        self._grid_at = 0  # the base in whole samples, as used
        self._grid_min_late, self._grid_seen = math.inf, 0  # the earliest lateness over the last frames
        self._bins_in: F64 = np.zeros((2, FRAME))  # scratch: the echo estimate and the frame judged, per bin
        self._span_e = [0.0] * p  # energies of the reference blocks in the filter's span, newest first
        # Row 0: [zeros, last error] (the error's overlap-save input); row 1: the next reference block pair.
        self._pair: F64 = np.zeros((2, 2 * FRAME))
        self._pad = self._pair[0]
        self._pending = False  # a weight update waits for the next frame's FFT
        self.delay: int | None = None  # bulk delay in samples (filter starts at delay - lead)
        self._next_estimate: float | None = None
        self._gain2 = 1.0  # echo-path energy gain, learnt; 0 dB until then
        self._erle_in = 1.0  # smoothed echo energy on echo-only frames ...
        self._erle_out = 1.0  # ... and the residual left of it: ERLE = in / out
        self._converged = False  # has ERLE reached converged_erle since the last (re)lock?
        self._dt_left = 0
        self._frames = 0
        self.double_talk = False
        self.peak_ratio = 0.0  # the last delay estimate's GCC peak over its floor
        self._candidate: int | None = None  # the last GCC lag, awaiting confirmation
        hist = max(1, round(c.history_s * SAMPLE_RATE / FRAME))
        self._h_t = np.full(hist, -np.inf)  # frame end times ...
        self._h_energy = np.zeros(hist)  # ... cleaned-frame energy (before suppression) ...
        self._h_echo = np.zeros(hist)  # ... and the echo part of it
        self._h_i = 0
        self._prelock_gain2 = 10 ** (c.prelock_gain_db / 10) * c.prelock_margin

    # -- the agent's side ------------------------------------------------------------------------
    def played(self, pcm16: I16, start_t: float) -> None:
        """The agent's audio `pcm16` is to play from `start_t` (seconds, the caller-frame clock).

        Chunks may come ahead of their play time and with gaps between them (the gap reads as silence).
        """
        if len(pcm16) == 0:
            return
        c = self.config
        start = round(start_t * SAMPLE_RATE)
        self._ref.write(start, pcm16.astype(np.float64))
        end_t = start_t + len(pcm16) / SAMPLE_RATE
        idle = (c.max_delay_ms + c.active_tail_ms) / 1000.0
        if self._last_play_end is None or start_t > self._last_play_end + idle:
            self._run_start = start_t  # a new stretch of agent audio after the guard went idle
            if self._first_run_start is None:
                self._first_run_start = start_t
                self._phase = (start_t * 7919.0) % 1.0  # from the time, so a replay runs it the same
            if self.delay is None:
                self._next_estimate = None  # try to lock from this stretch's start
        elif self._run_start is not None:
            self._run_start = min(self._run_start, start_t)
        self._last_play_end = end_t if self._last_play_end is None else max(self._last_play_end, end_t)
        self._refresh_window()

    def stop_at(self, t: float) -> None:
        """Agent audio `played()` for after `t` did not play (a clear cut it): expect no echo of it."""
        end = round(t * SAMPLE_RATE)
        self._ref.truncate(end)
        if self._last_play_end is not None and self._last_play_end > t:
            self._last_play_end = t
            if self._run_start is not None and self._run_start >= t:
                self._run_start = self._last_play_end = None  # nothing of this stretch played at all
        self._refresh_window()

    def active(self, t: float) -> bool:
        """Agent audio has played recently enough that its echo may be in a frame arriving at `t`."""
        return self._active_from < t < self._active_until

    def _refresh_window(self) -> None:
        """Cache active()'s bounds: it runs on every caller frame of the call, these change per chunk."""
        c = self.config
        if self._run_start is None or self._last_play_end is None:
            self._active_from, self._active_until = math.inf, -math.inf
        else:
            self._active_from = self._run_start + c.min_delay_ms / 1000.0
            self._active_until = self._last_play_end + (c.max_delay_ms + c.active_tail_ms) / 1000.0

    def echo_share(self, since_t: float, until_t: float) -> float:
        """Share in [0, 1] of the caller leg's energy in frames ending in (since_t, until_t] that is echo.

        Energy-weighted over the frames' fractions: 0 when the agent was silent or the caller dominated,
        near 1 when the span is (residual) echo. Spans older than `history_s` read as 0 (nothing known).
        A speech candidate whose share is above `config.reject_share` is the agent's own echo.
        """
        mask = (self._h_t > since_t + 1e-9) & (self._h_t <= until_t + 1e-9)
        total = float(self._h_energy[mask].sum())
        if total <= 0.0:
            return 0.0
        return min(1.0, float(self._h_echo[mask].sum()) / total)

    def _record(self, t: float, energy: float, fraction: float) -> None:
        i = self._h_i
        self._h_t[i] = t
        self._h_energy[i] = energy
        self._h_echo[i] = energy * fraction
        self._h_i = (i + 1) % len(self._h_t)

    # -- the caller's side -----------------------------------------------------------------------
    def process(self, mic_pcm16_frame: I16, t: float) -> tuple[I16, float]:
        """Clean one caller frame arriving at `t`: (frame with the echo estimate removed, echo_fraction)."""
        n = len(mic_pcm16_frame)
        if not self.active(t):
            # No echo possible: the frame counts as caller only in any span it falls in.
            self._record(t, _energy(mic_pcm16_frame.astype(np.float64)), 0.0)
            return mic_pcm16_frame, 0.0
        end = self._frame_end(t, n)
        mic = mic_pcm16_frame.astype(np.float64)
        self._mic.write(end - n, mic)
        if n != FRAME:
            self._record(t, _energy(mic), 0.0)
            return mic_pcm16_frame, 0.0  # the filter's block is one telephony frame; others pass as they are
        if self._next_estimate is None or t >= self._next_estimate:
            self._maybe_estimate(end, t)
        if self.delay is None and self._dormant(t):
            # No echo path on this line: nothing to remove, nothing to call echo; the frame passes as it came.
            self._record(t, _energy(mic), 0.0)
            return mic_pcm16_frame, 0.0
        if self.delay is None:
            e, e_e, fraction, gain = self._before_lock(mic, end)
        else:
            e, e_e, fraction, gain = self._cancel(mic, end)
        self._record(t, e_e, fraction)
        if gain != 1.0:
            e *= gain  # in place: the mic ring keeps its own copy
        np.minimum(e, 32767.0, out=e)  # the ufuncs, not np.clip: its Python wrapper is most of its cost here
        np.maximum(e, -32768.0, out=e)
        return e.astype(np.int16), fraction  # truncated, not rounded: under 1 LSB, one numpy call less

    def _frame_end(self, t: float, n: int) -> int:
        """The sample number just past this caller frame, on the caller's own steady frame clock.

        Arrival times are not sample positions: the event loop and the network deliver frames late by a few
        ms, more under load, and frames that queued behind a busy loop arrive together. Placing each frame
        at its arrival misaligns it against the agent's audio by that lateness, a different amount every
        frame, which the filter cannot follow (measured: ERLE 5-6 dB on steady frames, ~1 dB with live-like
        lateness). The edge sends frames on an even 20 ms schedule and a frame never arrives before it was
        sent, so the schedule is the earliest arrivals: frame k ends at `base + k * n`, `base` the smallest
        `arrival - k * n` seen, let creep later by `_CREEP` samples a frame so a clock that runs slower than
        ours is followed. After a gap in the frames the guard saw (longer than `_IDLE_S`: it was idle, the agent
        silent) the frames it did not see are counted in from the arrival, as whole frames.
        """
        arrival = t * SAMPLE_RATE
        if not self.config.frame_clock:
            return round(arrival)
        if self._grid_base is None:
            self._grid_base, self._grid_k = arrival - n, 1
            self._grid_at = round(self._grid_base)
        else:
            self._grid_k += 1
            late = arrival - (self._grid_base + self._grid_k * n)
            if t - self._grid_t > _IDLE_S and late > 0:  # frames the guard did not see: count them in
                self._grid_k += int(late / n + 0.25)
        self._grid_t = t
        late = arrival - (self._grid_base + self._grid_k * n)
        if late < 0:
            self._grid_base += late
        else:
            self._grid_base += min(late, _CREEP)
        # No frame of the last `_RESYNC_FRAMES` came within 0.9 frame of the schedule: the schedule is wrong
        # (a loop stall over `_IDLE_S` counted frames in that were only late, or frames went uncounted), and the
        # creep alone would take minutes to follow. Move it to the earliest of them.
        self._grid_min_late = min(self._grid_min_late, max(late, 0.0))
        self._grid_seen += 1
        if self._grid_seen >= _RESYNC_FRAMES:
            if self._grid_min_late > 0.9 * n:  # uncounted frames: a whole frame or more; load: less
                self._grid_base += self._grid_min_late
            self._grid_min_late, self._grid_seen = math.inf, 0
        # Whole samples, moved only by a whole sample or more: a schedule flickering by one sample between
        # frames misaligns the filter's blocks against each other (measured: 29 dB ERLE fell to 9 dB).
        if abs(self._grid_base - self._grid_at) >= 1.0:
            self._grid_at = round(self._grid_base)
        return self._grid_at + self._grid_k * n

    def _maybe_estimate(self, end: int, t: float) -> None:
        c = self.config
        if self._next_estimate is None:
            assert self._run_start is not None
            # Each call's GCC runs at its own phase: calls that start together (a burst) would otherwise all
            # run one in the same loop turn, every retry (100 calls x 0.4 ms held the loop 40 ms, measured).
            self._next_estimate = self._run_start + c.lock_first_s * (1.0 + self._phase)
        if t < self._next_estimate or not self._budget.take(t):
            return
        if self.delay is None:
            retry = c.dormant_retry_s if self._dormant(t) else c.lock_retry_s
            self._next_estimate = t + retry * (0.5 + self._phase)
        elif self._erle() < c.converged_erle:
            # Locked but not cancelling: most often the echo jumped (a jitter buffer re-sized). Look again
            # soon instead of waiting out `reestimate_s` with the echo going through uncancelled.
            self._next_estimate = t + c.relock_retry_s
        else:
            self._next_estimate = t + c.reestimate_s
        # GCC catches jumps (a jitter buffer re-sizing) wherever they land; the converged filter's own
        # peak follows small moves more precisely than GCC can through drift and reverb.
        if not self._estimate_delay(end) and self.delay is not None and self._erle() >= c.converged_erle:
            self._recentre()

    def _erle(self) -> float:
        return self._erle_in / max(self._erle_out, 1e-3)

    def _before_lock(self, mic: F64, end: int) -> tuple[F64, float, float, float]:
        """No delay yet (the first ~0.3-0.6 s of agent audio): bound the echo by the loudest it could be.

        A frame under the bound may be all echo and is reported so; the frame itself is not touched
        (`prelock_floor`), so a caller who talks over the very start of a reply is heard at once.
        """
        c = self.config
        mic_e = _energy(mic)
        # No echo path found in this call yet, and the first reply has played long enough for one to lock:
        # there is no echo to bound (a handset, a headset), so nothing is called echo on levels alone. Without
        # this, every caller quieter than the agent's own audio would count as echo on such a line.
        fraction = 0.0 if self._dormant(end / SAMPLE_RATE) else self._unlocked_fraction(mic_e, end)
        self.double_talk = mic_e > FRAME and fraction < 1.0 / c.dt_ratio
        gain = max(c.prelock_floor, math.sqrt(1.0 - fraction)) if c.suppress else 1.0
        return mic, mic_e, fraction, gain

    def _dormant(self, t: float) -> bool:
        """No echo path has locked in this call, and the first reply has played long enough for one to."""
        first = self._first_run_start
        return not self.echo_seen and first is not None and t - first > self.config.prelock_evidence_s

    def _unlocked_fraction(self, energy: float, end: int) -> float:
        """Echo fraction of a frame of `energy` by levels alone: what the agent's audio could explain.

        The bound is the loudest 20 ms of the agent's audio anywhere in the delay range, times the assumed
        worst echo path (`prelock_gain_db` x `prelock_margin`).
        """
        return self._level_fraction(energy, end, self._prelock_gain2)

    def _level_fraction(self, energy: float, end: int, gain2: float) -> float:
        """Echo fraction of a frame of `energy`: the loudest 20 ms of agent audio in the delay range x `gain2`."""
        c = self.config
        dmin = round(c.min_delay_ms * SAMPLE_RATE / 1000) // FRAME * FRAME
        dmax = -(-round(c.max_delay_ms * SAMPLE_RATE / 1000) // FRAME) * FRAME
        span = self._ref.read(end - dmax - FRAME, dmax - dmin + FRAME).reshape(-1, FRAME)
        bound = gain2 * float(np.einsum("ij,ij->i", span, span).max())
        if bound <= FRAME or energy <= 0.0:
            return 0.0
        return min(1.0, bound / energy)

    def _push_reference(self, start: int) -> F64:
        """Shift the newest reference block (starting at `start`) into the filter's input; return it.

        The last frame's pending weight update is applied first, with its error spectrum computed in the
        same FFT call as this block's spectrum: the update is exactly the one the last frame would have
        made (it uses the last frame's rows and power), at one numpy call fewer per frame.
        """
        c = self.config
        p = c.partitions
        if self._x_start is None or start != self._x_start + FRAME:
            # A new delay or a gap in the frames: the older rows no longer line up, so rebuild them all.
            self._pending = False  # an update for rows that no longer line up would be wrong
            self._xbuf[:] = 0.0
            self._pbuf[:] = 0.0
            self._power[:] = self._reg
            self._quiet_blocks = 0
            for back in range(p - 1, 0, -1):
                older = self._ref.read(start - (back + 1) * FRAME, 2 * FRAME)
                self._push_one(None if self._quiet(older) else np.fft.rfft(older))
        ref2 = self._ref.read(start - FRAME, 2 * FRAME)
        self._x_start = start
        quiet = self._quiet(ref2)
        x: C128 | None = None
        if self._pending:
            self._pending = False
            if quiet:
                self._update(np.fft.rfft(self._pad))
            else:
                self._pair[1] = ref2
                spec = np.fft.rfft(self._pair, axis=1)
                self._update(spec[0])
                x = spec[1]
        elif not quiet:
            x = np.fft.rfft(ref2)
        self._push_one(x)
        return ref2

    @staticmethod
    def _quiet(ref2: F64) -> bool:
        return float(np.dot(ref2, ref2)) <= _QUIET * 2 * FRAME

    def _push_one(self, x: C128 | None) -> None:
        """Make `x` (None: a quiet block, all zeros) the newest row; the oldest row leaves the filter's view."""
        p = self.config.partitions
        slots = p + 1
        h = self._h = (self._h - 1) % slots
        # p + 1 slots, each doubled: rows h..h+p-1 are the filter's input, h+1..h+p the last frame's (for
        # its pending update). The row leaving the view is h + p, still intact.
        dropped = self._pbuf[h + p]
        if x is None:
            self._quiet_blocks += 1
            if self._quiet_blocks > slots:  # every row is zeros already
                return
            self._power -= dropped
            self._xbuf[h] = self._xbuf[h + slots] = 0.0
            self._pbuf[h] = self._pbuf[h + slots] = 0.0
            return
        self._quiet_blocks = 0
        sq = np.square(x.view(np.float64))  # re^2, im^2 interleaved: two numpy calls for |X|^2, not three
        pw = np.add.reduce(sq.reshape(-1, 2), axis=1)
        self._power += pw - dropped
        self._xbuf[h] = self._xbuf[h + slots] = x
        self._pbuf[h] = self._pbuf[h + slots] = pw

    def _cancel(self, mic: F64, end: int) -> tuple[F64, float, float, float]:
        c = self.config
        assert self.delay is not None
        p = c.partitions
        start = end - FRAME - self.delay + round(c.lead_ms * SAMPLE_RATE / 1000)
        ref2 = self._push_reference(start)  # applies the last frame's update to the background
        if self._adopt:
            # Adopted after that update, not before: a foreground one NLMS step behind the background cancelled
            # ~1.5 dB less on the drifting simulated path (echo_eval's echo-only calls), even copied every frame.
            self._same = True
            self._adopt = False
        mic_e = float(np.dot(mic, mic))
        if self._quiet_blocks >= p:  # nothing in the filter's span: no echo to model
            self._dt_left = max(0, self._dt_left - 1)
            self.double_talk = self._dt_left > 0
            self._span_e = [0.0] * p
            # ... but for a while the echo can still arrive: its room tail, or a delay later than the filter's
            # span (a jump GCC has not caught yet). Read as "caller" (0), those frames pull an echo candidate's
            # share under 0.75 (live self-stops showed echo frames at 0.0-0.06). For `tail_frames` they are
            # bounded by levels with the learnt path gain; later, a caller talking in the agent's pause is not.
            quiet = 0.0
            if mic_e > FRAME and self._quiet_blocks - p < c.tail_frames:
                quiet = self._level_fraction(mic_e, end, self._gain2)
            return mic, mic_e, quiet, 1.0
        h = self._h
        x = self._xbuf[h : h + p]
        if self._same:  # one filter: the foreground is the background
            np.multiply(self._w, x, out=self._prod)
            # np.add.reduce, not .sum(): the method's Python wrapper costs as much as the addition here.
            y = np.fft.irfft(np.add.reduce(self._prod, axis=0), 2 * FRAME)[FRAME:]
            e = e_bg = mic - y
        else:
            np.multiply(self._ws, x, out=self._prod2)  # both filters, one call each: x is shared
            ys = np.fft.irfft(np.add.reduce(self._prod2, axis=1), 2 * FRAME, axis=1)[:, FRAME:]
            es = mic - ys  # row 0 the background's residual (it adapts on it), row 1 the foreground's (used)
            y, e, e_bg = ys[1], es[1], es[0]
        newest = ref2[FRAME:]
        ref_e = float(np.dot(newest, newest))  # np.dot inline: at 160 samples the call overhead is the cost
        y_e = float(np.dot(y, y))
        e_e = float(np.dot(e, e))
        bg_e = e_e if e_bg is e else float(np.dot(e_bg, e_bg))
        trusted = self._two_paths(mic_e, bg_e, e_e, ref_e)
        if not trusted:  # the background was put back: its residual is the foreground's
            e_bg = e
        # The echo in this frame can come from any block in the filter's span (room tail, drift within the
        # lead), not only the newest: bound it by the loudest of them. (Live self-stops had echo frames read
        # at 0.0-0.06 echo, far over the bound; a syllable gap in the newest block is one way to get there.)
        span_e = self._span_e
        span_e.pop()
        span_e.insert(0, ref_e)
        ref_span_e = max(span_e)
        # Double talk: the caller's leg is louder than any echo of this frame's reference could be.
        # Tried and dropped, both for reporting echo as caller: freezing on "residual far over the usual
        # leftover" (alone: after a drift jump; with "<mic, y> still ~ <y, y>" as a guard: after a partial
        # misalignment the filter still half-matches, and echo leaked as "caller" for over a second).
        # The price: a caller near the echo's level is adapted on, ERLE collapses and the caller is
        # reported as echo and attenuated until the caller is clearly louder (see the module's limits).
        bound = max(y_e, self._gain2 * ref_span_e)
        expected = bound / max(self._erle(), 1.0)  # the residual echo alone would leave
        if mic_e > c.dt_ratio * bound + FRAME:
            self._dt_left = c.dt_hangover_frames
        else:
            self._dt_left = max(0, self._dt_left - 1)
        self.double_talk = self._dt_left > 0
        if not self.double_talk and ref_e > FRAME:
            self._pending = True  # applied next frame, its FFT batched with the next reference block's
            np.multiply(e_bg, c.mu, out=self._pair[0, FRAME:])  # the step size, folded into the error
            # ERLE is measured on the foreground only while the background does no worse: a background worse
            # than the foreground is adapting on something that is not echo (a caller under the double-talk
            # test), and that caller must not be counted as residual echo. After a change of the echo path
            # the background does better, and the ERLE the foreground falls to is measured.
            if y_e > FRAME and self._echo_dominated(mic_e, e_e, mic, y, y_e):
                self._erle_in = 0.9 * self._erle_in + 0.1 * mic_e
                self._erle_out = 0.9 * self._erle_out + 0.1 * e_e
                if self._erle() > 4.0:  # converged enough (6 dB) that y measures the echo path
                    self._gain2 = 0.95 * self._gain2 + 0.05 * min(1.0, y_e / ref_e)
        # The residual estimate leans on ERLE, which a caller near the echo's level drags down (see above).
        # Whatever ERLE says, a frame cannot hold more echo than `echo_bound_margin` x the most the echo
        # could be (the filter's estimate, or path gain x reference): energy beyond that is the caller's,
        # so it is neither reported as echo nor attenuated.
        # The frame's energy to judge: when the filter adds more than it removes (misaligned after a jump, or
        # diverged: ERLE under 0 dB was measured live), what it added is its own echo estimate, so the frame is
        # judged as it came (passing it as it came instead let more echo reach the detector, offline).
        judged = min(e_e, mic_e)
        most = c.echo_bound_margin * bound
        if e_e > mic_e * c.diverged_ratio and self._fg_e > self._in_e * c.diverged_ratio and mic_e > FRAME:
            # The residual is louder than the input, on this frame and over the last few: the estimate is wrong
            # (diverged), and what it says is echo is not. The frame counts as caller. (On single frames a
            # residual over the input is common on echo too, a syllable edge; judged per frame alone, echo-only
            # calls self-stopped, offline.) Not "no echo" either: after a jump of the echo path both filters
            # are wrong and the frame is echo; the level bound (learnt path gain x the loudest agent audio
            # in the delay range) still calls a frame echo that the agent's audio can explain.
            fraction = self._level_fraction(mic_e, end, c.echo_bound_margin * self._gain2)
        elif c.per_bin:
            fraction = self._bin_fraction(y, e if e_e <= mic_e else mic, expected / max(bound, 1e-3))
        else:
            fraction = min(1.0, c.residual_margin * expected / max(judged, 1e-3), most / max(judged, 1e-3))
        gain = 1.0
        if c.suppress and fraction > c.suppress_from:
            # Frames that are (nearly) all leftover echo go down to the floor; frames where the caller
            # carries half or more of the energy pass untouched, so the caller's onset is heard at once.
            keep = (c.suppress_full - fraction) / (c.suppress_full - c.suppress_from)
            gain = max(c.suppress_floor, min(1.0, keep), math.sqrt(max(0.0, 1.0 - most / max(e_e, 1e-3))))
        if not self._converged:
            if self._erle() >= c.converged_erle:
                self._converged = True
            else:
                # (Re)locked, not cancelling yet: a wrong first lock also makes the double-talk test fire on
                # echo. Report at least what the levels alone say, as before the lock; the attenuation
                # above stays the filter's, so a caller is not cut meanwhile. (Not once converged: ERLE
                # also falls when a caller near the echo's level is adapted on, and that is the caller.)
                fraction = max(fraction, self._unconverged_fraction(y, e if e_e <= mic_e else mic, judged, end))
        return e, e_e, fraction, gain

    def _echo_dominated(self, mic_e: float, e_e: float, mic: F64, y: F64, y_e: float) -> bool:
        """May this frame's residual be counted as leftover echo (ERLE measured on it)?

        Only while one of the two filters is cancelling (its residual, smoothed, under `erle_gate` x the input):
        then the input is mostly echo. A caller the double-talk test missed is cancelled by neither, and
        counting them as residual echo drags ERLE down until the caller reads as echo (what issue 12's live
        traces showed). After a change of the echo path the background cancels again within a few hundred
        ms and the foreground's fall in ERLE is measured. And not while the background does worse than the
        foreground (`fg_keep_ratio`): it is adapting on something that is not echo.
        """
        c = self.config
        if not c.two_path or (c.gate_once_converged and not self._converged):
            return True
        if self._bg_e < c.transfer_ratio * self._fg_e:
            return True  # the background does clearly better: the path moved, the foreground's ERLE fell
        if c.erle_consistent > 0 and e_e > c.erle_consistent * mic_e / max(self._erle(), 1.0):
            # Far more left than the ERLE measured so far. While the estimate still matches what came in
            # (<mic, y> near <y, y>: the echo it models is there) the rest is a caller, not residual echo; an
            # estimate that no longer matches is a path that moved, and its ERLE has fallen (measured: without
            # this, a jitter-buffer jump read as "caller" for 3-4 frames, echo-only calls self-stopped).
            return float(np.dot(mic, y)) < c.match_min * y_e
        return min(self._bg_e, self._fg_e) <= c.erle_gate * self._in_e and self._bg_e <= c.fg_keep_ratio * self._fg_e

    def _two_paths(self, mic_e: float, bg_e: float, fg_e: float, ref_e: float) -> bool:
        """Compare the two filters on this frame; copy one into the other when the evidence says so.

        Returns False when the background was reset to the foreground (it had diverged). Judged only on frames
        where the reference is active: on silent ones both residuals are the caller leg as it came.
        """
        c = self.config
        if ref_e <= FRAME or not c.two_path:
            return True
        a = c.two_path_smooth
        self._bg_e += a * (bg_e - self._bg_e)
        self._fg_e += a * (fg_e - self._fg_e)
        self._in_e += a * (mic_e - self._in_e)
        if c.follow:
            # The background is adopted on every frame it gives no reason to doubt: not on double talk, no worse
            # than the foreground, and leaving no more than `follow_consistent` x what the ERLE measured so far
            # says an echo leaves. A caller the double-talk test missed fails the last (the caller stays in the
            # background's residual) from its first frames, before the adaptation on it has done harm.
            doubt = (
                self.double_talk
                or self._bg_e > c.follow_ratio * self._fg_e
                or self._bg_e * max(self._erle(), 1.0) > c.follow_consistent * self._in_e
            )
            if not doubt:
                self._adopt = True
                return True
        if self._same:  # the two part: the foreground keeps this frame's weights, the background goes on
            self._wf[...] = self._w
            self._same = False
        # Without `follow`, "clearly better": under the foreground's residual, and cancelling as much as the
        # foreground has been measured to (ERLE, between 3 dB and `transfer_erle`): a background adapted on a
        # caller near the echo's level leaves the caller in its residual and does not get there.
        need = min(max(self._erle(), 2.0), c.transfer_erle)
        if not c.follow and (
            self._bg_e < c.transfer_ratio * self._fg_e
            and self._bg_e * need <= self._in_e
            and not self.double_talk
        ):
            self._bg_better += 1
            if self._bg_better >= c.transfer_frames:
                self._adopt = True  # next frame, after the pending update (see _cancel)
                self._fg_e = self._bg_e
                self._bg_better = 0
            return True
        self._bg_better = 0
        # Put back only onto a foreground that itself cancels: after a jump of the echo path both are wrong,
        # and the background is the one that will find the new path.
        if self._bg_e > c.diverged_ratio * self._in_e and self._fg_e <= self._in_e < self._bg_e:
            self._adopt = False
            self._w[...] = self._wf
            self._bg_e = self._fg_e
            return False
        return True

    def _unconverged_fraction(self, y: F64, judged: F64, judged_e: float, end: int) -> float:
        """Locked but not cancelling yet: the echo bounded without the filter's ERLE.

        Broadband (`per_bin` off), by levels alone as before the lock. Bin by bin, by the path gain learnt at
        the lock times the reference in the filter's span: the lock found where the echo is, and a caller
        who talks over the first second of a reply (the bench's double talk does, live) is told apart by
        the bins the agent's echo leaves empty; the level bound alone took a caller up to 3 dB over the
        agent's loudest syllable for echo (live: candidates at 0.77-1.00 echo share, rejected).
        """
        if not self.config.per_bin:
            return self._unlocked_fraction(judged_e, end)
        return self._bin_fraction(y, judged, 1.0)

    def _bin_fraction(self, y: F64, judged: F64, residual_share: float) -> float:
        """Echo fraction of the frame `judged`, bin by bin: a bin's energy counts as echo only up to what the
        echo can explain there (`residual_margin` x the residual, never over `echo_bound_margin` x the most the
        echo could be: the filter's estimate or path gain x the loudest reference block in the filter's span).

        Broadband, a caller near the echo's level (a quiet talker at -6 dB ERL) is inside the energy margins and
        reads as echo. Voices differ in pitch and formants: part of the caller's energy sits in 50 Hz bins the
        agent's echo leaves nearly empty, and counts as caller. Off by default (`per_bin`), measured:
        - a harmonic caller at the echo's own level (tests/bargein/test_echo_bins.py): caller spans under the
          reject share 0.23 against 0.08 broadband (drift 20 ms), 0.71 against 0.71 (no drift);
        - but echo-only spans over the reject share fell to 0.72-0.78 from 1.00 (the clipped echo's harmonics
          and the residual land in bins the estimate leaves low; spreading the bound over +-2 bins: 0.83-0.94,
          and the caller's gain was gone), a self-stop risk;
        - live (bench, twilio, 20 calls a condition, same tree): double talk detected 11/20 broadband, 13/20
          bin by bin (with `_unconverged_fraction` bin by bin too), echo-only self-stops 0/20 both: within noise.
        """
        c = self.config
        p = c.partitions
        h = self._h
        rows = self._bins_in
        rows[0] = y
        rows[1] = judged
        spec = np.fft.rfft(rows, axis=1)
        pw = np.add.reduce(np.square(spec.view(np.float64)).reshape(2, -1, 2), axis=2)
        # The reference rows are 2-frame (320-sample) spectra: their even bins are this frame's bins, at twice
        # the power per bin (twice the samples).
        ref = np.maximum.reduce(self._pbuf[h : h + p, ::2], axis=0)
        bound = np.maximum(pw[0], (0.5 * self._gain2) * ref)
        cap = bound * min(c.echo_bound_margin, c.residual_margin * residual_share)
        total = float(np.add.reduce(pw[1]))
        if total <= 0.0:
            return 0.0
        return min(1.0, float(np.add.reduce(np.minimum(pw[1], cap))) / total)

    def _update(self, err: C128) -> None:
        """NLMS step with the last frame's error spectrum `err`; called before the new block is pushed."""
        c = self.config
        p = c.partitions
        h = self._h
        np.divide(err, self._power, out=err)  # err already carries mu (see _cancel); _power the regulariser
        g = np.conjugate(self._xbuf[h : h + p], out=self._prod)
        g *= err
        self._w += g
        # Gradient constraint: keep each partition's taps to its own 160 (linear, not circular convolution).
        # Applied to the weights every `constrain_every` frames rather than to every update: the updates in
        # between wrap only a little, and the two FFTs are a third of the frame's cost (numpy per-call cost).
        self._frames += 1
        if self._frames % c.constrain_every == 0:
            taps = np.fft.irfft(self._ws, 2 * FRAME, axis=2)  # both filters (the foreground: copies of it)
            taps[:, :, FRAME:] = 0.0
            self._ws[...] = np.fft.rfft(taps, axis=2)
            # No drift from the running sum; and the NLMS regulariser, a thousandth of the mean bin power,
            # refreshed here rather than every frame and kept inside _power (one numpy call less a frame).
            np.add.reduce(self._pbuf[h : h + p], axis=0, out=self._power)
            self._reg = 1e-3 * (float(self._power.sum()) / len(self._power) + 1.0)
            self._power += self._reg

    # -- bulk delay ------------------------------------------------------------------------------
    def _gcc(self, end: int) -> tuple[int, float, F64] | None:
        """GCC-PHAT of the caller leg ending at sample `end` against the agent's audio over the delay range:
        (peak index, peak over the correlation's RMS floor, the correlation over the range); None if either
        side is too quiet to say."""
        c = self.config
        mic, ref, win = self._windows(end)
        dmin = round(c.min_delay_ms * SAMPLE_RATE / 1000)
        dmax = round(c.max_delay_ms * SAMPLE_RATE / 1000)
        if _energy(mic) < win or _energy(ref) < win:
            return None  # too quiet to say
        m = mic.reshape(-1, _DECIM).mean(axis=1)
        r = ref.reshape(-1, _DECIM).mean(axis=1)
        size = _fft_size(len(m) + len(r))
        cross = np.conj(np.fft.rfft(m, size)) * np.fft.rfft(r, size)
        # PHAT weighting, regularised: bins the band limit emptied would otherwise add pure noise.
        mag = np.abs(cross)
        cc = np.fft.irfft(cross / (mag + 0.05 * float(mag.mean()) + 1e-9), size)
        # cc[k] = sum_i m[i] r[i + k]; mic[i] echoes ref[i + dmax - lag], so k = (dmax - lag) / decim.
        seg = cc[0 : (dmax - dmin) // _DECIM + 1]
        k = int(np.argmax(seg))
        floor = float(np.sqrt(np.mean(seg * seg))) or 1e-12
        return k, float(seg[k] / floor), seg

    def _windows(self, end: int) -> tuple[F64, F64, int]:
        """The caller leg's last stretch before `end` and the agent's audio that could echo in it."""
        c = self.config
        # No older than the agent's audio can have echoed: early tries correlate less silence, and cost less.
        assert self._run_start is not None
        since_s = end / SAMPLE_RATE - self._run_start - c.min_delay_ms / 1000
        win = round(min(c.window_s, max(0.2, since_s)) * SAMPLE_RATE) // _DECIM * _DECIM
        dmax = round(c.max_delay_ms * SAMPLE_RATE / 1000)
        return self._mic.read(end - win, win), self._ref.read(end - win - dmax, win + dmax), win

    def echo_evident(self, t: float) -> bool:
        """Does the caller leg up to `t` carry the agent's audio at all (a GCC-PHAT peak over the delay range)?

        Asked of a speech candidate before any echo path has locked: the level bound alone cannot tell a quiet
        caller from an echo, but only an echo correlates with what the agent played. About 0.3 ms.
        """
        if not self.active(t) or self._run_start is None:
            return False
        found = self._gcc(round(t * SAMPLE_RATE))
        return found is not None and found[1] >= self.config.min_peak_ratio

    def _estimate_delay(self, end: int) -> bool:
        """Run GCC-PHAT; True if it moved the delay by more than `jump_ms`."""
        c = self.config
        found = self._gcc(end)
        if found is None:
            return False
        k, self.peak_ratio, seg = found
        dmax = round(c.max_delay_ms * SAMPLE_RATE / 1000)
        if self.peak_ratio < c.min_peak_ratio:
            return False
        # Parabolic interpolation of the peak to a fraction of a decimated sample.
        frac = 0.0
        if 0 < k < len(seg) - 1:
            a, b, d = seg[k - 1], seg[k], seg[k + 1]
            den = a - 2 * b + d
            frac = 0.5 * (a - d) / den if den != 0 else 0.0
        lag = dmax - round((k + frac) * _DECIM)
        # One GCC peak under drift or double talk can be a stray; act on it when it is clear or confirmed.
        agree = self._candidate is not None and abs(lag - self._candidate) <= c.agree_ms * SAMPLE_RATE / 1000
        self._candidate = lag
        if not (self.peak_ratio >= c.sure_peak_ratio or agree):
            return False
        if self.delay is not None:
            if abs(lag - self.delay) <= c.jump_ms * SAMPLE_RATE / 1000:
                return False
            # Moving a locked filter throws away what it learnt, and a voiced agent (periodic pitch, repeated
            # syllables) gives strong stray peaks: move only on two agreeing estimates, and only if the
            # current delay's correlation has really faded (measured: one lone peak moved a correct lock
            # 68 ms off, and the echo then passed as "double talk").
            k_now = (dmax - self.delay) // _DECIM
            if not agree or (0 <= k_now < len(seg) and seg[k_now] > c.keep_peak_share * seg[k]):
                return False
        if self.delay is None:
            # First lock: the echo path's gain from the window's levels (mostly echo, or GCC would not
            # have locked), doubled for margin, so double talk is told from echo before the filter converges.
            mic, ref, win = self._windows(end)
            aligned = ref[dmax - lag : dmax - lag + win]
            gain2 = 2.0 * _energy(mic) / max(_energy(aligned), 1.0)
            self._gain2 = min(1.0, max(1e-3, gain2))
        self._set_delay(lag)
        return True

    def _recentre(self) -> None:
        """Follow drift with the converged filter's strongest tap: keep it `lead_ms` into the filter."""
        assert self.delay is not None
        trusted = self._w if self._same else self._wf
        taps = np.fft.irfft(trusted, 2 * FRAME, axis=1)[:, :FRAME].reshape(-1)  # the trusted filter's
        peak = int(np.argmax(np.abs(taps)))
        shift = peak - round(self.config.lead_ms * SAMPLE_RATE / 1000)
        # Only small moves: drift is slow, and a barely converged filter's strongest tap can sit anywhere
        # (measured: a 68 ms "recentre" 0.1 s after a correct lock). Jumps are GCC's to find.
        if 2 < abs(shift) <= self.config.recentre_max_ms * SAMPLE_RATE / 1000:
            erle, converged = (self._erle_in, self._erle_out), self._converged
            self._set_delay(self.delay + shift)
            if self.config.recentre_keeps_erle:
                (self._erle_in, self._erle_out), self._converged = erle, converged

    def _set_delay(self, lag: int) -> None:
        if self.delay is None:
            self.delay = lag
            self.echo_seen = True
            return
        shift = lag - self.delay
        if abs(shift) <= 2:
            return  # within what adaptation follows on its own
        # The taps model echo at ref[n - delay + lead - k]; a later delay moves every tap `shift` earlier.
        p = self.config.partitions
        taps = np.fft.irfft(self._ws, 2 * FRAME, axis=2)[:, :, :FRAME].reshape(2, -1)  # both filters
        moved = np.zeros_like(taps)
        n = taps.shape[1]
        if shift > 0:
            moved[:, : n - shift] = taps[:, shift:] if shift < n else 0.0
        else:
            moved[:, -shift:] = taps[:, : n + shift] if -shift < n else 0.0
        blocks = np.zeros((2, p, 2 * FRAME))
        blocks[:, :, :FRAME] = moved.reshape(2, p, FRAME)
        self._ws[...] = np.fft.rfft(blocks, axis=2)
        self._bg_e = self._fg_e = self._in_e = 0.0  # the comparison starts over on the moved filters
        self._bg_better = 0
        self.delay = lag
        # A jump means the filter was wrong for a while: trust the level bound until it re-converges.
        self._erle_in = self._erle_out = 1.0
        self._converged = False
