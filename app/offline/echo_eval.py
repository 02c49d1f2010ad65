"""Offline evaluation of the echo guard: self-stops on echo-only calls, and double-talk detection.

Agent speech is espeak-ng TTS (8 kHz). Its echo comes back through `echo_path.echo_of` at each echo return
loss and delay (20 ms of drift). The existing detector (CallVad + batched Silero, on the fake arrival clock of
`evaluate.run_calls`) then hears

(a) echo-only calls: the raw echo, and the echo guard's cleaned output. Any SpeechStarted is a self-stop;
(b) double talk: a caller clip from the tuning pool (`/work/shared/corpus-pool`, never the report corpus)
    starting `--caller-at` seconds into the agent's speech, over the echo. Detection = an accepted
    SpeechStarted within 1.5 s of the caller's speech onset; latency = that minus the onset. An accepted
    SpeechStarted before the onset counts as a self-stop.

Each SpeechStarted of the guarded runs goes through the call path's candidate check: it is accepted only if
`EchoGuard.echo_share(at - sustained, at) <= --reject-share` (the guard's ECHO_REJECT_SHARE by default).
The "raw" rows have no guard and accept every candidate. The share of every candidate is printed
(`--shares`) so the threshold can be read off the tuning pool: echo-only candidates vs double-talk ones.
`--recheck` models a different policy: a rejected candidate stays pending while the detector reports
speech and is accepted once the share drops on a span loud enough to be speech (RECHECK_MIN_DBFS).
`--echo-seeds N` runs N echo-only calls per ERL and delay (other rooms and drift), for the self-stop count.
The agent's audio reaches the guard in 160 ms chunks `SEND_AHEAD_S` before they play, as the outbox sends it.

The guard is causal and per frame, so running it over a call's audio first and the detector after is the
same as running both frame by frame.

Caller frames reach the guard as they do live (`arrivals`): a few ms late, and now and then bunched after a
20-60 ms stall of the loop. On the exact 20 ms grid (`--steady`, the only mode before) the guard looked far
better offline than live: placed at their arrivals, frames were misaligned against the agent's audio and the
filter cancelled nothing (ERLE -3..0 dB on this path with live-like arrivals, 5-6 dB steady).

`--noise-echo N` runs N pool noise clips over the echo at -6 dB ERL (and noise alone, echo alone, for
contrast) through both of the call path's checks, the echo share and the second look (`impulse.is_speech`),
as the speakerphone preset does: any candidate that passes both is a false clear.

`--live-checks` runs echo-only calls and double talk the way the session checks candidates (speakerphone
preset): guard and detector frame by frame, each candidate through the echo check (`echo_share` over its span,
with a locked delay or the agent's audio evident) and the second look, and a rejected candidate re-arms the
detector. Without it (the rows above), the first candidate the echo raises holds the detector in "speaking"
and the caller's onset often raises none of its own: a harsher model than the session. (A GCC budget per
call there: the calls run in lock step, and 72 of them starting together starved the shared budget.)

With `--live-checks`, `--clear-share X` (repeatable) adds the rows for the session's vouching at ECHO_CLEAR_SHARE=X
(a candidate on an echo line that a trusted guard finds under X echo clears at once, detector.py's
CANDIDATE_VOUCHED; the rows without are X = 0), from the same run; `--noise-checks N` adds N pool noise clips over
the echo at -6 dB from `--noise-at` through the same checks (any clear is a false clear).

`--set FIELD=VALUE` (repeatable) overrides an EchoConfig field for every run: A/B runs in one tree, e.g.
`--set two_path=false` (one filter) against the default two-path guard.

`--live-checks` counts a candidate the second look calls noise as never cleared; the session holds it and clears
once it outlasts `doubt_max_ms`. For per-call latency and its reason, the policy itself run over the same calls,
see `python -m app.offline.echo_trace`.

    python -m app.offline.echo_eval [--limit N] [--caller-at S] [--echo-seeds N] [--shares] [--reject-share X]
                                    [--steady] [--live-checks [--clear-share X ...] [--noise-checks N]]
                                    [--noise-echo N] [--set FIELD=VALUE ...]
    python -m app.offline.echo_eval --bench      # the guard's cost alone: median of 9 runs over 3 calls
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.bargein.echo import ECHO_REJECT_SHARE, EchoConfig, EchoGuard, GccBudget
from app.bargein.silero import SileroBatcher, shared_model
from app.bargein.vad import FRAME, SAMPLE_RATE, CallVad, SpeechStarted, VadConfig, VadEvent
from app.offline.corpus import Clip, dev_overlap, load_clip, read_manifest, white_noise
from app.offline.echo_path import echo_of, with_caller
from app.offline.evaluate import LINE_FLOOR_DBFS, run_calls
from providers.tts.espeak import EspeakTts

I16 = npt.NDArray[np.int16]
POOL = Path("/work/shared/corpus-pool")
ERLS_DB = (-6.0, -12.0, -18.0)
DELAYS_MS = (60.0, 150.0, 250.0)
DRIFT_MS = 20.0
LEAD_IN_S = 0.5
TAIL_S = 0.8
SEND_AHEAD_S = 0.4  # the outbox sends up to this far ahead: played() learns of a chunk this early
CHUNK_S = 0.16
DETECT_WINDOW_S = 1.5

AGENT_TEXT = (
    "Thanks for calling the support line. I can see your order shipped on Monday, "
    "and it should arrive by Thursday afternoon. If you would like, I can also send you the tracking number "
    "by text message. Is there anything else I can help you with today?"
)


def agent_speech() -> I16:
    return asyncio.run(EspeakTts().synthesize(AGENT_TEXT)).pcm


def _timeline(agent: I16, extra_s: float = 0.0) -> I16:
    lead, tail = int(LEAD_IN_S * SAMPLE_RATE), int((TAIL_S + extra_s) * SAMPLE_RATE)
    return np.concatenate([np.zeros(lead, np.int16), agent, np.zeros(tail, np.int16)])


def _with_floor(pcm: I16) -> I16:
    floor = white_noise(len(pcm) / SAMPLE_RATE, LINE_FLOOR_DBFS, seed=1)
    out: I16 = np.clip(pcm.astype(np.int32) + floor[: len(pcm)], -32768, 32767).astype(np.int16)
    return out


@dataclass
class Guarded:
    """A call's audio after the guard, what the candidate check would say at each frame, and the cost."""

    audio: I16
    share: npt.NDArray[np.float64]  # share[k]: echo_share over the candidate span ending with frame k
    cost_us: float  # mean guard cost per active frame
    level_dbfs: npt.NDArray[np.float64]  # level[k]: the cleaned audio's level over that span (for --recheck)
    active_frames: int


def arrivals(frames: int, seed: int | None) -> npt.NDArray[np.float64]:
    """Arrival times of a call's caller frames: on the 20 ms grid (`seed` None), or late as on a loaded server.

    Live, a frame reaches the guard a little after it was sent (the network, the event loop: ~2 ms on
    average), and now and then the loop is busy for 20-60 ms and the frames queued meanwhile arrive together.
    In order, never early. Seeded, so a run is repeatable.
    """
    nominal = (np.arange(frames) + 1) * FRAME / SAMPLE_RATE
    if seed is None:
        return nominal
    rng = np.random.default_rng(seed)
    out = np.empty(frames)
    stall_until, last = 0.0, 0.0
    for k, t in enumerate(nominal):
        if rng.random() < 0.02:
            stall_until = t + rng.uniform(0.02, 0.06)
        last = out[k] = max(last, max(t, stall_until) + rng.exponential(0.002))
    return out


JITTER_SEED: int | None = 7  # --steady: None (frames on the exact 20 ms grid, as every run was before)


CONFIG: EchoConfig | None = None  # --set: the guard's config for every run (None: the defaults)


def guarded(mic: I16, agent: I16, config: EchoConfig | None = None, span_s: float = 0.064) -> Guarded:
    """The guard's output for a call, the agent's audio fed in chunks as the outbox would send them, the caller
    frames arriving as `arrivals(JITTER_SEED)` says."""
    guard = EchoGuard(config or CONFIG)
    lead = int(LEAD_IN_S * SAMPLE_RATE)
    chunk = int(CHUNK_S * SAMPLE_RATE)
    frames = len(mic) // FRAME
    out = np.empty(frames * FRAME, np.int16)
    share = np.zeros(frames)
    next_chunk, spent, active = 0, 0.0, 0
    times = arrivals(frames, JITTER_SEED)
    for k in range(frames):
        t = float(times[k])
        while next_chunk < len(agent) and (lead + next_chunk) / SAMPLE_RATE <= t + SEND_AHEAD_S:
            guard.played(agent[next_chunk : next_chunk + chunk], (lead + next_chunk) / SAMPLE_RATE)
            next_chunk += chunk
        t0 = time.perf_counter()
        cleaned, _ = guard.process(mic[k * FRAME : (k + 1) * FRAME], t)
        spent += time.perf_counter() - t0
        active += guard.active(t)
        out[k * FRAME : (k + 1) * FRAME] = cleaned
        share[k] = guard.echo_share(t - span_s, t)
    span = max(1, round(span_s * SAMPLE_RATE / FRAME))
    power = (out.astype(np.float64) ** 2).reshape(frames, FRAME).mean(axis=1)
    mean = np.convolve(power, np.ones(span) / span)[:frames]
    level = 10 * np.log10(mean + 1e-9) - 20 * np.log10(32768.0)
    return Guarded(out, share, spent / max(active, 1) * 1e6, level, active)


@dataclass(frozen=True)
class Candidate:
    at: float
    share: float  # 0.0 for raw (unguarded) runs
    accepted: bool


RECHECK_MIN_DBFS = -45.0  # --recheck accepts a pending candidate only on a span this loud: not a syllable gap


def candidates(
    events: Sequence[VadEvent], guard: Guarded | None, reject: float, recheck: bool = False
) -> list[Candidate]:
    """Each SpeechStarted through the candidate check (no guard: every one is accepted).

    With `recheck`, a rejected candidate stays pending while the detector still reports speech (until its
    SpeechStopped) and is accepted at the first frame whose span has a share of `reject` or under and is
    at least RECHECK_MIN_DBFS loud: the caller talking over echo that already held the detector in
    "speaking" raises no new SpeechStarted.
    """
    out = []
    stops = [e.at for e in events if not isinstance(e, SpeechStarted)]
    for e in events:
        if not isinstance(e, SpeechStarted):
            continue
        if guard is None:
            out.append(Candidate(e.at, 0.0, True))
            continue
        share = guard.share
        k = min(len(share) - 1, max(0, round(e.at * SAMPLE_RATE / FRAME) - 1))
        s = float(share[k])
        if s <= reject or not recheck:
            out.append(Candidate(e.at, s, s <= reject))
            continue
        until = next((at for at in stops if at > e.at), len(share) * FRAME / SAMPLE_RATE)
        last = min(len(share), round(until * SAMPLE_RATE / FRAME))
        ok = np.nonzero((share[k:last] <= reject) & (guard.level_dbfs[k:last] >= RECHECK_MIN_DBFS))[0]
        if len(ok):
            out.append(Candidate((k + int(ok[0]) + 1) * FRAME / SAMPLE_RATE, float(share[k + int(ok[0])]), True))
        else:
            out.append(Candidate(e.at, s, False))
    return out


def pool_speech(limit: int) -> list[Clip]:
    """Tuning-pool speech clips, without those sharing a recording with the report corpus."""
    overlap = dev_overlap(POOL)
    clips = [c for c in read_manifest(POOL) if c.kind == "speech" and c.path not in overlap]
    clips = [c for c in clips if c.speech_onset_s is not None and 1.0 <= c.duration_s <= 4.0]
    step = max(1, len(clips) // max(limit, 1))  # spread over speakers and styles, deterministically
    return clips[::step][:limit]


def pool_words(limit: int) -> list[Clip]:
    """Tuning-pool isolated words (FSDD digits, under 1 s; the bench's double talk has such clips too), spread
    over speakers deterministically, without those sharing a recording with the report corpus."""
    overlap = dev_overlap(POOL)
    clips = [c for c in read_manifest(POOL) if c.category == "isolated_word" and c.path not in overlap]
    clips = [c for c in clips if c.speech_onset_s is not None]
    step = max(1, len(clips) // max(limit, 1))
    return clips[::step][:limit]


@dataclass
class Row:
    label: str
    calls: int = 0
    self_stops: int = 0  # SpeechStarted while only echo was present
    calls_stopped: int = 0
    detected: int = 0
    latencies_ms: list[float] | None = None

    def format(self) -> str:
        lat = self.latencies_ms or []
        det = f"{self.detected}/{self.calls}" if self.latencies_ms is not None else "-"
        p50 = f"{np.percentile(lat, 50):4.0f}" if lat else "   -"
        p95 = f"{np.percentile(lat, 95):4.0f}" if lat else "   -"
        return (
            f"{self.label:<34} self-stops {self.self_stops:>3} in {self.calls_stopped:>2}/{self.calls:<2} calls | "
            f"detected {det:>6} | latency p50 {p50} p95 {p95} ms"
        )


def _run(audio: Sequence[I16]) -> list[list[VadEvent]]:
    batcher = SileroBatcher(shared_model())
    vads = [CallVad(VadConfig(), batcher) for _ in audio]
    return asyncio.run(run_calls(list(audio), vads))


@dataclass
class Shares:
    """Candidate check inputs seen on the pool: echo-only candidates and the caller's first candidate."""

    echo: list[float]
    caller: list[float]


def echo_only(
    agent: I16, costs: list[float], reject: float, shares: Shares, recheck: bool = False, seeds: int = 1
) -> list[Row]:
    full = _timeline(agent)
    raw, clean, labels = [], [], []
    for i, erl in enumerate(ERLS_DB):
        for j, delay in enumerate(DELAYS_MS * seeds):
            seed = 10 * i + j + 100 * (j // len(DELAYS_MS))  # the first round keeps the original seeds
            mic = _with_floor(echo_of(full, erl_db=erl, delay_ms=delay, drift_ms=DRIFT_MS, seed=seed))
            g = guarded(mic, agent)
            costs.append(g.cost_us)
            raw.append(mic)
            clean.append(g)
            labels.append(erl)
    rows = []
    for name, audio in (("raw", raw), ("guard", [g.audio for g in clean])):
        events = _run(audio)
        for erl in ERLS_DB:
            row = Row(f"echo only, ERL {erl:+.0f} dB, {name}")
            for lab, evs, g in zip(labels, events, clean, strict=True):
                if lab == erl:
                    cands = candidates(evs, g if name == "guard" else None, reject, recheck)
                    if name == "guard":
                        shares.echo += [c.share for c in cands]
                    stops = [c for c in cands if c.accepted]
                    row.calls += 1
                    row.self_stops += len(stops)
                    row.calls_stopped += bool(stops)
            rows.append(row)
    return rows


def double_talk(
    agent: I16,
    clips: Sequence[Clip],
    caller_at_s: float,
    costs: list[float],
    reject: float,
    shares: Shares,
    recheck: bool = False,
) -> list[Row]:
    full = _timeline(agent, extra_s=4.0)
    offset = int((LEAD_IN_S + caller_at_s) * SAMPLE_RATE)
    raw, clean, meta = [], [], []
    for i, erl in enumerate(ERLS_DB):
        for n, clip in enumerate(clips):
            delay = DELAYS_MS[n % len(DELAYS_MS)]
            echo = echo_of(full, erl_db=erl, delay_ms=delay, drift_ms=DRIFT_MS, seed=100 * i + n)
            mic = _with_floor(with_caller(echo, load_clip(clip, POOL), offset))
            g = guarded(mic, agent)
            costs.append(g.cost_us)
            raw.append(mic)
            clean.append(g)
            assert clip.speech_onset_s is not None
            meta.append((erl, offset / SAMPLE_RATE + clip.speech_onset_s))
    rows = []
    for name, audio in (("raw", raw), ("guard", [g.audio for g in clean])):
        events = _run(audio)
        for erl in ERLS_DB:
            row = Row(f"double talk, ERL {erl:+.0f} dB, {name}", latencies_ms=[])
            for (lab, onset), evs, g in zip(meta, events, clean, strict=True):
                if lab != erl:
                    continue
                cands = candidates(evs, g if name == "guard" else None, reject, recheck)
                row.calls += 1
                early = [c for c in cands if c.at < onset]
                late = [c for c in cands if onset <= c.at <= onset + DETECT_WINDOW_S]
                if name == "guard":
                    shares.echo += [c.share for c in early]
                    shares.caller += [c.share for c in late[:1]]
                early = [c for c in early if c.accepted]
                row.self_stops += len(early)
                row.calls_stopped += bool(early)
                hit = next((c for c in late if c.accepted), None)
                if hit is not None:
                    row.detected += 1
                    assert row.latencies_ms is not None
                    row.latencies_ms.append((hit.at - onset) * 1000)
            rows.append(row)
    return rows


@dataclass(frozen=True)
class Checked:
    """A speech candidate through the session's checks (`--live-checks`), at its verdict time `at`."""

    start: float  # the candidate's speech start (SpeechStarted minus its sustained run)
    at: float
    share: float  # echo_share(start, at)
    echo: bool  # the echo check turned it away
    accepted: bool  # passed the echo check and the second look: the session would clear
    raised_at: float = 0.0  # the SpeechStarted's arrival
    # The echo share over (start, raised_at) when the guard was trusted on a line with its echo seen (None: it
    # was not): the candidate is vouched for, and cleared at raised_at, when this is under --clear-share.
    raised_share: float | None = None

    def vouched(self, clear_share: float) -> bool:
        return self.raised_share is not None and self.raised_share < clear_share

    def clears(self, clear_share: float) -> bool:
        """The session sends a clear for it (vouched for at once, or after passing both checks)."""
        return self.accepted or self.vouched(clear_share)

    def clear_at(self, clear_share: float) -> float:
        return self.raised_at if self.vouched(clear_share) else self.at


def guarded_frames(guards: Sequence[EchoGuard], mics: Sequence[I16], agent: I16, sent: list[int],
                   live: Sequence[int], k: int, t: float) -> list[I16]:
    """Frame `k` of each live call (index into `mics`) at time `t`, through its guard while the guard is active.

    Each guard is first told of the agent's audio due by then: 160 ms chunks `SEND_AHEAD_S` before they play,
    from `LEAD_IN_S` on, as the outbox sends them; `sent[i]` counts the samples call `i` has been told of.
    """
    lead, chunk = int(LEAD_IN_S * SAMPLE_RATE), int(CHUNK_S * SAMPLE_RATE)
    cleaned = []
    for i in live:
        guard = guards[i]
        while sent[i] < len(agent) and (lead + sent[i]) / SAMPLE_RATE <= t + SEND_AHEAD_S:
            guard.played(agent[sent[i] : sent[i] + chunk], (lead + sent[i]) / SAMPLE_RATE)
            sent[i] += chunk
        frame = mics[i][k * FRAME : (k + 1) * FRAME]
        cleaned.append(guard.process(frame, t)[0] if guard.active(t) else frame)
    return cleaned


async def _session_checks(mics: Sequence[I16], agent: I16, reject: float) -> list[list[Checked]]:
    """Each call as the session runs it (app/call/session.py, speakerphone preset): every caller frame through
    the guard, then CallVad; once a candidate's second-look window is in, the echo check (`echo_share` over the
    candidate's span above `reject`, with a locked delay or the agent's audio evident on the line) and then the
    second look (`impulse.is_speech`); a candidate turned away re-arms the detector, so the next onset (the
    caller's, over echo that had held the detector in "speaking") raises a candidate of its own.

    Each candidate also keeps what the session's vouching reads when it is raised (`Checked.raised_share`):
    with ECHO_CLEAR_SHARE (`--clear-share`) over it, the clear goes out at once (detector.py's CANDIDATE_VOUCHED
    row); the second look still runs, but on an echo-only call that clear is a self-stop. Vouching changes
    nothing else here (the detector is re-armed after the second look either way), so one run serves every
    threshold."""
    from app.bargein import impulse

    batcher = SileroBatcher(shared_model())
    # A budget each: these calls run in lock step, every one starting its reply at the same instant, and 72 of
    # them sharing the process's budget starved GCC so that most never locked (an offline artefact; see the
    # report of issue 12). guarded() runs one call at a time, so its calls never contend either.
    guards = [EchoGuard(CONFIG, GccBudget()) for _ in mics]
    vads = [CallVad(VadConfig(), batcher) for _ in mics]
    out: list[list[Checked]] = [[] for _ in mics]
    pending: list[float | None] = [None] * len(mics)
    raised: list[tuple[float, float | None]] = [(0.0, None)] * len(mics)
    sent = [0] * len(mics)
    steps = max(len(m) for m in mics) // FRAME
    times = arrivals(steps, JITTER_SEED)
    for k in range(steps):
        t = float(times[k])
        live = [i for i, m in enumerate(mics) if (k + 1) * FRAME <= len(m)]
        cleaned = guarded_frames(guards, mics, agent, sent, live, k, t)
        results = await asyncio.gather(*(vads[i].feed(c, t) for i, c in zip(live, cleaned, strict=True)))
        for i, evs in zip(live, results, strict=True):
            for e in evs:
                if isinstance(e, SpeechStarted) and pending[i] is None:
                    began = pending[i] = e.at - e.sustained_ms / 1000
                    g = guards[i]
                    sure = g.echo_seen and g.active(t) and g.trusted  # as session.py's Candidate
                    raised[i] = (t, g.echo_share(began, t) if sure else None)
            start = pending[i]
            if start is None or vads[i].candidate_samples < impulse.window_samples():
                continue
            guard = guards[i]
            share = guard.echo_share(start, t)
            echo = share > reject and (guard.delay is not None or guard.echo_evident(t))
            speech = False
            if not echo:
                pcm, probs = vads[i].candidate()
                scored = [p for p in probs[: impulse.window_probabilities()] if p == p]
                speech = impulse.is_speech(pcm[: impulse.window_samples()], scored)
            out[i].append(Checked(start, t, share, echo, not echo and speech, *raised[i]))
            pending[i] = None
            vads[i].rearm(t)  # turned away; or accepted, and the next candidate is counted on its own
    return out


def checked_rows(
    agent: I16, clips: Sequence[Clip], caller_at_s: float, reject: float, shares: Shares, seeds: int = 1,
    clear_shares: Sequence[float] = (0.0,), noise: Sequence[Clip] = (), noise_at_s: float = 0.3,
) -> list[Row]:
    """`--live-checks`: echo-only calls and double talk through the session's checks (`_session_checks`).

    Echo only: every clear is a self-stop. Double talk: a clear for a candidate that starts before the caller's
    clip does is a self-stop; detection is a clear for a candidate starting in the clip within DETECT_WINDOW_S
    of the clip's speech onset, and its latency runs from that onset to the clear (the verdict under the
    preset's `confirm` policy; the candidate's arrival when vouched for). (The clips' onset marks can fall a few
    tens of ms after their first sound, and the detector's speech start before the mark: such a candidate is
    the caller.) With `noise` (`--noise-checks N`), pool noise clips over the echo at -6 dB ERL from
    `noise_at_s` into the reply: a call with any clear is a false clear (in the "self-stops" column). Rows
    come once per vouching threshold in `clear_shares` (0: no vouching, the session before it).
    """
    full = _timeline(agent, extra_s=4.0)
    offset = int((LEAD_IN_S + caller_at_s) * SAMPLE_RATE)
    mics: list[I16] = []
    meta: list[tuple[str, float, float | None]] = []
    for i, erl in enumerate(ERLS_DB):
        for j, delay in enumerate(DELAYS_MS * seeds):
            seed = 10 * i + j + 100 * (j // len(DELAYS_MS))  # as echo_only()
            mics.append(_with_floor(echo_of(full, erl_db=erl, delay_ms=delay, drift_ms=DRIFT_MS, seed=seed)))
            meta.append(("echo only", erl, None))
        for n, clip in enumerate(clips):
            delay = DELAYS_MS[n % len(DELAYS_MS)]
            echo = echo_of(full, erl_db=erl, delay_ms=delay, drift_ms=DRIFT_MS, seed=100 * i + n)  # as double_talk()
            mics.append(_with_floor(with_caller(echo, load_clip(clip, POOL), offset)))
            assert clip.speech_onset_s is not None
            meta.append(("double talk", erl, offset / SAMPLE_RATE + clip.speech_onset_s))
    noise_offset = int((LEAD_IN_S + noise_at_s) * SAMPLE_RATE)
    for n, clip in enumerate(noise):
        echo = echo_of(full, erl_db=-6.0, delay_ms=DELAYS_MS[n % len(DELAYS_MS)], drift_ms=DRIFT_MS, seed=300 + n)
        mics.append(_with_floor(with_caller(echo, load_clip(clip, POOL), noise_offset)))  # as noise_echo()
        meta.append(("noise over echo", -6.0, None))
    results = asyncio.run(_session_checks(mics, agent, reject))
    rows = []
    for cs in clear_shares:
        vouch = f", vouch <{cs:g}" if cs > 0 else ""
        for kind in ("echo only", "double talk", "noise over echo"):
            for erl in ERLS_DB:
                row = Row(f"{kind}, ERL {erl:+.0f} dB, checks{vouch}",
                          latencies_ms=[] if kind == "double talk" else None)
                for (k, e, onset), cands in zip(meta, results, strict=True):
                    if k != kind or e != erl:
                        continue
                    row.calls += 1
                    early = [c for c in cands if onset is None or c.start < offset / SAMPLE_RATE]
                    if cs == clear_shares[0]:
                        shares.echo += [c.share for c in early if kind != "noise over echo"]
                    stops = [c for c in early if c.clears(cs)]
                    row.self_stops += len(stops)
                    row.calls_stopped += bool(stops)
                    if onset is None:
                        continue
                    late = [c for c in cands
                            if offset / SAMPLE_RATE <= c.start and c.clear_at(cs) <= onset + DETECT_WINDOW_S]
                    if cs == clear_shares[0]:
                        shares.caller += [c.share for c in late[:1]]
                    hit = next((c for c in late if c.clears(cs)), None)
                    if hit is not None:
                        row.detected += 1
                        assert row.latencies_ms is not None
                        row.latencies_ms.append((hit.clear_at(cs) - onset) * 1000)
                if row.calls:
                    rows.append(row)
    return rows


def pool_noise(limit: int) -> list[Clip]:
    """Tuning-pool noise clips, spread over the categories deterministically."""
    clips = [c for c in read_manifest(POOL) if c.kind == "noise"]
    step = max(1, len(clips) // max(limit, 1))
    return clips[::step][:limit]


@dataclass
class NoiseRow:
    """Noise over echo: how each candidate fared through the echo check and the second look."""

    label: str
    calls: int = 0
    candidates: int = 0
    echo_rejected: int = 0  # the echo share called it echo
    noise_rejected: int = 0  # the second look called it noise
    false_clear_calls: int = 0  # calls with a candidate that passed both

    def format(self) -> str:
        return (
            f"{self.label:<34} candidates {self.candidates:>3} | echo-rejected {self.echo_rejected:>3} | "
            f"noise-rejected {self.noise_rejected:>3} | false clears in {self.false_clear_calls:>2}/{self.calls} calls"
        )


async def _second_looks(audio: Sequence[I16], shares: Sequence[npt.NDArray[np.float64] | None],
                        reject: float) -> list[list[tuple[float, bool]]]:
    """Each call through CallVad frame by frame, each candidate through the session's checks once its second-look
    window is in: (echo share over the candidate, the second look's speech verdict)."""
    from app.bargein import impulse

    batcher = SileroBatcher(shared_model())
    vads = [CallVad(VadConfig(), batcher) for _ in audio]
    out: list[list[tuple[float, bool]]] = [[] for _ in audio]
    pending: list[float | None] = [None] * len(audio)
    steps = max(len(a) for a in audio) // FRAME
    for k in range(steps):
        now = (k + 1) * FRAME / SAMPLE_RATE
        live = [i for i, a in enumerate(audio) if (k + 1) * FRAME <= len(a)]
        results = await asyncio.gather(*(vads[i].feed(audio[i][k * FRAME : (k + 1) * FRAME], now) for i in live))
        for i, evs in zip(live, results, strict=True):
            for e in evs:
                if isinstance(e, SpeechStarted) and pending[i] is None:
                    pending[i] = now - e.sustained_ms / 1000
            if pending[i] is not None and vads[i].candidate_samples >= impulse.window_samples():
                pcm, probs = vads[i].candidate()
                scored = [p for p in probs[: impulse.window_probabilities()] if p == p]
                speech = impulse.is_speech(pcm[: impulse.window_samples()], scored)
                sh = shares[i]
                share = float(sh[k]) if sh is not None else 0.0
                out[i].append((share, speech))
                pending[i] = None
                if not (share <= reject and speech):  # rejected: the session re-arms the detector
                    vads[i].rearm(now)
    return out


def noise_echo(agent: I16, clips: Sequence[Clip], noise_at_s: float, reject: float) -> list[NoiseRow]:
    """Pool noise over the echo at -6 dB ERL (and, for contrast, noise alone and echo alone): any candidate that
    passes both the echo check and the second look is a false clear."""
    full = _timeline(agent, extra_s=1.0)
    offset = int((LEAD_IN_S + noise_at_s) * SAMPLE_RATE)
    cases: dict[str, tuple[list[I16], list[npt.NDArray[np.float64] | None]]] = {}
    for name in ("noise+echo guard", "noise alone guard", "echo alone guard", "noise+echo raw", "noise alone raw"):
        cases[name] = ([], [])
    for n, clip in enumerate(clips):
        delay = DELAYS_MS[n % len(DELAYS_MS)]
        echo = echo_of(full, erl_db=-6.0, delay_ms=delay, drift_ms=DRIFT_MS, seed=300 + n)
        noise = load_clip(clip, POOL)
        silent = np.zeros_like(echo)
        for name, base in (("noise+echo", echo), ("noise alone", silent), ("echo alone", echo)):
            mic = _with_floor(with_caller(base, noise if name != "echo alone" else noise[:0], offset))
            g = guarded(mic, agent, span_s=0.16)
            cases[f"{name} guard"][0].append(g.audio)
            cases[f"{name} guard"][1].append(g.share)
            if name != "echo alone":
                cases[f"{name} raw"][0].append(mic)
                cases[f"{name} raw"][1].append(None)
    rows = []
    for name, (audio, shares) in cases.items():
        looks = asyncio.run(_second_looks(audio, shares, reject))
        row = NoiseRow(name)
        for cands in looks:
            row.calls += 1
            row.candidates += len(cands)
            row.echo_rejected += sum(s > reject for s, _ in cands)
            row.noise_rejected += sum(s <= reject and not sp for s, sp in cands)
            row.false_clear_calls += any(s <= reject and sp for s, sp in cands)
        rows.append(row)
    return rows


def bench(agent: I16, repeats: int = 9) -> tuple[float, float, int]:
    """The guard's cost per active frame on three echo-only calls: (median, min) over `repeats` runs, frames.

    Only `process()` is timed, after a warm-up run (FFT plans, caches); the median of whole repeats
    keeps a busy spell on a shared host from deciding the figure.
    """
    full = _timeline(agent)
    mics = [
        _with_floor(echo_of(full, erl_db=erl, delay_ms=delay, drift_ms=DRIFT_MS, seed=i))
        for i, (erl, delay) in enumerate(zip(ERLS_DB, DELAYS_MS, strict=True))
    ]
    per_frame: list[float] = []
    frames = 0
    for r in range(repeats + 1):
        spent, frames = 0.0, 0
        for mic in mics:
            g = guarded(mic, agent)
            spent += g.cost_us * g.active_frames / 1e6
            frames += g.active_frames
        if r:  # the first run is the warm-up
            per_frame.append(spent / max(frames, 1) * 1e6)
    return float(np.median(per_frame)), float(min(per_frame)), frames


def _config(overrides: Sequence[str]) -> EchoConfig:
    """EchoConfig with `field=value` overrides, each value parsed as the field's default's type."""
    base = EchoConfig()
    changes: dict[str, object] = {}
    for item in overrides:
        name, _, value = item.partition("=")
        if not hasattr(base, name):
            raise SystemExit(f"--set: EchoConfig has no field {name!r}")
        kind = type(getattr(base, name))
        changes[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _print_rows(agent: I16, rows: Sequence[Row], shares: Shares | None) -> None:
    print(f"agent speech {len(agent) / SAMPLE_RATE:.1f} s; delays {DELAYS_MS} ms, drift {DRIFT_MS:g} ms")
    for row in rows:
        print(row.format())
    if shares is not None:
        print("echo-only candidates' shares:", " ".join(f"{v:.2f}" for v in sorted(shares.echo)))
        print("callers' first candidates' shares:", " ".join(f"{v:.2f}" for v in sorted(shares.caller)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.offline.echo_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=6, help="caller clips per ERL for double talk")
    parser.add_argument("--caller-at", type=float, default=3.0, help="caller starts this far into the agent's speech")
    parser.add_argument("--reject-share", type=float, default=ECHO_REJECT_SHARE, help="candidate check threshold")
    parser.add_argument("--shares", action="store_true", help="print every candidate's echo share")
    parser.add_argument("--echo-seeds", type=int, default=1, help="echo-only calls per delay and ERL (room, drift)")
    parser.add_argument("--bench", action="store_true", help="only time the guard (median of 9 runs) and exit")
    parser.add_argument("--recheck", action="store_true", help="re-check a rejected candidate while speech lasts")
    parser.add_argument("--steady", action="store_true", help="caller frames on the exact 20 ms grid, not late")
    parser.add_argument("--noise-echo", type=int, default=0, metavar="N",
                        help="only run N pool noise clips over the echo (-6 dB) through both checks, and exit")
    parser.add_argument("--words", action="store_true",
                        help="--live-checks: the callers say isolated words (FSDD digits), not 1-4 s sentences")
    parser.add_argument("--noise-at", type=float, default=1.0,
                        help="--noise-echo: the noise starts this far into the agent's speech (the bench: 0.3)")
    parser.add_argument("--live-checks", action="store_true",
                        help="echo-only and double-talk calls through the session's checks (re-arm, second look)")
    parser.add_argument("--clear-share", type=float, action="append", default=[], metavar="X",
                        help="--live-checks: also the rows with vouching at ECHO_CLEAR_SHARE=X (repeatable)")
    parser.add_argument("--noise-checks", type=int, default=0, metavar="N",
                        help="--live-checks: also N pool noise clips over the echo (-6 dB) from --noise-at")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override an EchoConfig field for every run (repeatable), e.g. --set mu=0.5")
    args = parser.parse_args(argv)
    global JITTER_SEED, CONFIG
    if args.steady:
        JITTER_SEED = None
    if args.set:
        CONFIG = _config(args.set)
    agent = agent_speech()
    if args.noise_echo:
        for nrow in noise_echo(agent, pool_noise(args.noise_echo), args.noise_at, args.reject_share):
            print(nrow.format())
        return
    if args.bench:
        median, best, frames = bench(agent)
        print(f"echo guard: {median:.1f} us per active 20 ms frame, median of 9 runs (best {best:.1f})", end="")
        print(f"; {frames} active frames a run")
        return
    costs: list[float] = []
    shares = Shares([], [])
    t0 = time.perf_counter()
    if args.live_checks:
        clips = pool_words(args.limit) if args.words else pool_speech(args.limit)
        rows = checked_rows(agent, clips, args.caller_at, args.reject_share, shares, args.echo_seeds,
                            (0.0, *args.clear_share), pool_noise(args.noise_checks) if args.noise_checks else (),
                            args.noise_at)
        _print_rows(agent, rows, shares if args.shares else None)
        print(f"run took {time.perf_counter() - t0:.0f} s")
        return
    rows = echo_only(agent, costs, args.reject_share, shares, args.recheck, args.echo_seeds)
    rows += double_talk(agent, pool_speech(args.limit), args.caller_at, costs, args.reject_share, shares, args.recheck)
    _print_rows(agent, rows, shares if args.shares else None)
    print(
        f"echo guard cost: {np.mean(costs):.1f} us per active 20 ms frame (mean over calls, this host); "
        f"run took {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
