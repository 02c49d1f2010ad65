"""Scenarios by hand: a few lines of TOML instead of a recorded call, so a test needs no production data.

    # tests/replay/scenarios/cut_in_twilio.toml
    provider = "twilio"                 # or "plivo"
    [agent]
    says = "Thanks for calling. Your order shipped this morning and should arrive on Friday."
    replies = ["Sure."]                 # optional: the LLM's replies to the caller's turns, in order
    [caller]
    clip = "read_02_libri6272F"         # a corpus id (manifest.csv), a WAV path next to this file, or "silence"
    at_s = 1.2                          # seconds into the agent's speech the clip starts
    gain_db = 0.0                       # optional
    tail_s = 2.0                        # optional: silence after the clip before the caller hangs up
    noise = { kind = "pink", dbfs = -45 }          # optional line noise: white, pink, hum, or a corpus clip
    echo = { delay_ms = 120, gain_db = -18 }       # optional: the agent's own audio leaking back
    [expect]
    barge_in_within_ms = 600            # a barge-in within this long of the clip's speech onset
    heard_starts_with = "Thanks for calling"     # what the caller heard of the interrupted turn
    no_clear = false                    # true: the agent must never be flushed (noise scenarios)
    no_barge_in = false

The agent's first words are the greeting: a scenario runs with AGENT_GREETING = `agent.says`. The call then
runs in-process on the virtual clock (app/replay/runner.py) with the current settings; the clip is placed
`at_s` after the first agent audio reached the caller's edge. The verdict reads like a replay's diff: one
line per unmet expectation, with what happened instead.
"""

from __future__ import annotations

import asyncio
import tomllib
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.audio import pcm16_to_ulaw, ulaw_to_pcm16
from app.offline import corpus
from app.replay.caller import FRAME_S, SyntheticLeg, media_payload, synthetic_leg, with_payload
from app.replay.edge import EdgeModel
from app.replay.llm import RecordedReplies, ReplayLlm
from app.replay.outcome import Outcome, outcome_of
from app.replay.runner import ReplayResult, play_leg
from app.replay.vloop import run_virtual
from app.settings import Settings

I16 = npt.NDArray[np.int16]
SAMPLE_RATE = 8000


class ScenarioError(Exception):
    """The scenario file cannot be read or says something impossible."""


@dataclass(slots=True)
class Expect:
    barge_in_within_ms: float | None = None
    heard_starts_with: str | None = None
    no_clear: bool = False
    no_barge_in: bool = False


@dataclass(slots=True)
class Scenario:
    path: Path | None
    provider: str
    says: str
    replies: list[str]
    clip: I16
    clip_name: str
    speech_onset_s: float
    at_s: float
    tail_s: float
    noise: I16 | None
    echo_delay_s: float | None
    echo_gain: float
    expect: Expect
    settings: dict[str, Any] = field(default_factory=dict)  # per-scenario setting overrides ([settings])

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else "scenario"


def _db(gain_db: float) -> float:
    return float(10 ** (gain_db / 20.0))


def _load_clip(spec: str, base: Path) -> tuple[I16, float]:
    """A clip by corpus id, manifest path or WAV path ("silence": one silent second); returns (samples, speech
    onset in seconds)."""
    if spec == "silence":
        return np.zeros(SAMPLE_RATE, dtype=np.int16), 0.0
    local = (base / spec) if not Path(spec).is_absolute() else Path(spec)
    if local.suffix == ".wav" and local.exists():
        with wave.open(str(local), "rb") as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (SAMPLE_RATE, 1, 2):
                raise ScenarioError(f"{spec}: want 8 kHz mono 16-bit WAV")
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16), 0.0
    try:
        clips = corpus.read_manifest()
    except OSError as exc:
        raise ScenarioError(f"clip {spec!r}: no such file, and no corpus manifest ({exc})") from None
    for clip in clips:
        if spec in (clip.name, clip.path):
            return corpus.load_clip(clip), clip.speech_onset_s or 0.0
    raise ScenarioError(f"clip {spec!r}: neither a WAV next to the scenario nor a corpus id")


def _noise(spec: dict[str, Any], seconds: float, base: Path) -> I16:
    kind = str(spec.get("kind", "pink"))
    level = float(spec.get("dbfs", -45.0))
    if kind == "white":
        return corpus.white_noise(seconds, level)
    if kind == "pink":
        return corpus.pink_noise(seconds, level)
    if kind == "hum":
        return corpus.mains_hum(seconds, level, float(spec.get("hz", 50.0)))
    clip, _ = _load_clip(kind, base)
    reps = int(np.ceil(seconds * SAMPLE_RATE / max(1, clip.size)))
    looped = np.tile(clip, reps)[: int(seconds * SAMPLE_RATE)]
    return np.clip(looped.astype(np.float64) * _db(float(spec.get("gain_db", 0.0))), -32768, 32767).astype(np.int16)


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{p}: {exc}") from None
    return scenario_from_dict(data, p.parent, p)


def scenario_from_dict(data: dict[str, Any], base: Path, path: Path | None = None) -> Scenario:
    provider = data.get("provider", "twilio")
    if provider not in ("twilio", "plivo"):
        raise ScenarioError(f"provider must be twilio or plivo, not {provider!r}")
    agent = data.get("agent", {})
    caller = data.get("caller", {})
    expect = data.get("expect", {})
    says = agent.get("says")
    if not isinstance(says, str) or not says.strip():
        raise ScenarioError("agent.says: the text the agent speaks is required")
    if "clip" not in caller:
        raise ScenarioError("caller.clip is required")
    clip, onset = _load_clip(str(caller["clip"]), base)
    gain = _db(float(caller.get("gain_db", 0.0)))
    if gain != 1.0:
        clip = np.clip(clip.astype(np.float64) * gain, -32768, 32767).astype(np.int16)
    at_s = float(caller.get("at_s", 1.0))
    tail_s = float(caller.get("tail_s", 2.0))
    total = at_s + clip.size / SAMPLE_RATE + tail_s + 1.0
    noise = _noise(caller["noise"], total, base) if "noise" in caller else None
    echo = caller.get("echo")
    known = {"barge_in_within_ms", "heard_starts_with", "no_clear", "no_barge_in"}
    if unknown := set(expect) - known:
        raise ScenarioError(f"expect: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    return Scenario(
        path=path, provider=provider, says=says, replies=[str(r) for r in agent.get("replies", [])],
        clip=clip, clip_name=str(caller["clip"]), speech_onset_s=float(caller.get("speech_onset_s", onset)),
        at_s=at_s, tail_s=tail_s, noise=noise,
        echo_delay_s=float(echo.get("delay_ms", 100.0)) / 1000.0 if echo else None,
        echo_gain=_db(float(echo.get("gain_db", -20.0))) if echo else 0.0,
        expect=Expect(
            barge_in_within_ms=expect.get("barge_in_within_ms"), heard_starts_with=expect.get("heard_starts_with"),
            no_clear=bool(expect.get("no_clear", False)), no_barge_in=bool(expect.get("no_barge_in", False)),
        ),
        settings=dict(data.get("settings", {})),
    )


@dataclass(slots=True)
class ScenarioResult:
    scenario: Scenario
    replay: ReplayResult
    outcome: Outcome
    clip_at: float | None  # when the clip started, seconds from the stream's open
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    def render(self) -> str:
        o = self.outcome
        lines = [f"scenario {self.scenario.name} ({self.scenario.provider}): "
                 f"{'as expected' if self.passed else 'NOT as expected'}"]
        lines += [f"  - {f}" for f in self.failures]
        happened = [f"barge-in at {b.t:.3f} s" for b in o.bargeins] + [f"clear at {t:.3f} s" for t in o.clears]
        happened += [f"agent turn {h.turn_id} heard {h.heard_text!r}" + (" (interrupted)" if h.interrupted else "")
                     for h in o.heard]
        if self.clip_at is not None:
            happened.insert(0, f"clip {self.scenario.clip_name} at {self.clip_at:.3f} s")
        lines.append("  what happened: " + ("; ".join(happened) or "nothing"))
        return "\n".join(lines)


class _Mixer:
    """Renders each caller frame as it is sent: clip + line noise + the agent's echo, as mu-law."""

    def __init__(self, sc: Scenario, start_at: float) -> None:
        self.sc = sc
        self.start_at = start_at
        self.clip_at: float | None = None

    def __call__(self, t: float, text: str, edge: EdgeModel) -> str:
        if media_payload(text) is None:
            return text
        sc = self.sc
        now = asyncio.get_running_loop().time()  # the edge's clock is the loop's; `t` is the leg's (from open)
        first = edge.playout.first_audio_at
        if self.clip_at is None and first is not None:
            self.clip_at = round(first - (now - t) + sc.at_s, 6)
        frame = np.zeros(int(FRAME_S * SAMPLE_RATE), dtype=np.float64)
        lo = round((t - FRAME_S) * SAMPLE_RATE)  # this frame's first sample on the leg's clock
        if self.clip_at is not None:
            c0 = lo - round(self.clip_at * SAMPLE_RATE)
            _add(frame, sc.clip, c0)
        if sc.noise is not None:
            _add(frame, sc.noise, lo - round(self.start_at * SAMPLE_RATE))
        if sc.echo_delay_s is not None:
            heard = edge.playout.heard(now, now - FRAME_S - sc.echo_delay_s, now - sc.echo_delay_s)
            if heard:
                echo = ulaw_to_pcm16(heard).astype(np.float64) * sc.echo_gain
                frame[frame.size - min(frame.size, echo.size):] += echo[: frame.size]
        pcm = np.clip(np.round(frame), -32768, 32767).astype(np.int16)
        return with_payload(text, pcm16_to_ulaw(pcm))


def _add(frame: npt.NDArray[np.float64], source: I16, offset: int) -> None:
    """Add source[offset : offset + len(frame)] into frame (parts outside the source are silence)."""
    n = frame.size
    a, b = max(0, offset), min(source.size, offset + n)
    if b > a:
        frame[a - offset : b - offset] += source[a:b]


def run_scenario(sc: Scenario, settings: Settings | None = None,
                 on_result: Callable[[ReplayResult], None] | None = None) -> ScenarioResult:
    """Run the scenario in-process on the virtual clock with `settings` (default: from the environment)."""
    base = settings or Settings()
    settings = base.model_copy(update={"agent_greeting": sc.says, **sc.settings})
    ids = SyntheticLeg.new(sc.provider, seed=f"{sc.name}:{sc.provider}")  # type: ignore[arg-type]
    start_at = 0.01
    seconds = sc.at_s + sc.clip.size / SAMPLE_RATE + sc.tail_s
    leg = synthetic_leg(ids, seconds, start_at=start_at)
    mixer = _Mixer(sc, start_at)
    llm = ReplayLlm(RecordedReplies.from_texts(sc.replies), settings.llm_token_timeout_s)
    result = run_virtual(play_leg(leg, settings, llm, render=mixer,
                                  header={"scenario": sc.name}))
    if on_result is not None:
        on_result(result)
    outcome = outcome_of(result.lines)
    return ScenarioResult(sc, result, outcome, mixer.clip_at, judge(sc, outcome, mixer.clip_at))


def judge(sc: Scenario, o: Outcome, clip_at: float | None) -> list[str]:
    e = sc.expect
    failures: list[str] = []
    if clip_at is None:
        failures.append("the agent never spoke, so the clip was never played")
        return failures
    onset = clip_at + sc.speech_onset_s
    if e.barge_in_within_ms is not None:
        after = [b for b in o.bargeins if b.t >= clip_at]
        if not after:
            failures.append(f"no barge-in: expected one within {e.barge_in_within_ms:.0f} ms of the caller's speech "
                            f"at {onset:.3f} s")
        elif (after[0].t - onset) * 1000 > e.barge_in_within_ms:
            failures.append(f"barge-in at {after[0].t:.3f} s is {(after[0].t - onset) * 1000:.0f} ms after the "
                            f"caller's speech at {onset:.3f} s (expected within {e.barge_in_within_ms:.0f} ms)")
    if e.no_barge_in and o.bargeins:
        failures.append(f"barge-in at {o.bargeins[0].t:.3f} s: expected none")
    if e.no_clear and o.clears:
        failures.append(f"clear at {o.clears[0]:.3f} s: expected none (the agent must not stop)")
    if e.heard_starts_with is not None:
        turn_id = o.bargeins[0].turn_id if o.bargeins else None
        heard = o.agent_turn(turn_id) if turn_id is not None else (o.heard[0] if o.heard else None)
        if heard is None:
            failures.append(f"no agent turn ended, so nothing was heard (expected {e.heard_starts_with!r}...)")
        elif not heard.heard_text.startswith(e.heard_starts_with):
            failures.append(f"agent turn {heard.turn_id} heard {heard.heard_text!r}: expected it to start with "
                            f"{e.heard_starts_with!r}")
    return failures
