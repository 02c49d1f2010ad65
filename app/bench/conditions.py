"""The conditions of `bargein bench --conditions`: what each call's caller sends, over which echo and network.

Theory of operation
-------------------
A condition is a small frozen description (`Condition`): what the caller sends once the agent is talking
(corpus speech or noise, silence, a short word, a synthetic stop word, line hiss that steps up), the echo
of the agent's own voice on the caller leg (`EchoSpec`s: ERL, delay 60-250 ms, drift up to 20 ms), a level
change, the network, and which metrics mean something for it. `items()` turns a condition and the corpus
into `BenchItem`s, one call each: pure, seeded, no I/O (the audio is passed in).

What a clear means depends on the condition:

- echo only, noise over echo, line hiss without speech: any clear is a FALSE clear (echo only: a SELF-STOP);
  a false clear after which no agent audio of the same turn came back within ~1 s is also a LOST TURN;
- speech (double talk, quiet talker, after the hiss step, over the network): a clear is a detection, and
  onset->clear is measured; "yielded" = after some clear past the onset the agent's turn did not go on (the
  caller got the floor; under a resume policy a first clear may resume); a clear before the speech onset in
  an echo condition is a self-stop;
- short words (backchannel stand-ins) and stop words: did the agent's turn END (no agent audio within ~1 s
  of the clear, or a new agent turn in the server's record) or did it keep talking / resume within 400 ms of
  the utterance's end; for stop words, did it stop and stay stopped.

Stand-ins are labelled: there is no licensed backchannel recording here, so the short words are the report
set's isolated digits (FSDD), and the stop words are espeak-ng in a voice unlike the agent's ("synthetic").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from app.edge.echo import EchoSpec
from app.edge.network import Network
from app.offline.corpus import Clip, telephone_band, white_noise

I16 = npt.NDArray[np.int16]
SAMPLE_RATE = 8000
Caller = Literal["speech", "noise", "silence", "short_word", "stop_word", "line_step", "line_step_speech", "labelled"]
Metric = Literal["detection", "yielded", "onset_to_clear", "false_clears", "lost_turns", "self_stops", "turn_ended",
                 "stayed_stopped", "first_words", "heard_cut"]

STOP_PHRASES = ("stop", "wait", "no", "hold on", "wait a second")
ECHO_DELAY_MS = (60.0, 250.0)
ECHO_DRIFT_MS = 20.0
ECHO_ONLY_S = 6.0  # the caller stays silent this long while the agent talks over the echo
RESUME_WINDOW_S = 1.0  # agent audio of the same turn within this long after a clear = the turn went on
BACKCHANNEL_RESUME_S = 0.4  # a backchannel "kept talking" if the agent resumed this soon after it ended
# Stop words: the call stays this long after the phrase (the recognizer's words come 0.5-1.5 s after it), and the
# agent "stayed stopped" when none of the interrupted turn's audio came back within STOP_STAY_S of the stopping
# clear (the answer to "stop" is a new turn, STT_WAIT_AFTER_STOP_S = 2 s later at the earliest).
STOP_OBSERVE_S = 3.0
STOP_STAY_S = 1.5
HISS_BEFORE_S, HISS_AFTER_S = 2.0, 4.0
HISS_LOW_DBFS, HISS_HIGH_DBFS = -60.0, -35.0
SPEECH_AFTER_STEP_S = 1.0
QUIET_DBFS = -40.0


@dataclass(frozen=True)
class Condition:
    """One benchmark condition. `erls_db` empty: no echo; otherwise the calls cycle through them."""

    name: str
    summary: str
    caller: Caller
    metrics: tuple[Metric, ...]
    erls_db: tuple[float, ...] = ()
    level_dbfs: float | None = None  # the caller's speech scaled to this active level
    network: bool = False  # Network.cloud_to_carrier(): 40 +/- 15 ms each way
    stand_in: str | None = None  # what stands in for audio we do not have, said in the report
    calls: int = 0  # calls without --limit (0: every clip of the kind)


SPEECH_METRICS: tuple[Metric, ...] = ("detection", "yielded", "onset_to_clear")
CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        Condition("speech", "corpus speech over the agent, no echo (the plain barge-in)", "speech",
                  (*SPEECH_METRICS, "heard_cut")),
        Condition("noise", "corpus noise over the agent, no echo (any clear = false clear)", "noise",
                  ("false_clears", "lost_turns")),
        Condition("echo_only", "the agent's own audio back on the caller leg, caller silent (any clear = self-stop)",
                  "silence", ("self_stops", "false_clears", "lost_turns"), erls_db=(-6.0, -12.0, -18.0), calls=30),
        Condition("double_talk", "corpus speech over the echo at -6 dB ERL (quiet talkers included)",
                  "speech", (*SPEECH_METRICS, "self_stops"), erls_db=(-6.0,)),
        Condition("noise_echo", "corpus noise over the echo at -6 dB ERL (any clear = false clear)",
                  "noise", ("false_clears", "lost_turns", "self_stops"), erls_db=(-6.0,)),
        Condition("quiet_speech", f"corpus speech scaled to {QUIET_DBFS:g} dBFS active level (quiet talker)",
                  "speech", SPEECH_METRICS, level_dbfs=QUIET_DBFS),
        Condition("short_words", "short words as backchannel stand-ins (did the agent's turn end?)",
                  "short_word", ("detection", "turn_ended"),
                  stand_in="the report set's isolated digits (FSDD speech/isolated_word_*), not real backchannels"),
        Condition("stop_words", "'stop', 'wait', 'no', 'hold on', 'wait a second' (did it stop and stay stopped?)",
                  "stop_word", ("detection", "onset_to_clear", "stayed_stopped"), calls=len(STOP_PHRASES),
                  stand_in="SYNTHETIC: espeak-ng en-gb voice, pitch lowered, unlike the agent's en-us voice"),
        Condition("first_words", "speech with a known transcript over the agent (its first word in the turn text?)",
                  "labelled", ("detection", "onset_to_clear", "first_words"),
                  stand_in="the report set's JFK clips (real speech, transcripts known), the held-out phrases "
                           "that stop the agent (SYNTHETIC: espeak-ng en-gb, unlike the agent's voice), and the "
                           "read sentences referenced by the recognizer's own text on the whole clip "
                           "(self-referenced: the call path alone)"),
        Condition("line_step", f"line hiss {HISS_LOW_DBFS:g} -> {HISS_HIGH_DBFS:g} dBFS mid-call, no speech",
                  "line_step", ("false_clears", "lost_turns"), calls=10),
        Condition("line_step_speech", f"the same hiss step, corpus speech {SPEECH_AFTER_STEP_S:g} s after it",
                  "line_step_speech", SPEECH_METRICS, calls=10),
        Condition("network", "corpus speech and noise over cloud_to_carrier (40 +/- 15 ms each way)",
                  "speech", (*SPEECH_METRICS, "false_clears", "lost_turns", "heard_cut"), network=True),
    )
}


@dataclass(frozen=True)
class BenchItem:
    """One call of a condition: what the caller sends after priming, and the path it takes."""

    condition: str
    name: str  # the clip's path, or a synthetic name
    kind: Literal["speech", "noise"]
    category: str
    pcm: I16
    speech_onset_s: float | None
    speech_end_s: float | None
    echo: EchoSpec | None = None
    network: Network | None = None
    stand_in: str | None = None
    reference: str | None = None  # what the caller says, where known (first_words)
    offline_text: str | None = None  # the recognizer on the whole clip, outside any call (first_words' ceiling)


def parse(names: str) -> list[Condition]:
    """`--conditions a,b` or `all` -> conditions, in registry order for `all`; KeyError names the unknown."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if wanted == ["all"]:
        return list(CONDITIONS.values())
    unknown = [n for n in wanted if n not in CONDITIONS]
    if unknown or not wanted:
        raise KeyError(", ".join(unknown) or "none given")
    return [CONDITIONS[n] for n in wanted]


def active_rms(pcm: I16) -> float:
    """The active level: the RMS of the louder half of the 20 ms frames (pauses do not count)."""
    x = pcm[: len(pcm) // 160 * 160].astype(np.float64).reshape(-1, 160)
    if not len(x):
        return 0.0
    energy = (x**2).mean(axis=1)
    return float(np.sqrt(energy[energy >= np.median(energy)].mean()))


def scale_to(pcm: I16, level_dbfs: float) -> I16:
    """The clip with its active level at `level_dbfs`."""
    rms = active_rms(pcm) or 1.0
    y = pcm.astype(np.float64) * (32768.0 * 10 ** (level_dbfs / 20) / rms)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def speech_end_s(pcm: I16, onset_s: float | None) -> float:
    """The end of the last 20 ms frame within 35 dB of the clip's loudest (after the onset)."""
    x = pcm[: len(pcm) // 160 * 160].astype(np.float64).reshape(-1, 160)
    if not len(x):
        return 0.0
    db = 10 * np.log10((x**2).mean(axis=1) + 1.0)
    loud = np.nonzero(db >= db.max() - 35.0)[0]
    end = (int(loud[-1]) + 1) * 0.02
    return max(end, onset_s or 0.0)


def echo_spec(index: int, erls_db: tuple[float, ...], seed: int) -> EchoSpec:
    """Call `index`'s echo: ERLs in turn; delay drawn in 60-250 ms from a seeded generator."""
    rng = np.random.default_rng(seed * 7919 + index)
    delay = float(rng.uniform(*ECHO_DELAY_MS))
    return EchoSpec(erl_db=erls_db[index % len(erls_db)], delay_ms=round(delay, 1), drift_ms=ECHO_DRIFT_MS,
                    seed=seed * 1000 + index)


def hiss(before_s: float, after_s: float, seed: int) -> I16:
    """Band-limited hiss at HISS_LOW_DBFS for `before_s`, then HISS_HIGH_DBFS for `after_s`."""
    low = telephone_band(white_noise(before_s + 0.5, HISS_LOW_DBFS, seed))[: int(before_s * SAMPLE_RATE)]
    high = telephone_band(white_noise(after_s + 0.5, HISS_HIGH_DBFS, seed + 1))[: int(after_s * SAMPLE_RATE)]
    return np.concatenate((low, high))


def items(
    condition: Condition,
    speech: list[Clip],
    noise: list[Clip],
    audio: dict[str, I16],
    stop_words: dict[str, I16],
    limit: int,
    seed: int = 1,
    labelled: list[tuple[str, str, I16, str]] | None = None,
) -> list[BenchItem]:
    """The calls of one condition. `speech`/`noise` are the clips to use (already sampled to `limit` by the
    caller), `audio` their samples, `stop_words` the synthetic phrases (name -> samples), `labelled` speech
    whose transcript is known (name, reference, samples, the recognizer's text on the whole clip)."""
    c = condition
    out: list[BenchItem] = []

    def add(name: str, kind: Literal["speech", "noise"], category: str, pcm: I16, onset: float | None,
            end: float | None, reference: str | None = None, offline: str | None = None) -> None:
        i = len(out)
        echo = echo_spec(i, c.erls_db, seed) if c.erls_db else None
        network = Network.cloud_to_carrier(seed=seed * 1000 + i) if c.network else None
        out.append(BenchItem(c.name, name, kind, category, pcm, onset, end, echo, network, c.stand_in, reference,
                             offline))

    def speech_item(clip: Clip, pcm: I16, pad_s: float = 0.0) -> None:
        if c.level_dbfs is not None:
            pcm = scale_to(pcm, c.level_dbfs)
        onset = clip.speech_onset_s or 0.0
        add(clip.path, "speech", clip.category, pcm, onset + pad_s, speech_end_s(pcm, onset) + pad_s)

    count = limit if limit > 0 else c.calls
    match c.caller:
        case "speech":
            for clip in speech:
                speech_item(clip, audio[clip.path])
            if c.network:
                for clip in noise:
                    add(clip.path, "noise", clip.category, audio[clip.path], None, None)
        case "noise":
            for clip in noise:
                add(clip.path, "noise", clip.category, audio[clip.path], None, None)
        case "silence":
            for i in range(count):
                add(f"silence_{i + 1:02d}", "noise", "echo_only", np.zeros(int(ECHO_ONLY_S * SAMPLE_RATE), np.int16),
                    None, None)
        case "short_word":
            for clip in [s for s in speech if s.category == "isolated_word"]:
                speech_item(clip, audio[clip.path])
        case "stop_word":
            names = list(stop_words)[: count or None]
            for name in names:
                pcm = stop_words[name]
                onset = _onset_s(pcm)
                add(f"synthetic/{name}", "speech", "stop_word", pcm, onset, speech_end_s(pcm, onset))
        case "labelled":
            for name, reference, pcm, offline in (labelled or [])[: count or None]:
                onset = _onset_s(pcm)
                category = {"synthetic": "phrase", "selfref": "self-referenced"}.get(name.split("/")[0], "recorded")
                add(name, "speech", category, pcm, onset, speech_end_s(pcm, onset), reference, offline)
        case "line_step":
            for i in range(count):
                add(f"hiss_step_{i + 1:02d}", "noise", "line_step", hiss(HISS_BEFORE_S, HISS_AFTER_S, seed + i),
                    None, None)
        case "line_step_speech":
            for i, clip in enumerate(speech[: count or None]):
                words = audio[clip.path]
                pcm = hiss(HISS_BEFORE_S, max(HISS_AFTER_S, SPEECH_AFTER_STEP_S + len(words) / SAMPLE_RATE + 0.5),
                           seed + i).astype(np.int32)
                at = int((HISS_BEFORE_S + SPEECH_AFTER_STEP_S) * SAMPLE_RATE)
                pcm[at : at + len(words)] += words
                mixed = np.clip(pcm, -32768, 32767).astype(np.int16)
                pad = HISS_BEFORE_S + SPEECH_AFTER_STEP_S
                onset = clip.speech_onset_s or 0.0
                add(clip.path, "speech", clip.category, mixed, onset + pad, speech_end_s(words, onset) + pad)
    return out


def _onset_s(pcm: I16) -> float:
    """The start of the first 20 ms frame within 35 dB of the loudest (synthetic audio has no manifest row)."""
    x = pcm[: len(pcm) // 160 * 160].astype(np.float64).reshape(-1, 160)
    if not len(x):
        return 0.0
    db = 10 * np.log10((x**2).mean(axis=1) + 1.0)
    return float(np.nonzero(db >= db.max() - 35.0)[0][0]) * 0.02


def clip_counts(condition: Condition) -> tuple[bool, bool]:
    """(needs speech clips, needs noise clips) for a condition."""
    speech = condition.caller in ("speech", "short_word", "line_step_speech")
    noise = condition.caller == "noise" or (condition.caller == "speech" and condition.network)
    return speech, noise


def is_false_clear_kind(item: BenchItem) -> bool:
    """A call where any clear is a false clear: no caller speech in it."""
    return item.kind == "noise"
