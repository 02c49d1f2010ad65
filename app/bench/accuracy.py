"""Accuracy mode of `bargein bench`: each corpus clip is one call through the provider-edge emulator.

One call, in real time, as the edge would carry it:

1. connect (answer webhook first with `--auth`), then get the agent talking. By default (`agent_turn="llm"`)
   the greeting is empty and the caller says one word (a corpus digit); after the caller's turn ends the agent
   answers with a long reply streamed by the loopback LLM, so the barge-in lands while the LLM stream is still
   open and "LLM closed" measures a real HTTP close. With `agent_turn="greeting"` a long greeting is spoken
   instead (no LLM involved: "LLM closed" is then only the turn's cancellation).
2. once the emulator has PLAYED `played_before_s` of agent audio, send the clip in 20 ms frames on the
   emulator's real-time grid. Speech onset on the send clock = the start of the frame holding
   `speech_onset_s` (its send time minus 20 ms) plus the offset inside it, so a frame the load generator
   sent late delays the onset too and is not charged to the server.
3. speech: hang up `after_clear_s` (1 s: the barge-in settles meanwhile) after the first clear (or
   `speech_tail_s` after the clip if none came);
   noise: send the whole clip, wait `noise_tail_s`, hang up. Any clear during a noise clip is a false stop.
4. read the server's record of the call (GET /calls/{id}) for the barge-in event timings.

With `--conditions` (`app.bench.conditions`) each call is a `BenchItem` instead of a bare clip: it may carry
an echo of the agent's own audio on the caller leg and a network, and after the first clear (or the end of
the clip) the call stays up `observe_s` longer, so whether the agent's turn came back is seen: the time
from the clear to the first agent audio after it (`resume_ms`, from the playout log), and, from the
server's record, a `resumed` flag on the barge-in when the server writes one, and whether a new agent turn
started after the interrupted one (`new_agent_turn`), and whether a caller turn held no words so that the agent
went on with the rest of its cut turn (`went_on_later`, app/call/going_on.py: later than a resume, so a lost
turn still; counted apart).

Onset->clear uses the emulator's receive time of the clear. Onset->audio stopped uses the emulator's
playout log: the end of the last span of agent audio the caller heard; audio that resumed after a clear, or
was still playing at the hang-up, is counted separately.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx
import numpy as np
import numpy.typing as npt
from websockets.exceptions import InvalidHandshake, InvalidURI

from app.bench.common import FRAME_S, CpuMeter, GcWatch, Sampler, ServerProcess, progress
from app.bench.conditions import BACKCHANNEL_RESUME_S, RESUME_WINDOW_S, STOP_STAY_S, BenchItem
from app.edge.emulator import CallRejected, EdgeEmulator, EmulatedCall, Provider
from app.offline.corpus import Clip

I16 = npt.NDArray[np.int16]
SAMPLE_RATE = 8000
LATE_MS = 5.0  # a caller frame this far behind the 20 ms grid counts as sent late

# The first sentence is one word, so the agent starts talking as soon as the caller's turn ends; the rest
# keeps the LLM streaming for several seconds and the agent talking for half a minute, longer than any clip.
REPLY = (
    "Sure. Let me look that up for you right now, it should only take a moment. "
    "Your order left our warehouse yesterday afternoon and it is on the delivery truck this morning. "
    "The driver usually arrives between nine and eleven, and you will get a text message about an hour before. "
    "If nobody is at home, the parcel goes to the pickup point on Main Street, next to the pharmacy. "
    "You can also change the delivery address or the day until eight o'clock tonight, on the website or here "
    "with me. Is there anything else I can help you with today?"
)
GREETING = " ".join(
    [
        "Hello, and thanks for calling. I am the demo voice agent, and I will keep talking for a while.",
        "You can interrupt me at any time: just start talking and I will stop at once.",
        "While you think about it, let me tell you about our opening hours and our delivery options.",
        "We are open from eight in the morning until eight at night, every day of the week.",
    ]
)
ConnectErrors = (CallRejected, OSError, TimeoutError, InvalidHandshake, InvalidURI, httpx.HTTPError)


@dataclass(frozen=True)
class AccuracyOptions:
    agent_turn: Literal["llm", "greeting"] = "llm"
    played_before_s: float = 0.3
    # Under the resume policy a barge-in settles once the speech outlasts a backchannel (600 ms from its
    # start): the caller goes on talking that long after the first clear, so the LLM and TTS timings measured
    # are those of a real stop, not of a hang-up.
    after_clear_s: float = 1.0
    speech_tail_s: float = 0.5
    noise_tail_s: float = 0.5
    noise_max_s: float | None = None  # --quick cuts the noise clips short
    stagger_s: float = 0.1  # the first calls of a phase start this far apart, so their 20 ms grids differ
    token_delay_s: float = 0.04  # the loopback LLM's pace: ~75 tokens in 3 s
    observe_s: float | None = None  # --conditions: stay this long after the first clear / the clip's end


def server_env(options: AccuracyOptions) -> dict[str, str]:
    return {"AGENT_GREETING": "" if options.agent_turn == "llm" else GREETING}


@dataclass
class ClipRun:
    """One clip's call and what came of it."""

    provider: str
    clip: str
    kind: str
    category: str
    error: str | None = None
    clip_s: float = 0.0  # caller audio sent (the clip, or its part before the hang-up)
    onset_to_clear_ms: float | None = None
    onset_to_stopped_ms: float | None = None
    clears: int = 0  # clears received after the clip started
    pre_clears: int = 0  # clears before it (the agent was stopped by nothing we sent: should be 0)
    audio_after_clear: bool = False  # agent audio played again after the first clear
    talking_at_start: bool = False  # agent audio was playing when the clip's first frame went out
    ran_dry: bool = False  # no clear, and the agent's audio ran out before the hang-up
    reply_ms: float | None = None  # priming: caller's last frame sent -> first agent audio played
    edge_clear_ms: float | None = None  # last caller frame sent -> clear received, at the edge
    frames: int = 0
    late_frames: int = 0
    max_late_ms: float = 0.0
    call_s: float = 0.0
    violations: int = 0
    llm_open: bool | None = None  # the LLM stream was still open when the agent was interrupted
    events: list[dict[str, Any]] = field(default_factory=list)
    # --conditions (defaults for the plain run)
    condition: str = "baseline"
    stand_in: str | None = None
    erl_db: float | None = None
    echo_delay_ms: float | None = None
    network: bool = False
    all_clears: int = 0  # every clear from the agent's first audio to the hang-up (pre-clip ones included)
    self_stops: int = 0  # with an echo: clears before the caller's speech onset (all of them without speech)
    resume_ms: float | None = None  # first clear -> first agent audio after it (playout log)
    record_resumed: bool | None = None  # the record on the first clear after the clip began: resumed?
    outcomes: list[str] = field(default_factory=list)  # the record's `outcome` of every barge-in, in order
    new_agent_turn: bool | None = None  # the record shows an agent turn after the interrupted one
    lost_turn: bool | None = None  # noise: some clear not followed by the same turn within RESUME_WINDOW_S
    went_on_later: bool | None = None  # the record: a caller turn without words, then the rest of the cut turn
    caller_said: list[str] = field(default_factory=list)  # noise: the record's caller turns' words (what was lost to)
    turn_ended: bool | None = None  # short/stop words: a clear and no same-turn audio within the window
    resumed_fast: bool | None = None  # short words: agent audio within BACKCHANNEL_RESUME_S of the word's end
    yielded: bool | None = None  # speech: after some clear past the onset the agent's turn did not go on
    stayed_stopped: bool | None = None  # stop words: a stopping clear and none of the turn's audio after it
    talked_on_ms: float | None = None  # stop words: from the phrase's end to the clear that stopped the agent
    heard_text: str | None = None  # first_words: the caller's turns' text after the barge-in, in the record
    first_words: bool | None = None  # first_words: the reference's first word opens what the server heard
    first_words_offline: bool | None = None  # ... and what the recognizer heard on the whole clip, outside a call
    heard_error_ms: float | None = None  # the record's heard position minus what the edge had played (first clear)
    # Speech with no echo and no clear from the labelled onset on: the first clear came after the clip began but
    # before its labelled onset, this long after the clip's first frame went out. The label marks the first
    # *energetic* speech (the corpus README: weak onsets, a /z/ or a breath, can precede it by ~0.1 s), so this
    # is most likely the caller's word heard early; it is still not counted as detected, only shown apart.
    early_clear_ms: float | None = None

    @property
    def detected(self) -> bool:
        return self.error is None and self.clears > 0


def heard_after_bargein(record: dict[str, Any] | None) -> str:
    """The caller's turns after the first interrupted agent turn, joined (a pause may split what they said)."""
    bargeins = (record or {}).get("bargeins") or []
    after = int(bargeins[0].get("turn_id") or 0) if bargeins else 0
    return " ".join(str(t.get("text") or "") for t in (record or {}).get("turns", [])
                    if t.get("role") == "user" and int(t.get("id", 0)) > after).strip()


def first_word_in(reference: str, heard: str) -> bool:
    """Whether the reference's first word is among the first two heard. The first word is the one said
    before the detector fired, which only the pre-roll keeps; one word of slack allows a filler the
    recognizer puts in front ("oh", "so")."""
    from app.bench.stt import normalise  # the WER normaliser: numbers, case and punctuation alike

    ref = normalise(reference)
    return bool(ref) and ref[0] in normalise(heard)[:2]


@dataclass
class Phase:
    """One provider at one concurrency."""

    provider: str
    concurrency: int
    runs: list[ClipRun]
    meter: dict[str, float]
    server_cpu_s: float
    rss_start: int
    rss_max: int
    active_max: int
    gc_max_ms: float = 0.0
    frame_lag_ms: dict[str, float] = field(default_factory=dict)
    condition: str = "baseline"

    @property
    def call_seconds(self) -> float:
        return sum(r.call_s for r in self.runs)


def lateness_ms(times: Sequence[float]) -> npt.NDArray[np.float64]:
    """How far each frame went out behind the 20 ms grid of its batch (the earliest frame defines the grid)."""
    if not times:
        return np.zeros(0)
    t: npt.NDArray[np.float64] = np.asarray(times, dtype=np.float64) - FRAME_S * np.arange(len(times))
    late: npt.NDArray[np.float64] = (t - t.min()) * 1000.0
    return late


PRIME_REPLY_S = 15.0  # how long the agent's reply to the priming word may take to start


class AccuracyRunner:
    """Runs clips as calls against one server, one provider and concurrency at a time."""

    def __init__(
        self,
        server: ServerProcess,
        edge: EdgeEmulator,
        audio: dict[str, I16],
        prime: I16 | None,
        options: AccuracyOptions,
    ) -> None:
        self.server = server
        self.edge = edge
        self.audio = audio
        self.prime = prime
        self.options = options

    async def phase(self, provider: Provider, concurrency: int, clips: Sequence[Clip]) -> Phase:
        return await self.phase_items(provider, concurrency, [self.item(c) for c in clips])

    def item(self, clip: Clip) -> BenchItem:
        """A plain corpus clip as a call: no echo, no network."""
        return BenchItem("baseline", clip.path, clip.kind, clip.category, self.audio[clip.path],
                         clip.speech_onset_s, None)

    async def phase_items(
        self, provider: Provider, concurrency: int, clips: Sequence[BenchItem], condition: str = "baseline"
    ) -> Phase:
        queue = deque(clips)
        runs: list[ClipRun] = []
        sampler = Sampler(self.server, interval_s=1.0)
        await self.server.reset_stats()  # frame-lag statistics per phase
        before = await self.server.stats()
        sampler.observe(before)
        sampler.start()
        meter = CpuMeter()
        done = 0

        async def worker(w: int) -> None:
            nonlocal done
            await asyncio.sleep(w * self.options.stagger_s)
            while queue:
                clip = queue.popleft()
                runs.append(await self.run_item(provider, clip))
                done += 1
                if done % 25 == 0:
                    progress(f"    {done}/{len(clips)} calls")

        with GcWatch() as gc_watch:
            await asyncio.gather(*(worker(w) for w in range(max(1, min(concurrency, len(clips))))))
        measured = meter.read()
        await sampler.stop()
        after = await self.server.stats()
        order = {c.name: i for i, c in enumerate(clips)}
        runs.sort(key=lambda r: order.get(r.clip, 0))
        return Phase(
            provider=provider,
            concurrency=concurrency,
            runs=runs,
            meter=measured,
            server_cpu_s=float(after["cpu_s"]) - float(before["cpu_s"]),
            rss_start=int(before["rss_bytes"]),
            rss_max=sampler.rss_max,
            active_max=sampler.active_max,
            gc_max_ms=gc_watch.max_ms,
            frame_lag_ms={k: float(v) for k, v in after["frame_lag_ms"].items()},
            condition=condition,
        )

    async def run_clip(self, provider: Provider, clip: Clip) -> ClipRun:
        return await self.run_item(provider, self.item(clip))

    async def run_item(self, provider: Provider, clip: BenchItem) -> ClipRun:
        run = ClipRun(provider, clip.name, clip.kind, clip.category, condition=clip.condition,
                      stand_in=clip.stand_in, network=clip.network is not None)
        if clip.echo is not None:
            run.erl_db, run.echo_delay_ms = clip.echo.erl_db, clip.echo.delay_ms
        overrides: dict[str, Any] = {}
        if clip.echo is not None:
            overrides["echo"] = clip.echo
        if clip.network is not None:
            overrides["network"] = clip.network
        call = self.edge.call(provider, **overrides)
        try:
            await self._run(call, clip, run)
        except Exception as exc:  # one broken call is a result, not the end of the benchmark
            run.error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            with contextlib.suppress(Exception):
                await call.close()
            with contextlib.suppress(ValueError):
                self.edge.calls.remove(call)
        return run

    async def _run(self, call: EmulatedCall, clip: BenchItem, run: ClipRun) -> None:
        opts = self.options
        try:
            await asyncio.wait_for(call.connect(), 15)
        except ConnectErrors as exc:
            run.error = f"connect: {type(exc).__name__}: {exc}"[:200]
            return
        assert call.connected_at is not None
        if not await self._agent_talking(call, run):
            run.error = "the server ended the call" if call.closed else "the agent never started talking"
            return
        pcm = clip.pcm
        if clip.kind == "noise" and opts.noise_max_s is not None and clip.category != "line_step":
            pcm = pcm[: int(opts.noise_max_s * SAMPLE_RATE)]
        run.pre_clears = len(call.clears)
        sender = asyncio.create_task(call.send_audio(pcm))
        try:
            if clip.kind == "speech":
                limit = len(pcm) / SAMPLE_RATE + 10.0
                await call.wait_until(lambda: len(call.clears) > run.pre_clears or sender.done(), limit)
                cleared = len(call.clears) > run.pre_clears
                if opts.observe_s is not None:
                    # The whole clip, then the window: under a resume policy the agent may go on after the
                    # first clear and yield only later, while the caller is still talking.
                    await asyncio.wait_for(asyncio.shield(sender), len(pcm) / SAMPLE_RATE + 10.0)
                    await asyncio.sleep(opts.observe_s)
                else:
                    await asyncio.sleep(opts.after_clear_s if cleared else opts.speech_tail_s)
            else:
                await asyncio.wait_for(asyncio.shield(sender), len(pcm) / SAMPLE_RATE + 10.0)
                await asyncio.sleep(opts.noise_tail_s if opts.observe_s is None else opts.observe_s)
            if call.closed:
                run.error = "the server ended the call"
            hangup_at = time.monotonic()
            await call.hangup()
            times = await sender
        finally:
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
        run.call_s = hangup_at - call.connected_at
        run.violations = len(call.violations)
        self._measure(call, clip, run, times)
        record = await self.server.call_record(call.call_id)
        for _ in range(40):  # the server settles what the hang-up left open when it reads the stop
            if record is None or len(record.get("bargeins") or []) >= len(call.clears):
                break
            await asyncio.sleep(0.05)
            record = await self.server.call_record(call.call_id)
        if record is not None:
            run.events = list(record.get("bargeins", []))
            cut = [t for t in record.get("turns", []) if t.get("role") == "agent" and t.get("interrupted")]
            if cut and self.options.agent_turn == "llm":
                run.llm_open = len((cut[0].get("intended_text") or "").strip()) < len(REPLY.strip())
        if clip.condition != "baseline":
            self._outcome(call, clip, run, times, record)
            run.heard_error_ms = heard_error_ms(call, record)
        if clip.reference is not None and run.detected:
            # The caller's words go on record once heard, which may be after the hang-up (the server hears a
            # turn still open then): wait for them a little.
            for _ in range(60):
                if record is None or heard_after_bargein(record):
                    break
                await asyncio.sleep(0.1)
                record = await self.server.call_record(call.call_id)
            run.heard_text = heard_after_bargein(record)
            run.first_words = first_word_in(clip.reference, run.heard_text)
            run.first_words_offline = first_word_in(clip.reference, clip.offline_text or "")

    async def _agent_talking(self, call: EmulatedCall, run: ClipRun) -> bool:
        """Get the agent talking, and wait until the caller has heard `played_before_s` of it."""
        need = int(self.options.played_before_s * SAMPLE_RATE)
        if self.prime is None:
            with contextlib.suppress(TimeoutError):
                await call.wait_until(lambda: call.played_samples >= need or call.closed, 15.0)
            return call.played_samples >= need
        for _ in range(2):  # a second word if the first did not end a turn (it should)
            if call.closed:
                return False
            # The reply's own audio: whatever played before the word (a greeting) does not count.
            need = call.played_samples + int(self.options.played_before_s * SAMPLE_RATE)
            sent = await call.send_audio(self.prime)
            # The reply waits for the prime's words: with 20 calls priming at once, up to 20 transcriptions queue
            # on the recognizer (about 0.5 s each), so the reply may take ~10 s to start; a second word sent
            # meanwhile would open another caller turn and move the reply again.
            with contextlib.suppress(TimeoutError):
                await call.wait_until(lambda n=need: call.played_samples >= n or call.closed,  # type: ignore[misc]
                                      PRIME_REPLY_S)
            if call.played_samples >= need:
                if sent and call.first_audio_at is not None:
                    run.reply_ms = (call.first_audio_at - sent[-1]) * 1000.0
                return True
        return False

    def _outcome(
        self, call: EmulatedCall, clip: BenchItem, run: ClipRun, times: list[float], record: dict[str, Any] | None
    ) -> None:
        """What became of the agent's turn after each clear: self-stops, resumption, lost turns, backchannels.

        A clear "went on" when agent audio came back within RESUME_WINDOW_S (the playout log) and, when the
        server's record says what became of that barge-in (`outcome` "resumed"/"stopped", or a `resumed`
        flag), the record says resumed; without either field, a new agent turn after the interrupted one
        means the audio that came back was a new turn, not this one going on.
        """
        spans = call.played_spans
        start = call.first_audio_at
        clears = [t for t in call.clears if start is None or t >= start]
        run.all_clears = len(clears)
        if not times:
            return
        clip_start = times[0] - FRAME_S
        onset = _on_send_clock(times, clip.speech_onset_s, clip_start)
        if clip.echo is not None:
            run.self_stops = sum(1 for t in clears if onset is None or t < onset)
        if onset is not None and clip.kind == "speech":
            # A clear before the onset (an echo self-stop) is no detection: count and time from the onset on.
            heard = [t for t in clears if t >= onset]
            run.clears = len(heard)
            run.onset_to_clear_ms = (heard[0] - onset) * 1000.0 if heard else None
            early = [t for t in clears if clip_start <= t < onset]
            if not heard and early and clip.echo is None:
                run.early_clear_ms = (early[0] - clip_start) * 1000.0
        bargeins: list[dict[str, Any]] = list(record.get("bargeins") or []) if record is not None else []
        verdicts = [_record_resumed(b) for b in bargeins] if len(bargeins) == len(clears) else [None] * len(clears)
        run.outcomes = [str(b.get("outcome")) for b in bargeins if "outcome" in b]
        if record is not None and bargeins and isinstance(bargeins[0].get("turn_id"), int):
            first_turn = int(bargeins[0]["turn_id"])
            run.new_agent_turn = any(
                t.get("role") == "agent" and int(t.get("id", 0)) > first_turn for t in record.get("turns", [])
            )
        if record is not None:
            users = [t for t in record.get("turns", []) if t.get("role") == "user"]
            run.went_on_later = any(t.get("went_on") for t in users)
            if clip.kind == "noise":
                run.caller_said = [str(t.get("text") or "")[:60] for t in users]
        hangup = call.closed_at if call.closed_at is not None else float("inf")

        def went_on(i: int) -> bool:
            t = clears[i]
            back = [s.start for s in spans if s.start > t]
            in_window = bool(back) and back[0] - t <= RESUME_WINDOW_S
            verdict = verdicts[i]
            if verdict is not None:  # the record knows; audio must still come back in time (or the call ended)
                return verdict and (in_window or hangup < t + RESUME_WINDOW_S)
            return in_window and not (run.new_agent_turn and i == len(clears) - 1)

        if clip.kind == "noise":
            run.lost_turn = not all(went_on(i) for i in range(len(clears)))
        elif onset is not None:
            run.yielded = any(not went_on(i) for i, t in enumerate(clears) if t >= onset)
        # The clear that matters for speech: the first after the caller's audio began.
        first_i = next((i for i, t in enumerate(clears) if t >= clip_start), None)
        words = clip.category in ("isolated_word", "stop_word")
        if first_i is None:
            if words:
                run.turn_ended, run.stayed_stopped, run.resumed_fast = False, False, False
            return
        first = clears[first_i]
        run.record_resumed = verdicts[first_i]
        back = [s.start for s in spans if s.start > first]
        run.resume_ms = (back[0] - first) * 1000.0 if back else None
        if words:
            run.turn_ended = not went_on(first_i)
            end = _on_send_clock(times, clip.speech_end_s, clip_start)
            run.resumed_fast = bool(back) and end is not None and back[0] - end <= BACKCHANNEL_RESUME_S
            # The clear that stopped the agent for good (the record says stopped): the first one, or a later one
            # once the recognizer's words came in after a resume.
            stops = [i for i in range(first_i, len(clears)) if verdicts[i] is False]
            last = stops[-1] if stops else None
            run.stayed_stopped = last is not None and not any(
                clears[last] < s.start <= clears[last] + STOP_STAY_S for s in spans)
            if last is not None and end is not None:
                run.talked_on_ms = (clears[last] - end) * 1000.0

    def _measure(self, call: EmulatedCall, clip: BenchItem, run: ClipRun, times: list[float]) -> None:
        if not times:
            run.error = "no caller frame went out"
            return
        run.frames = len(times)
        run.clip_s = len(times) * FRAME_S
        late = lateness_ms(times)
        run.late_frames = int((late > LATE_MS).sum())
        run.max_late_ms = float(late.max())
        clip_start = times[0] - FRAME_S
        spans = call.played_spans
        run.talking_at_start = any(s.start <= clip_start < s.end for s in spans)
        clears = [t for t in call.clears[run.pre_clears :] if t >= clip_start]
        run.clears = len(clears)
        last = spans[-1] if spans else None
        if not clears:
            run.ran_dry = last is None or last.ended_by != "hangup"
            return
        first = clears[0]
        j = bisect_right(times, first) - 1
        if j >= 0:
            run.edge_clear_ms = (first - times[j]) * 1000.0
        run.audio_after_clear = any(s.start > first for s in spans) or (last is not None and last.ended_by == "hangup")
        if clip.kind != "speech" or clip.speech_onset_s is None:
            return
        k = int(clip.speech_onset_s / FRAME_S)
        if k < len(times):
            onset = times[k] - FRAME_S + (clip.speech_onset_s - k * FRAME_S)
        else:
            onset = clip_start + clip.speech_onset_s
        run.onset_to_clear_ms = (first - onset) * 1000.0
        if last is not None and last.ended_by != "hangup":
            run.onset_to_stopped_ms = (last.end - onset) * 1000.0


def heard_error_ms(call: EmulatedCall, record: dict[str, Any] | None) -> float | None:
    """How far the server's cut missed what the caller heard, in ms of audio (+ = it thinks more was heard).

    What the caller heard is what the edge had played when the call's first clear reached it. Only the first
    clear is scored, and only when it cut the call's first agent audio (neither mode speaks before the turn the
    caller interrupts): then the turn starts at byte 0 of the agent stream and the edge's byte position is the
    turn's position. Later clears follow a resume, whose audio re-sends part of the turn.
    """
    bargeins = list(record.get("bargeins") or []) if record is not None else []
    # Agent turns that spoke: the record may open with an agent turn that synthesised nothing (no greeting).
    agent = [t for t in (record or {}).get("turns", []) if t.get("role") == "agent" and (t.get("audio_ms") or 0) > 0]
    if not call.clears or not bargeins or not agent or call.first_audio_at is None:
        return None
    first, heard = bargeins[0], bargeins[0].get("heard_audio_ms")
    if first.get("turn_id") != min(int(t.get("id", 0)) for t in agent) or not isinstance(heard, (int, float)):
        return None
    position = call.position_at(call.clears[0] - 1e-4)  # the byte playing just before the clear landed
    if position is None:
        return None  # the edge had run dry: nothing was playing, no position to compare with
    return float(heard) - (position + 1) / SAMPLE_RATE * 1000.0


def _record_resumed(bargein: dict[str, Any]) -> bool | None:
    """The server record's word on one barge-in: a `resumed` flag, else `outcome` ("resumed"/"stopped")."""
    flag = bargein.get("resumed")
    if isinstance(flag, bool):
        return flag
    outcome = bargein.get("outcome")
    return outcome == "resumed" if isinstance(outcome, str) else None


def _on_send_clock(times: Sequence[float], at_s: float | None, clip_start: float) -> float | None:
    """A time inside the clip (seconds from its start) on the send clock, as `_measure` places the onset."""
    if at_s is None:
        return None
    k = int(at_s / FRAME_S)
    if k < len(times):
        return times[k] - FRAME_S + (at_s - k * FRAME_S)
    return clip_start + at_s


def run_to_json(run: ClipRun) -> dict[str, Any]:
    return asdict(run)
