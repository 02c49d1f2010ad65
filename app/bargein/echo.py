"""EchoGuard: removes the agent's own voice from the caller's leg and says how much of what is left is echo.

Theory of operation
-------------------
On a speakerphone the caller's microphone hears the agent, and without a guard the detector hears the agent
"barge in" on itself. The server tells the guard what it plays (`played(pcm16, start_t)`, per chunk, with
the chunk's planned play start on the caller-frame clock; chunks may come up to a few hundred ms early and
with gaps), and when a clear cut the rest off (`stop_at(t)`). Both legs are kept by sample number
(`echo_ring.SampleRing`). Per 20 ms caller frame (`process(frame, t)`, `t` the frame's arrival time) the
guard:

0. Frame clock. Places the frame on the caller's own steady 20 ms schedule, not at `t`
   (`echo_clock.FrameClock`: why, and how the schedule is kept).
1. Bulk delay. Finds where the echo comes from in the agent's audio: GCC-PHAT over lags
   `min_delay_ms..max_delay_ms` (`echo_delay`). Until the first lock it is tried every `lock_retry_s` from
   `lock_first_s` after the agent's audio starts (echo needs a few hundred ms of speech to correlate on),
   later every `reestimate_s` (every `relock_retry_s` while the locked filter does not cancel), within the
   process-wide `GccBudget`. With no lock `prelock_evidence_s` into the call's first reply the line has no
   echo (a handset): the guard goes dormant and looks only every `dormant_retry_s`.
2. Echo path. Two FD-NLMS filters on the agent's audio from `lead_ms` before the delay, one adapting, one
   used (`echo_filter.TwoPathFilter`: the filter, the two paths and when ERLE may be measured). The guard
   measures ERLE (echo in / residual out, on frames the echo dominates, smoothed), follows drift with the
   converged filter's peak tap (`_recentre`) and moves the taps when GCC finds a jump (`_set_delay`).
3. Double talk. Adaptation freezes while the caller's leg is much louder than the echo can be (`dt_ratio`
   over the larger of the filter's echo estimate and echo-path gain x agent energy), with a hangover.
   The caller's voice is never muted: the filter only subtracts its estimate of the echo.
4. Echo fraction. Per frame, the share of the cleaned frame's energy that is leftover echo:
   - before the delay is locked the filter cannot cancel, so the frame is bounded by the loudest echo the
     agent's audio could produce at any lag in range (`prelock_gain_db` x `prelock_margin`): a frame under
     that bound is reported as echo, one above it as mostly caller. The frame is NOT attenuated then
     (`prelock_floor` = 1): a caller talking over an unlocked guard must get through at once;
   - after lock, the residual is the echo estimate's energy over the measured ERLE times `residual_margin`,
     which covers the loudspeaker's non-linear residual, but never more than `echo_bound_margin` x the most
     the uncancelled echo could be. Frames reported as mostly echo (fraction over `suppress_from`) are
     attenuated, down to `suppress_floor` at `suppress_full`: leftover echo must not hold the detector in
     "speaking", or the caller's real onset raises no new candidate. Frames the caller dominates pass
     untouched. Locked but not yet converged, the frame is reported as at least what levels alone say ...
4b. ... but no more than its coherence with the agent's audio at the delay allows (`echo_coherence`): a
   frame the reference cannot explain is the caller's, however its level compares (issue 12: the caller who
   talks over the first second of a reply, near the echo's level). Only while the filter has not converged
   (`coherence_always` off), only on a lock that is trusted (from a clear GCC peak, or confirmed by the
   coherence itself: `_coherent_fraction`), and only the fraction reported: the attenuation stays the
   levels' (echo under noise, passed whole, raised candidates the noise's share let through).
5. Candidate check. The fractions and energies of the last `history_s` are kept; `echo_share(since_t,
   until_t)` is the energy-weighted share of echo in that span. The decision layer rejects a speech
   candidate whose share is above `reject_share` (ECHO_REJECT_SHARE), e.g. for a SpeechStarted event
   `guard.echo_share(ev.at - ev.sustained_ms / 1000, ev.at) > ECHO_REJECT_SHARE` -> ignore it.

When no agent audio can be echoing (nothing played within `max_delay_ms + active_tail_ms`, or the next chunk
is not due yet) the frame is returned as is; when the reference in the filter's span is silent the filter
is skipped. Cost: two FFT calls a frame and ~25 small numpy calls (see `echo_filter`).

Cost, and what it is made of (issue 12's detector budget). Between two of a call's frames the VAD and Silero
run, and the guard's code and data come back cold: in the detector bench a frame costs about twice what it
does alone, and what counts is the number of numpy calls and the memory they touch, not arithmetic. So every
per-frame call writes into a buffer the guard owns, the FFTs skip numpy.fft's wrapper (`echo_fft`), the
filter's spectra are written once instead of twice, and the level bound keeps the block energies it has
already summed (`_level_bound`); GCC-PHAT and the coherence were rewritten the same way. None of it changes
a decision: every rewrite computes the same numbers to the bit (tests/bargein/test_echo_fingerprint.py pins
the outputs of 14 configs and arrival patterns; `echo_eval --live-checks` counts unchanged). Measured on the
shared 2-core VM at load 1.4-2.7, the detector bench's guard-on run (`app.bench.detector_cost`, 10 s a call)
with the old and the rewritten guard in one process, interleaved, 4 rounds: the guard's time 0.80x at 100
calls (101 -> 80 us a call-frame), 0.76x at 1 call (111 -> 84 us); `bargein bench --mode detector`, old and
new trees alternated, 3 runs each: at 100 calls total 157 -> 134 us, guard 110 -> 87 us (guard off: 45 and
46). Left (timed in the bench, 100 calls): the filter's update and estimate about half (the two FFTs and
~15 calls), GCC-PHAT ~6% (0.02 a call-frame at ~0.2 ms; looking less often once locked would change what
the guard decides, so it was not done), level bound and coherence ~5% each, the rest the guard's own Python
(ERLE, double talk, the fraction) and the frame clock.

Double talk before convergence (issue 12, step 4b). Measured with the session's checks
(`echo_eval --live-checks`: the detector re-armed after a rejected candidate, then the echo share and the
second look, as app/call/session.py runs them; pool, 20 callers x 3 ERL, caller 0.3 s into the reply, 108
echo-only calls): double talk detected 22/60 -> 55/60 (p50 ~230 ms from the clip's onset mark to the verdict),
echo-only self-stops 0/108 both; frames on the exact grid (`--steady`) 23/60 -> 56/60; noise over the echo
from 0.3 s into the reply (the bench's timing; `--noise-echo 48 --noise-at 0.3`) false clears 3/48 -> 4/48,
from 1 s (`--noise-echo 24`) 1/24 both; a caller 1 s or 3 s into the reply: unchanged (the filter has
converged there); isolated words (`--words`) 11/60 -> 37/60. Cost: +1% on echo_eval --bench (echo-only calls
converge soon); one coherence update is ~15-30 us, only on frames before convergence (detector bench, 100
calls, a third with double talk: guard 57-63 -> 61 us a call-frame). Live (bench, speakerphone preset, report
set, 20 calls at once, twilio / plivo): double talk detected 64% / 70% (the brief's before: 60-68%), of which
the 9 isolated-word clips 0/9 (also with the attenuation capped too: then 72% / 72%, but noise over echo
7/95 / 15/95; the sentences: 32/41 and 35/41 now); echo-only
self-stops 0/30 / 0/30; noise over echo false clears 1/95 / 1/95. The history below is from before step 4b.

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
63-64 us), as the second filter is computed only while the two differ (`TwoPathFilter.same`).

Pure and synchronous: no clock reads (times are arguments), no I/O.
"""

from __future__ import annotations

import math

import numpy as np

from app.bargein.echo_clock import FrameClock
from app.bargein.echo_coherence import EchoCoherence
from app.bargein.echo_config import ECHO_REJECT_SHARE, F64, FRAME, I16, SAMPLE_RATE, EchoConfig
from app.bargein.echo_delay import SHARED_GCC_BUDGET, DelayTracker, GccBudget, gcc_phat, gcc_windows
from app.bargein.echo_filter import TwoPathFilter
from app.bargein.echo_ring import RING, UNCHANGED, SampleRing, energy

# The guard's interface, importable from here as before the split into echo_* modules.
__all__ = ["ECHO_REJECT_SHARE", "FRAME", "SAMPLE_RATE", "SHARED_GCC_BUDGET", "EchoConfig", "EchoGuard", "GccBudget"]


class EchoGuard:
    """One call's echo canceller: `played()` the agent's audio by play time, `process()` each caller frame."""

    def __init__(self, config: EchoConfig | None = None, budget: GccBudget = SHARED_GCC_BUDGET) -> None:
        self._budget = budget
        self.config = c = config or EchoConfig()
        self._ref = SampleRing()
        self._mic = SampleRing()
        self._run_start: float | None = None  # play start of the agent's current stretch of audio
        self._first_run_start: float | None = None  # ... of the call's first stretch
        self._phase = 0.0  # in [0, 1): this call's offset for its GCC retries, from its first play time
        self.echo_seen = False  # a delay has locked in this call: there is an echo path
        self._last_play_end: float | None = None
        self._active_from, self._active_until = math.inf, -math.inf  # active() while from < t < until
        p = c.partitions
        self._clock = FrameClock(c.frame_clock)
        self._filter = TwoPathFilter(c)
        self._delays = DelayTracker(c)
        self._coherence = EchoCoherence(c.coherence_alpha, c.coherence_lags)  # step 4b
        self._coh_ref: F64 = np.zeros((c.coherence_lags + 1) * FRAME)  # scratch: what step 4b reads of the legs
        self._coh_mic: F64 = np.zeros(2 * FRAME)
        self._lock_clear = False  # the current delay came from a GCC peak of `coherence_trust_peak` or more
        self._bins_in: F64 = np.zeros((2, FRAME))  # scratch: the echo estimate and the frame judged, per bin
        self._span_e = [0.0] * p  # energies of the reference blocks in the filter's span, newest first
        self.delay: int | None = None  # bulk delay in samples (filter starts at delay - lead)
        self._next_estimate: float | None = None
        self._gain2 = 1.0  # echo-path energy gain, learnt; 0 dB until then
        self._erle_in = 1.0  # smoothed echo energy on echo-only frames ...
        self._erle_out = 1.0  # ... and the residual left of it: ERLE = in / out
        self._converged = False  # has ERLE reached converged_erle since the last (re)lock?
        self._dt_left = 0
        self.double_talk = False
        hist = max(1, round(c.history_s * SAMPLE_RATE / FRAME))
        self._h_t = np.full(hist, -np.inf)  # frame end times ...
        self._h_energy = np.zeros(hist)  # ... cleaned-frame energy (before suppression) ...
        self._h_echo = np.zeros(hist)  # ... and the echo part of it
        self._h_i = 0
        self._prelock_gain2 = 10 ** (c.prelock_gain_db / 10) * c.prelock_margin
        # Sample counts the frame path would otherwise work out from the config on every frame.
        self._lead = round(c.lead_ms * SAMPLE_RATE / 1000)
        self._level_dmin = round(c.min_delay_ms * SAMPLE_RATE / 1000) // FRAME * FRAME
        self._level_dmax = -(-round(c.max_delay_ms * SAMPLE_RATE / 1000) // FRAME) * FRAME
        # `_level_bound`'s kept block energies, and the sample their range starts at (None: none kept)
        self._level_e: F64 = np.zeros((self._level_dmax - self._level_dmin) // FRAME + 1)
        self._level_at: int | None = None
        self._cap_attenuation = c.coherence and c.coherence_attenuation  # step 4c (EchoConfig)

    @property
    def trusted(self) -> bool:
        """The echo fraction can be believed when it reads "caller": a delay is locked and the filter has converged
        on it, or the lock is one step 4b trusts (a clear GCC peak, or the coherence has since shown the echo at
        this delay). Read-only; the session asks it before letting a candidate on an echo line clear at once."""
        if self.delay is None:
            return False
        return self._converged or self._lock_clear or self._coherence.best >= self.config.coherence_valid

    @property
    def peak_ratio(self) -> float:
        """The last delay estimate's GCC peak over its correlation floor."""
        return self._delays.peak_ratio

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
        if not self._active_from < t < self._active_until:  # active(t), inline: every frame of the call
            # No echo possible: the frame counts as caller only in any span it falls in.
            self._record(t, energy(mic_pcm16_frame.astype(np.float64)), 0.0)
            return mic_pcm16_frame, 0.0
        end = self._clock.end(t, n)
        mic = mic_pcm16_frame.astype(np.float64)
        self._mic.write(end - n, mic)
        if n != FRAME:
            self._record(t, energy(mic), 0.0)
            return mic_pcm16_frame, 0.0  # the filter's block is one telephony frame; others pass as they are
        if self._next_estimate is None or t >= self._next_estimate:
            self._maybe_estimate(end, t)
        if self.delay is None and self._dormant(t):
            # No echo path on this line: nothing to remove, nothing to call echo; the frame passes as it came.
            self._record(t, energy(mic), 0.0)
            return mic_pcm16_frame, 0.0
        if self.delay is None:
            e, e_e, fraction, gain = self._before_lock(mic, end)
        else:
            e, e_e, fraction, gain = self._cancel(mic, end)
        self._record(t, e_e, fraction)
        if gain != 1.0:
            e *= gain  # in place: the mic ring keeps its own copy
        if e_e * gain * gain > 32767.0 * 32767.0:  # else no sample can be out of range: the clip is a no-op
            np.minimum(e, 32767.0, out=e)  # the ufuncs, not np.clip: its Python wrapper is most of its cost here
            np.maximum(e, -32768.0, out=e)
        return e.astype(np.int16), fraction  # truncated, not rounded: under 1 LSB, one numpy call less

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
        mic_e = energy(mic)
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
        bound = gain2 * self._level_bound(end)
        if bound <= FRAME or energy <= 0.0:
            return 0.0
        return min(1.0, bound / energy)

    def _level_bound(self, end: int) -> float:
        """The energy of the loudest 20 ms block of agent audio in the delay range, for the frame ending at `end`.

        Asked on every frame before the lock and in the agent's pauses, and the ranges of consecutive frames
        share all but their newest blocks: the blocks' energies are kept, and only blocks not seen yet are read
        (each block's energy is the same sum as before, so the bound is the same to the bit). The kept ones are
        dropped when the frames are not a whole number of blocks apart, or the agent's audio changed under them
        (written late or cut by a clear: `SampleRing.changed_from`), or the ring holds too little history.
        """
        ring, kept = self._ref, self._level_e
        nb = len(kept)
        start = end - self._level_dmax - FRAME  # the range: nb blocks from here
        fresh = nb
        at = self._level_at
        if at is not None and ring.changed_from >= at + nb * FRAME and ring.end - RING <= start:
            moved = start - at
            if 0 <= moved < nb * FRAME and moved % FRAME == 0:
                fresh = moved // FRAME
                if fresh:
                    kept[: nb - fresh] = kept[fresh:]
        if fresh == 1:  # the usual case: one new block. The agent's audio is whole numbers, so a block's sum of
            # squares (under 2^38) is exact in float64 in any order of additions: dot and einsum agree to the bit.
            block = ring.read(start + (nb - 1) * FRAME, FRAME)
            kept[nb - 1] = np.dot(block, block)
        elif fresh:
            span = ring.read(start + (nb - fresh) * FRAME, fresh * FRAME).reshape(fresh, FRAME)
            kept[nb - fresh :] = np.einsum("ij,ij->i", span, span)
        # Kept only while no block of the range is older than the ring holds (reads of those come back zeros).
        self._level_at = start if ring.end - RING <= start else None
        ring.changed_from = UNCHANGED
        return float(np.maximum.reduce(kept))

    def _cancel(self, mic: F64, end: int) -> tuple[F64, float, float, float]:
        c = self.config
        assert self.delay is not None
        p = c.partitions
        start = end - FRAME - self.delay + self._lead
        f = self._filter
        # Applies the last frame's update to the background, then any adoption by the foreground.
        ref2 = f.push_reference(self._ref, start)
        mic_e = float(np.dot(mic, mic))
        if f.quiet_blocks >= p:  # nothing in the filter's span: no echo to model
            self._dt_left = max(0, self._dt_left - 1)
            self.double_talk = self._dt_left > 0
            self._span_e = [0.0] * p
            # ... but for a while the echo can still arrive: its room tail, or a delay later than the filter's
            # span (a jump GCC has not caught yet). Read as "caller" (0), those frames pull an echo candidate's
            # share under 0.75 (live self-stops showed echo frames at 0.0-0.06). For `tail_frames` they are
            # bounded by levels with the learnt path gain; later, a caller talking in the agent's pause is not.
            quiet = 0.0
            if mic_e > FRAME and f.quiet_blocks - p < c.tail_frames:
                quiet = self._level_fraction(mic_e, end, self._gain2)
            return mic, mic_e, quiet, 1.0
        y, e, e_bg = f.estimate(mic)
        newest = ref2[FRAME:]
        ref_e = float(np.dot(newest, newest))  # np.dot inline: at 160 samples the call overhead is the cost
        y_e = float(np.dot(y, y))
        e_e = float(np.dot(e, e))
        bg_e = e_e if e_bg is e else float(np.dot(e_bg, e_bg))
        erle = self._erle_in / max(self._erle_out, 1e-3)  # _erle(), once: it changes only where set again below
        trusted = f.judge(mic_e, bg_e, e_e, ref_e, self.double_talk, erle)
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
        expected = bound / max(erle, 1.0)  # the residual echo alone would leave
        if mic_e > c.dt_ratio * bound + FRAME:
            self._dt_left = c.dt_hangover_frames
        else:
            self._dt_left = max(0, self._dt_left - 1)
        self.double_talk = self._dt_left > 0
        if not self.double_talk and ref_e > FRAME:
            f.queue_update(e_bg)  # applied next frame, its FFT batched with the next reference block's
            # ERLE is measured on the foreground only while the background does no worse: a background worse
            # than the foreground is adapting on something that is not echo (a caller under the double-talk
            # test), and that caller must not be counted as residual echo. After a change of the echo path
            # the background does better, and the ERLE the foreground falls to is measured.
            if y_e > FRAME and f.echo_dominated(mic_e, e_e, mic, y, y_e, self._converged, erle):
                self._erle_in = 0.9 * self._erle_in + 0.1 * mic_e
                self._erle_out = 0.9 * self._erle_out + 0.1 * e_e
                erle = self._erle_in / max(self._erle_out, 1e-3)
                if erle > 4.0:  # converged enough (6 dB) that y measures the echo path
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
        if e_e > mic_e * c.diverged_ratio and f.fg_e > f.in_e * c.diverged_ratio and mic_e > FRAME:
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
        filtered = fraction  # what the filter's residual says: the attenuation's measure
        if not self._converged:
            if erle >= c.converged_erle:
                self._converged = True
            else:
                # (Re)locked, not cancelling yet: a wrong first lock also makes the double-talk test fire on
                # echo. Report at least what the levels alone say, as before the lock; the attenuation
                # below stays the filter's, so a caller is not cut meanwhile. (Not once converged: ERLE
                # also falls when a caller near the echo's level is adapted on, and that is the caller.)
                fraction = max(fraction, self._unconverged_fraction(y, e if e_e <= mic_e else mic, judged, end))
        cap = 1.0
        if c.coherence and (c.coherence_always or not self._converged):
            # Step 4b: until the filter converges, the caller leg's coherence with the agent's audio at the delay
            # caps the fraction reported (see echo_coherence): a caller near the echo's level is no longer taken
            # for echo on levels. Not the attenuation below unless `coherence_attenuation` (step 4c): a frame
            # of echo under noise, capped there too, was passed whole, its echo's speech raised candidates that
            # the noise's share then let through (echo_eval --noise-echo 48 --noise-at 0.3, the bench's timing:
            # false clears 3 -> 14/48, against 4/48 capping the report only; double talk 57/60 against 55/60).
            cap = self._coherent_fraction(end)
            fraction = min(fraction, cap)
        if self._cap_attenuation:
            filtered = min(filtered, cap)  # step 4c
        gain = 1.0
        if c.suppress and filtered > c.suppress_from and (self._converged or c.suppress_unconverged):
            # Frames that are (nearly) all leftover echo go down to the floor; frames where the caller
            # carries half or more of the energy pass untouched, so the caller's onset is heard at once.
            keep = (c.suppress_full - filtered) / (c.suppress_full - c.suppress_from)
            gain = max(c.suppress_floor, min(1.0, keep), math.sqrt(max(0.0, 1.0 - most / max(e_e, 1e-3))))
        return e, e_e, fraction, gain

    def _coherent_fraction(self, end: int) -> float:
        """The echo fraction the caller leg's coherence with the agent's audio at the delay allows (1: no cap).

        A share of `coherence_full` or more of the caller leg explained by the reference reads as all echo
        (the echo alone: 0.77-1.00, 5th percentile up); under it the frame is that much caller. Only once the
        lock is trusted: its GCC peak was clear, or the coherence has since shown the echo at this delay (at a
        wrong delay an echo reads as a caller: echo_eval's echo-only calls self-stopped 3/108 untrusted).
        """
        c = self.config
        assert self.delay is not None
        n = c.coherence_lags
        ref = self._ref.read(end - (n + 1) * FRAME - self.delay, (n + 1) * FRAME, self._coh_ref)
        share = self._coherence.update(ref, self._mic.read(end - 2 * FRAME, 2 * FRAME, self._coh_mic))
        if not (self._lock_clear or self._coherence.best >= c.coherence_valid):
            return 1.0
        return min(1.0, share / c.coherence_full)

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
        rows = self._bins_in
        rows[0] = y
        rows[1] = judged
        spec = np.fft.rfft(rows, axis=1)
        pw = np.add.reduce(np.square(spec.view(np.float64)).reshape(2, -1, 2), axis=2)
        # The loudest reference block in the filter's span, per bin: twice the power per bin (twice the samples).
        ref = self._filter.span_power()
        bound = np.maximum(pw[0], (0.5 * self._gain2) * ref)
        cap = bound * min(c.echo_bound_margin, c.residual_margin * residual_share)
        total = float(np.add.reduce(pw[1]))
        if total <= 0.0:
            return 0.0
        return min(1.0, float(np.add.reduce(np.minimum(pw[1], cap))) / total)

    # -- bulk delay ------------------------------------------------------------------------------
    def _gcc(self, end: int) -> tuple[int, float, F64] | None:
        """GCC-PHAT of the caller leg ending at sample `end` against the agent's audio (see `echo_delay`)."""
        assert self._run_start is not None
        return gcc_phat(*gcc_windows(self._mic, self._ref, end, self._run_start, self.config), self.config)

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
        lag = self._delays.propose(found, self.delay)
        if lag is None:
            return False
        if self.delay is None:
            # First lock: the echo path's gain from the window's levels (mostly echo, or GCC would not
            # have locked), doubled for margin, so double talk is told from echo before the filter converges.
            assert self._run_start is not None
            mic, ref, win = gcc_windows(self._mic, self._ref, end, self._run_start, c)
            dmax = round(c.max_delay_ms * SAMPLE_RATE / 1000)
            aligned = ref[dmax - lag : dmax - lag + win]
            gain2 = 2.0 * energy(mic) / max(energy(aligned), 1.0)
            self._gain2 = min(1.0, max(1e-3, gain2))
        self._set_delay(lag)
        return True

    def _recentre(self) -> None:
        """Follow drift with the converged filter's strongest tap: keep it `lead_ms` into the filter."""
        assert self.delay is not None
        shift = self._filter.peak_tap() - round(self.config.lead_ms * SAMPLE_RATE / 1000)
        # Only small moves: drift is slow, and a barely converged filter's strongest tap can sit anywhere
        # (measured: a 68 ms "recentre" 0.1 s after a correct lock). Jumps are GCC's to find.
        if 2 < abs(shift) <= self.config.recentre_max_ms * SAMPLE_RATE / 1000:
            erle, converged = (self._erle_in, self._erle_out), self._converged
            self._set_delay(self.delay + shift)
            if self.config.recentre_keeps_erle:
                (self._erle_in, self._erle_out), self._converged = erle, converged

    def _set_delay(self, lag: int) -> None:
        self._lock_clear = self.peak_ratio >= self.config.coherence_trust_peak
        if self.delay is None:
            self.delay = lag
            self.echo_seen = True
            return
        shift = lag - self.delay
        if abs(shift) <= 2:
            return  # within what adaptation follows on its own
        self._filter.shift(shift)
        self.delay = lag
        self._coherence.reset()
        # A jump means the filter was wrong for a while: trust the level bound until it re-converges.
        self._erle_in = self._erle_out = 1.0
        self._converged = False
