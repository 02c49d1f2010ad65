"""EchoConfig: every threshold of the echo guard, and the units every echo module shares.

What the numbers are for is said next to each; the parts they tune are described where they live:
`echo_clock` (the caller's frame schedule), `echo_delay` (GCC-PHAT bulk delay), `echo_filter` (the two-path
FD-NLMS filter) and `echo` (the guard: echo fraction, double talk, echo_share). Figures quoted in the comments
were measured with `python -m app.offline.echo_eval` unless they say otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
FRAME = 160  # one 20 ms telephony frame: the filter's block and the guard's unit of judgement
I16 = npt.NDArray[np.int16]
F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]


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
    # Coherence with the agent's audio at the delay (`echo_coherence`), while the filter has not converged: a
    # caller near the echo's level, over the first second of a reply, no longer reads as echo on levels.
    # echo_eval --live-checks --caller-at 0.3 (pool, 20 callers x 3 ERL; 108 echo-only calls): double talk
    # 22/60 -> 55/60, echo-only self-stops 0 -> 0; noise over echo false clears 3 -> 4/48 (--noise-echo 48
    # --noise-at 0.3), 1 -> 1/24 (--noise-echo 24); cost +1%.
    coherence: bool = True
    coherence_alpha: float = 0.25  # smoothing a frame: ~80 ms (the brief's 60-100 ms; no other value tried)
    coherence_full: float = 0.5  # an explained share this high reads as all echo (echo alone: 0.77+ at p5)
    # The figures in the next three comments were measured while the cap also set the attenuation (a variant
    # dropped for noise over echo, see EchoGuard._cancel); the comparisons are what chose these values.
    coherence_lags: int = 3  # the delay and 2 frames later: GCC's early side peaks (1, untrusted: 3/108 self-stops)
    # Trusted after a lock whose GCC peak was this clear (wrong locks seen: a 6.2 stray on the line floor, and
    # 12.5-12.7 early side peaks that the extra lags cover) or once the share reached `coherence_valid` (only
    # that: double talk 51/60 instead of 57/60, the caller talks before the echo shows).
    coherence_trust_peak: float = 8.0
    coherence_valid: float = 0.6
    # Also once converged (a caller over a converged filter: echo_eval --live-checks --caller-at 3.0 46/60 ->
    # 56/60, echo-only 0/108) but the guard costs +65% (45 -> 75 us a frame, echo_eval --bench): off.
    coherence_always: bool = False
    # The coherence also caps the fraction the attenuation reads (step 4c; issue 12's double-talk tail: live, a
    # caller ~5 dB under the echo was turned down 30 dB for seconds by an unconverged filter). Tried with the
    # speakerphone preset's coherence_always, off: pool (echo_eval --live-checks --caller-at 0.3, 20 callers x 3
    # ERL, 36 echo-only, 40 noise clips from 0.3 s) double talk 18/20 -> 19/20 at -6 dB, p95 390 -> 307 ms, but
    # noise over the echo cleared in 14/40 calls against 5/40 (the echo under noise passes whole, as in 4b).
    coherence_attenuation: bool = False
    # Attenuate before the filter has converged (False: those frames pass whole, only the fraction reported
    # tells echo). Tried for the double-talk tail, kept on: pool, the bench's reply ("Sure.", then the rest; echo_trace
    # --short-first 0.1 --false 40) -6 dB p50 297 -> 295 ms, p95 606 -> 554 ms, noise over echo 5/40 -> 14/40 calls.
    suppress_unconverged: bool = True
    per_bin: bool = False  # echo fraction bin by bin: tried, off (see `EchoGuard._bin_fraction`); broadband as before
    residual_margin: float = 4.0  # residual estimate x this for echo_fraction: the non-linear residual varies a lot
    echo_bound_margin: float = 2.0  # ... but never more echo than 2 x the most the uncancelled echo could be
    suppress: bool = True
    suppress_floor: float = 0.03  # -30 dB at most, and only on frames reported as (nearly) all echo
    # Attenuation starts at this echo_fraction (gain 1) and reaches the floor at suppress_full, linear in
    # amplitude between. sqrt(1 - fraction) (margins 1.5-4) took 2-7 dB off callers and did no better.
    suppress_from: float = 0.5
    suppress_full: float = 0.95
    # Two paths (`echo_filter`). Residual energies are smoothed on frames with the reference
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
    # (`TwoPathFilter.echo_dominated`): the background no worse than `fg_keep_ratio` x the foreground, one
    # filter's residual under `erle_gate` x the input, and the residual under `erle_consistent` x input / ERLE
    # so far unless the estimate no longer matches the input (<mic, y> / <y, y> under `match_min`: the path
    # moved).
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
