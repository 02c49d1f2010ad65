"""TwoPathFilter: the echo path as two partitioned-block frequency-domain NLMS filters on one reference.

One filter
----------
Block = one 20 ms caller frame, `partitions` blocks: 80 ms of taps (direct path, early reflections, most of
the room's tail), starting `lead_ms` before the bulk delay (`echo_delay`); drift between delay estimates is
absorbed by adaptation, a jump moves the taps (`shift`). The reference spectra (2-frame, 320-point, overlap-
save) sit newest first in a buffer with room before them, so the newest `partitions` are always one
contiguous view and the FFT writes each new block straight into the row before it: no roll, and a copy
only every few frames, when the view reaches the top (`_make_room`). The gradient is constrained every
`constrain_every` frames on the weights, not on every update. A frame's weight update waits for the next
frame: its error spectrum is computed in the same FFT call as the next reference block's, so a frame costs
two FFT calls (that one, and one inverse for both filters' outputs) plus ~15 small numpy calls; numpy's
per-call overhead, not arithmetic, is the cost, so every call writes into a buffer it owns (`echo_fft`: the
FFTs without numpy.fft's wrapper). Each of those rewrites gives the same numbers to the bit as the plain
expressions they replace (tests/bargein/test_echo_fingerprint.py).

Two paths (issue 12)
--------------------
Both filters share the reference spectra and the FFT calls. The background (row 0 of the weights) adapts
every frame as above; the foreground (row 1) is the one whose estimate is subtracted and judged. The
foreground adopts the background's weights (after its pending update, so it is not a step behind) on every
frame the background gives no reason to doubt (`follow`): no double talk, its residual no worse than the
foreground's and no more than `follow_consistent` x what the measured ERLE says an echo leaves. A caller the
double-talk test misses (within ~6 dB of the echo) stays in the background's residual, so from its first
frames the foreground keeps the weights from before the caller, and the background is put back to the
foreground when its residual grows louder than the input (diverged). While the two agree (the common case:
echo alone) one filter is computed, not two (`same`).

ERLE, which scales how much residual echo the guard takes a frame to hold, is measured only on frames the
echo dominates (`echo_dominated`), so a caller does not drag it down until the caller reads as echo, which
is what the single filter did live: it adapted on the caller, its ERLE fell to -4..-16 dB and the caller was
reported as 100% echo for seconds. ERLE itself, double talk and the echo fraction are the guard's (`echo`).

Measured (tests/bargein/test_echo_two_path.py, linear echo at -6 dB ERL, a steady caller at the echo's level):
one filter left the echo at -7 dB under the caller and 9 dB of ERLE after it, two filters -32 dB and 32 dB.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import numpy as np

from app.bargein.echo_config import C128, F64, FRAME, EchoConfig
from app.bargein.echo_fft import irfft, rfft
from app.bargein.echo_ring import SampleRing

_QUIET = 1.0  # mean square (RMS 1 LSB): a reference block this quiet contributes no echo worth modelling
_ROOM = 9  # rows before the filter's view: the new block's and the error's, and 7 more: the view moves every 8 frames


class TwoPathFilter:
    """Background and foreground FD-NLMS filters on one reference: `push_reference`, `estimate`, `queue_update`."""

    def __init__(self, config: EchoConfig) -> None:
        self.config = c = config
        p, bins = c.partitions, FRAME + 1
        # Row 0 the background, which adapts; row 1 the foreground, whose estimate is used. One array, so both
        # filter in the same calls.
        self._ws: C128 = np.zeros((2, p, bins), np.complex128)
        self._w: C128 = self._ws[0]  # views: only ever written in place
        self._wf: C128 = self._ws[1]
        self._prod2: C128 = np.zeros((2, p, bins), np.complex128)  # scratch: both filters' W * X
        self.bg_e = self.fg_e = self.in_e = 0.0  # smoothed residual energies (and the input's), reference on
        self._bg_better = 0  # consecutive such frames the background has been clearly better
        self._adopt = False  # the foreground takes the background's weights on the next frame
        # The foreground IS the background (it adopted it and nothing has cast doubt since): one filter is
        # computed, not two (the common case: echo alone). `_wf` is only written when the two part.
        self.same = c.follow or not c.two_path
        # Reference spectra, newest first: rows h..h+p-1 are the filter's input, one contiguous view. Each new
        # block goes in the row before (h - 1), the FFT writing it there and the last frame's error spectrum in
        # the row before that, so nothing is copied; when h reaches the top the view moves to the bottom rows
        # (`_make_room`: two copies every `_ROOM - 1` frames, where a doubled ring wrote every row twice).
        self._xbuf: C128 = np.zeros((p + _ROOM, bins), np.complex128)
        self._pbuf: F64 = np.zeros((p + _ROOM, bins))  # |X|^2 of the same rows
        self._power: F64 = np.full(bins, 1e-3)  # sum of |X|^2 over the filter's rows, kept incrementally, + _reg
        self._h = _ROOM
        self._reg = 1e-3
        self._prod: C128 = np.zeros((p, bins), np.complex128)  # scratch: W * X, then the gradient
        self.quiet_blocks = p + 2  # consecutive quiet reference blocks: >= p means the filter's input is silent
        self._x_start: int | None = None  # where the newest block starts in the reference
        # Row 0: [zeros, last error] (the error's overlap-save input); row 1: the next reference block pair.
        self._pair: F64 = np.zeros((2, 2 * FRAME))
        self._pad = self._pair[0]
        self._err = self._pad[FRAME:]  # where queue_update puts the error
        self._pending = False  # a weight update waits for the next frame's FFT
        self._frames = 0
        # Scratch for the per-frame numpy calls, written in place (outputs allocated per call were ~1 us each):
        self._sq: F64 = np.zeros(2 * bins)  # re^2, im^2 of a block's spectrum, interleaved
        self._dpw: F64 = np.zeros(bins)  # a block's |X|^2 less the leaving block's
        self._acc: C128 = np.zeros((2, bins), np.complex128)  # per filter: sum over partitions of W * X
        self._yy: F64 = np.zeros((2, 2 * FRAME))  # per filter: the overlap-save output, echo estimate last
        self._ys: F64 = self._yy[:, FRAME:]
        self._es: F64 = np.zeros((2, FRAME))  # per filter: the residual
        # The gradient constraint's taps (every `constrain_every` frames), in `_prod2`'s memory: that is scratch
        # for `estimate` only, never alive at the same time, and a call's state is what 100 calls keep in cache.
        self._taps: F64 = self._prod2.view(np.float64).reshape(-1)[: 2 * p * 2 * FRAME].reshape(2, p, 2 * FRAME)

    # -- the reference ---------------------------------------------------------------------------
    def push_reference(self, ref: SampleRing, start: int) -> F64:
        """Shift the newest reference block (starting at `start` in `ref`) into the filter's input; return the
        block pair (the 2-frame window ending with it).

        The last frame's pending weight update is applied first, with its error spectrum computed in the
        same FFT call as this block's spectrum: the update is exactly the one the last frame would have
        made (it uses the last frame's rows and power), at one numpy call fewer per frame. Then the
        foreground adopts the background if the last frame said so: after that update, not before (a
        foreground one NLMS step behind the background cancelled ~1.5 dB less on the drifting simulated
        path, echo_eval's echo-only calls, even copied every frame).
        """
        c = self.config
        p = c.partitions
        if self._x_start is None or start != self._x_start + FRAME:
            # A new delay or a gap in the frames: the older rows no longer line up, so rebuild them all.
            self._pending = False  # an update for rows that no longer line up would be wrong
            self._xbuf[:] = 0.0
            self._pbuf[:] = 0.0
            self._power[:] = self._reg
            self._h = _ROOM
            self.quiet_blocks = 0
            for back in range(p - 1, 0, -1):
                older = ref.read(start - (back + 1) * FRAME, 2 * FRAME)
                self._make_room()
                h = self._h
                self._push_one(None if self._quiet(older) else rfft(older, 2 * FRAME, self._xbuf[h - 1]))
        # Read straight into the pair's second row: the pair's FFT wants it there, and a quiet block wants
        # nothing of it (`_pair[1]` is read by nothing else).
        ref2 = ref.read(start - FRAME, 2 * FRAME, self._pair[1])
        self._x_start = start
        quiet = float(np.dot(ref2, ref2)) <= _QUIET * 2 * FRAME  # `_quiet`, inline: once a frame
        x: C128 | None = None
        self._make_room()
        h = self._h
        if self._pending:
            self._pending = False
            if quiet:
                self._update(rfft(self._pad, 2 * FRAME, self._xbuf[h - 2]))
            else:
                spec = rfft(self._pair, 2 * FRAME, self._xbuf[h - 2 : h])  # the error, then the new block
                self._update(spec[0])
                x = spec[1]
        elif not quiet:
            x = rfft(ref2, 2 * FRAME, self._xbuf[h - 1])
        self._push_one(x)
        if self._adopt:
            self.same = True
            self._adopt = False
        return ref2

    @staticmethod
    def _quiet(ref2: F64) -> bool:
        return float(np.dot(ref2, ref2)) <= _QUIET * 2 * FRAME

    def _make_room(self) -> None:
        """Two free rows before the view (the new block's and the error's): move the view to the bottom rows."""
        h = self._h
        if h < 2:
            p = self.config.partitions
            self._xbuf[_ROOM:] = self._xbuf[h : h + p]
            self._pbuf[_ROOM:] = self._pbuf[h : h + p]
            self._h = _ROOM

    def _push_one(self, x: C128 | None) -> None:
        """The newest row, already in row h - 1 (None: a quiet block, all zeros), joins the filter's view; the
        oldest row (h + p - 1) leaves it. The last frame's pending update has used the old view by then."""
        p = self.config.partitions
        h = self._h - 1
        dropped = self._pbuf[h + p]
        if x is None:
            self.quiet_blocks += 1
            if self.quiet_blocks > p:  # every row of the view is zeros already (and so is `dropped`)
                return
            self._h = h
            self._power -= dropped
            self._xbuf[h] = 0.0
            self._pbuf[h] = 0.0
            return
        self._h = h
        self.quiet_blocks = 0
        # |X|^2: re^2 and im^2 interleaved, then the pairs added (what add.reduce over them gave, bit for bit)
        sq = np.square(x.view(np.float64), out=self._sq)
        pw = np.add(sq[0::2], sq[1::2], out=self._pbuf[h])
        self._power += np.subtract(pw, dropped, out=self._dpw)

    def span_power(self) -> F64:
        """Per bin of a 20 ms frame, the loudest reference block in the filter's span (2-frame spectra: their
        even bins are a frame's bins, at twice the power per bin)."""
        p = self.config.partitions
        h = self._h
        out: F64 = np.maximum.reduce(self._pbuf[h : h + p, ::2], axis=0)
        return out

    # -- filtering and adaptation ----------------------------------------------------------------
    def estimate(self, mic: F64) -> tuple[F64, F64, F64]:
        """(the foreground's echo estimate y, its residual mic - y, the background's residual) for this frame."""
        p = self.config.partitions
        h = self._h
        x = self._xbuf[h : h + p]
        if self.same:  # one filter: the foreground is the background
            np.multiply(self._w, x, out=self._prod)
            # np.add.reduce, not .sum(): the method's Python wrapper costs as much as the addition here.
            acc = np.add.reduce(self._prod, axis=0, out=self._acc[0])
            irfft(acc, self._yy[0])
            y = self._ys[0]
            e = e_bg = np.subtract(mic, y, out=self._es[0])
        else:
            np.multiply(self._ws, x, out=self._prod2)  # both filters, one call each: x is shared
            irfft(np.add.reduce(self._prod2, axis=1, out=self._acc), self._yy)
            # row 0 the background's residual (it adapts on it), row 1 the foreground's (used)
            es = np.subtract(mic, self._ys, out=self._es)
            y, e, e_bg = self._ys[1], es[1], es[0]
        return y, e, e_bg

    def queue_update(self, e_bg: F64) -> None:
        """Adapt the background on its residual `e_bg`: applied next frame, its FFT batched with the next
        reference block's."""
        self._pending = True
        np.multiply(e_bg, self.config.mu, out=self._err)  # the step size, folded into the error

    def _update(self, err: C128) -> None:
        """NLMS step with the last frame's error spectrum `err`; called before the new block is pushed."""
        c = self.config
        p = c.partitions
        h = self._h
        np.divide(err, self._power, out=err)  # err already carries mu (see queue_update); _power the regulariser
        g = np.conjugate(self._xbuf[h : h + p], out=self._prod)
        g *= err
        self._w += g
        # Gradient constraint: keep each partition's taps to its own 160 (linear, not circular convolution).
        # Applied to the weights every `constrain_every` frames rather than to every update: the updates in
        # between wrap only a little, and the two FFTs are a third of the frame's cost (numpy per-call cost).
        self._frames += 1
        if self._frames % c.constrain_every == 0:
            # Both filters; while they are the same only the background: the foreground's row is not read
            # then, and is overwritten with the background's when the two part (`judge`).
            rows = 1 if self.same else 2
            taps = irfft(self._ws[:rows], self._taps[:rows])
            taps[:, :, FRAME:] = 0.0
            rfft(taps, 2 * FRAME, self._ws[:rows])
            # No drift from the running sum; and the NLMS regulariser, a thousandth of the mean bin power,
            # refreshed here rather than every frame and kept inside _power (one numpy call less a frame).
            np.add.reduce(self._pbuf[h : h + p], axis=0, out=self._power)
            self._reg = 1e-3 * (float(self._power.sum()) / len(self._power) + 1.0)
            self._power += self._reg

    # -- the taps --------------------------------------------------------------------------------
    def peak_tap(self) -> int:
        """Index of the trusted filter's strongest tap (0 = `lead_ms` before the bulk delay)."""
        trusted = self._w if self.same else self._wf
        taps = np.fft.irfft(trusted, 2 * FRAME, axis=1)[:, :FRAME].reshape(-1)  # the trusted filter's
        return int(np.argmax(np.abs(taps)))

    def shift(self, shift: int) -> None:
        """The bulk delay moved `shift` samples later: move both filters' taps `shift` earlier."""
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
        self.bg_e = self.fg_e = self.in_e = 0.0  # the comparison starts over on the moved filters
        self._bg_better = 0

    # -- which path to trust ---------------------------------------------------------------------
    def echo_dominated(
        self, mic_e: float, e_e: float, mic: F64, y: F64, y_e: float, converged: bool, erle: float
    ) -> bool:
        """May this frame's residual be counted as leftover echo (ERLE measured on it)?

        Only while one of the two filters is cancelling (its residual, smoothed, under `erle_gate` x the input):
        then the input is mostly echo (`converged`: since the last lock; `erle`: as measured so far). A caller
        the double-talk test missed is cancelled by neither, and counting them as residual echo drags ERLE down
        until the caller reads as echo (what issue 12's live traces showed). After a change of the echo path
        the background cancels again within a few hundred ms and the foreground's fall in ERLE is measured.
        And not while the background does worse than the foreground (`fg_keep_ratio`): it is adapting on
        something that is not echo.
        """
        c = self.config
        if not c.two_path or (c.gate_once_converged and not converged):
            return True
        if self.bg_e < c.transfer_ratio * self.fg_e:
            return True  # the background does clearly better: the path moved, the foreground's ERLE fell
        if c.erle_consistent > 0 and e_e > c.erle_consistent * mic_e / max(erle, 1.0):
            # Far more left than the ERLE measured so far. While the estimate still matches what came in
            # (<mic, y> near <y, y>: the echo it models is there) the rest is a caller, not residual echo; an
            # estimate that no longer matches is a path that moved, and its ERLE has fallen (measured: without
            # this, a jitter-buffer jump read as "caller" for 3-4 frames, echo-only calls self-stopped).
            return float(np.dot(mic, y)) < c.match_min * y_e
        return min(self.bg_e, self.fg_e) <= c.erle_gate * self.in_e and self.bg_e <= c.fg_keep_ratio * self.fg_e

    def judge(
        self, mic_e: float, bg_e: float, fg_e: float, ref_e: float, double_talk: bool, erle: float
    ) -> bool:
        """Compare the two filters on this frame; copy one into the other when the evidence says so.

        Returns False when the background was reset to the foreground (it had diverged). Judged only on frames
        where the reference is active: on silent ones both residuals are the caller leg as it came.
        """
        c = self.config
        if ref_e <= FRAME or not c.two_path:
            return True
        a = c.two_path_smooth
        self.bg_e += a * (bg_e - self.bg_e)
        self.fg_e += a * (fg_e - self.fg_e)
        self.in_e += a * (mic_e - self.in_e)
        if c.follow:
            # The background is adopted on every frame it gives no reason to doubt: not on double talk, no worse
            # than the foreground, and leaving no more than `follow_consistent` x what the ERLE measured so far
            # says an echo leaves. A caller the double-talk test missed fails the last (the caller stays in the
            # background's residual) from its first frames, before the adaptation on it has done harm.
            doubt = (
                double_talk
                or self.bg_e > c.follow_ratio * self.fg_e
                or self.bg_e * max(erle, 1.0) > c.follow_consistent * self.in_e
            )
            if not doubt:
                self._adopt = True
                return True
        if self.same:  # the two part: the foreground keeps this frame's weights, the background goes on
            self._wf[...] = self._w
            self.same = False
        # Without `follow`, "clearly better": under the foreground's residual, and cancelling as much as the
        # foreground has been measured to (ERLE, between 3 dB and `transfer_erle`): a background adapted on a
        # caller near the echo's level leaves the caller in its residual and does not get there.
        need = min(max(erle, 2.0), c.transfer_erle)
        if not c.follow and (
            self.bg_e < c.transfer_ratio * self.fg_e
            and self.bg_e * need <= self.in_e
            and not double_talk
        ):
            self._bg_better += 1
            if self._bg_better >= c.transfer_frames:
                self._adopt = True  # next frame, after the pending update (see push_reference)
                self.fg_e = self.bg_e
                self._bg_better = 0
            return True
        self._bg_better = 0
        # Put back only onto a foreground that itself cancels: after a jump of the echo path both are wrong,
        # and the background is the one that will find the new path.
        if self.bg_e > c.diverged_ratio * self.in_e and self.fg_e <= self.in_e < self.bg_e:
            self._adopt = False
            self._w[...] = self._wf
            self.bg_e = self.fg_e
            return False
        return True
