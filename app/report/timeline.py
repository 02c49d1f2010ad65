"""A call recording read back as one timeline: both legs' audio, what the caller heard, and every decision.

Pure: a `Recording` in, a `Timeline` out, no plotting. The picture (app/report/figure.py) only draws what this
module works out, so the numbers in the picture (talk-over, heard point, marker lag) are testable as data.

The agent leg "as heard" and the caller leg's placement are app/record/heard.py's: a chunk starts at
max(sent, end of the chunk before) and lasts its duration; a clear (or the stream's end) drops whatever had
not played by then. This module follows the same queue chunk by chunk to know also what was cut (drawn faded
where it would have played), which sentence each chunk carries and when each marker's audio ends.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from app.audio import ulaw_to_pcm16
from app.record.format import Recording
from app.record.heard import agent_heard, caller_said

RATE = 8000
F64 = npt.NDArray[np.float64]
TALK_OVER_MS = 300.0  # caller speech over audible agent audio for longer than this is counted in the title
_SPEECH_STATES = ("starting", "speaking")


@dataclass(frozen=True)
class Envelope:
    """A leg's waveform decimated to min/max per bin, in [-1, 1]; NaN where no audio was there."""

    t: F64  # bin start, seconds
    lo: F64
    hi: F64


@dataclass
class Chunk:
    """One media frame of agent audio in the provider's playback queue."""

    sent: float
    start: float
    samples: npt.NDArray[np.int16]
    sentence: int | None  # index into Timeline.sentences
    cut_at: float | None = None  # a clear stopped it here (== start: it never played)

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / RATE

    @property
    def heard_end(self) -> float:
        return self.end if self.cut_at is None else min(self.end, self.cut_at)


@dataclass
class Sentence:
    t: float  # queued
    turn_id: int | None
    text: str
    audio_ms: float
    start: float | None = None  # playback span, from its chunks
    end: float | None = None
    heard_end: float | None = None


@dataclass
class Mark:
    name: str
    sent: float
    turn_id: int | None = None
    due: float | None = None  # when the audio before it finishes playing, by the model above
    acked: float | None = None
    known: bool | None = None
    cleared: bool = False  # a clear fell before it was due
    cleared_at: float | None = None


@dataclass
class Clear:
    t: float
    barge_in_id: str | None = None
    heard_turn_id: int | None = None
    heard_audio_ms: float | None = None
    dropped_chunks: int | None = None


@dataclass
class BargeIn:
    id: str
    t: float  # decided
    turn_id: int | None
    confidence: float | None
    sustained_ms: float | None
    peak_dbfs: float | None
    speech_onset: float | None = None  # the VAD's last move out of quiet before the decision
    clear_t: float | None = None
    clear_sent_ms: float | None = None
    tts_stopped_ms: float | None = None
    llm_closed_ms: float | None = None
    total_ms: float | None = None
    heard_text: str | None = None
    outcome: str = "stopped"  # "resumed": a provisional stop after which the agent went on
    reason: str = ""
    settled_ms: float | None = None
    resumed_from_ms: float | None = None

    @property
    def talk_over_ms(self) -> float | None:
        """Caller speech onset to the clear: how long both were talking, at the least."""
        if self.speech_onset is None or self.clear_t is None:
            return None
        return max(0.0, (self.clear_t - self.speech_onset) * 1000)


@dataclass
class Turn:
    turn_id: int | None
    role: str
    start: float | None
    end: float | None
    text: str
    interrupted: bool
    heard_text: str | None


@dataclass
class Timeline:
    call_id: str
    provider: str
    started_at: float | None
    duration_s: float
    truncated: bool
    end_reason: str | None
    threshold: float | None
    caller: Envelope
    agent_heard: Envelope
    agent_cut: Envelope
    vad: list[dict[str, Any]] = field(default_factory=list)  # the recorded transitions, in order
    vad_bands: list[tuple[float, float, str]] = field(default_factory=list)  # (from, to, state) off quiet
    chunks: list[Chunk] = field(default_factory=list)
    sentences: list[Sentence] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    clears: list[Clear] = field(default_factory=list)
    bargeins: list[BargeIn] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    talk_over: list[tuple[float, float]] = field(default_factory=list)  # caller speech over audible agent audio
    unparsed_frames: int = 0

    @property
    def long_talk_overs(self) -> int:
        return sum(1 for a, b in self.talk_over if (b - a) * 1000 > TALK_OVER_MS)


def _frame(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _payload(msg: dict[str, Any]) -> bytes | None:
    media = msg.get("media")
    payload = media.get("payload") if isinstance(media, dict) else None
    if not isinstance(payload, str):
        return None
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        return None


def envelope(starts: list[float], pieces: list[npt.NDArray[np.int16]], t_end: float, bins: int) -> Envelope:
    """Min/max per bin of audio pieces placed at `starts` (seconds): a few thousand points for any length."""
    width = max(t_end, 1e-3) / bins
    width = max(width, 8 / RATE)  # never finer than 1 ms
    n = int(np.ceil(max(t_end, 1e-3) / width))
    edges_t = np.arange(n, dtype=np.float64) * width
    lo = np.full(n, np.nan)
    hi = np.full(n, np.nan)
    if pieces:
        samples = np.concatenate(pieces).astype(np.float64) / 32768.0
        times = np.concatenate([s + np.arange(len(p)) / RATE for s, p in zip(starts, pieces, strict=True)])
        if len(times) > 1 and np.any(np.diff(times) < 0):
            order = np.argsort(times, kind="stable")
            times, samples = times[order], samples[order]
        inside = times < n * width  # cut audio that would have played after the call ended is not drawn
        if not np.all(inside):
            times, samples = times[inside], samples[inside]
        idx = np.clip((times / width).astype(np.int64), 0, n - 1)
        # samples are sorted by bin: reduce each run of equal bin index at once
        bounds = np.flatnonzero(np.diff(idx)) + 1
        heads = np.concatenate(([0], bounds))
        if len(samples) and len(heads):
            which = idx[heads]
            hi[which] = np.maximum.reduceat(samples, heads)
            lo[which] = np.minimum.reduceat(samples, heads)
    return Envelope(edges_t, lo, hi)


def build_timeline(rec: Recording, bins: int = 4000) -> Timeline:
    """Everything the picture shows, worked out from the recording's lines."""
    header = rec.header
    record = rec.record or {}
    settings = header.get("settings") if isinstance(header.get("settings"), dict) else {}
    threshold = settings.get("vad_silero_threshold") if isinstance(settings, dict) else None
    duration = rec.duration_s

    chunks: list[Chunk] = []
    sentences: list[Sentence] = []
    marks: dict[str, Mark] = {}
    clears: list[Clear] = []
    bargeins: dict[str, BargeIn] = {}
    turns: dict[int | None, Turn] = {}
    turn_list: list[Turn] = []
    vad: list[dict[str, Any]] = []
    cursor = 0.0  # end of the provider's playback queue
    # The outbox's queue: [sentence index, audio ms not sent yet]. Chunks go out in queue order, so each chunk
    # carries the sentence at the front, not the one queued last (synthesis runs ahead of playback).
    unsent: list[list[Any]] = []

    def sentence_of(audio_ms: float) -> int | None:
        while unsent and unsent[0][1] <= 1e-6:
            unsent.pop(0)
        if not unsent:
            return len(sentences) - 1 if sentences else None
        index = int(unsent[0][0])
        unsent[0][1] -= audio_ms
        return index
    unparsed = 0
    end_reason = record.get("end_reason") if isinstance(record.get("end_reason"), str) else None

    def clear_queue(t: float) -> None:
        for c in reversed(chunks):
            if c.end <= t:
                break
            if c.cut_at is None:
                c.cut_at = max(c.start, t)

    for line in rec.lines:
        kind = line.get("type")
        t = float(line.get("t") or 0.0)
        if kind == "ws_in":
            continue  # the caller's frames: app/record/heard.py lays them out, below
        elif kind == "ws_out":
            msg = _frame(line.get("text"))
            if msg is None:
                unparsed += 1
                continue
            event = msg.get("event")
            if event in ("media", "playAudio"):
                data = _payload(msg)
                if data:
                    pcm = ulaw_to_pcm16(data)
                    start = max(t, cursor)
                    chunk = Chunk(t, start, pcm, sentence_of(len(data) / 8.0))
                    chunks.append(chunk)
                    cursor = chunk.end
            elif event in ("mark", "checkpoint"):
                mark_obj = msg.get("mark")
                name = mark_obj.get("name") if isinstance(mark_obj, dict) else msg.get("name")
                if isinstance(name, str):
                    m = marks.setdefault(name, Mark(name, t))
                    m.due = max(t, cursor)
            elif event in ("clear", "clearAudio"):
                clear_queue(t)
                cursor = t
                unsent.clear()  # the outbox drops what it had not sent
                for m in marks.values():
                    if m.due is not None and m.due > t and m.acked is None and not m.cleared:
                        m.cleared, m.cleared_at = True, t
                if not clears or clears[-1].t != t:
                    clears.append(Clear(t))
        elif kind == "vad":
            vad.append(line)
        elif kind == "barge_in":
            bid = str(line.get("id"))
            bargeins[bid] = BargeIn(bid, t, line.get("turn_id"), line.get("confidence"), line.get("sustained_ms"),
                                    line.get("peak_dbfs"))
        elif kind == "clear":
            c = clears[-1] if clears and abs(clears[-1].t - t) < 0.5 and clears[-1].barge_in_id is None else None
            if c is None:  # no clear frame recorded (frames redacted?): the event alone
                clear_queue(t)
                cursor = t
                c = Clear(t)
                clears.append(c)
            c.barge_in_id = line.get("barge_in_id")
            c.heard_turn_id = line.get("heard_turn_id")
            c.heard_audio_ms = line.get("heard_audio_ms")
            b = bargeins.get(str(c.barge_in_id))
            if b is not None:
                b.clear_t = c.t
        elif kind == "audio_dropped":
            if clears:
                clears[-1].dropped_chunks = line.get("chunks")
        elif kind == "barge_in_done":
            b = bargeins.get(str(line.get("id")))
            if b is not None:
                b.clear_sent_ms = line.get("clear_sent_ms")
                b.tts_stopped_ms = line.get("tts_stopped_ms")
                b.llm_closed_ms = line.get("llm_closed_ms")
                b.total_ms = line.get("total_ms")
                b.outcome = str(line.get("outcome") or "stopped")
                b.reason = str(line.get("reason") or "")
                b.settled_ms = line.get("settled_ms")
                b.resumed_from_ms = line.get("resumed_from_ms")
        elif kind == "audio_queued":
            sentences.append(Sentence(t, line.get("turn_id"), str(line.get("text") or ""),
                                      float(line.get("audio_ms") or 0.0)))
            unsent.append([len(sentences) - 1, float(line.get("audio_ms") or 0.0)])
        elif kind == "mark_sent":
            name = str(line.get("name"))
            m = marks.setdefault(name, Mark(name, t, due=max(t, cursor)))
            m.turn_id = line.get("turn_id")
        elif kind == "mark_acked":
            name = str(line.get("name"))
            m = marks.setdefault(name, Mark(name, t))
            if m.acked is None:
                m.acked = t
                m.known = line.get("known")
        elif kind == "turn_start":
            turn = Turn(line.get("turn_id"), str(line.get("role") or "?"), t, None, "", False, None)
            turns[turn.turn_id] = turn
            turn_list.append(turn)
        elif kind == "turn_end":
            tid = line.get("turn_id")
            turn_or_none = turns.pop(tid, None)
            if turn_or_none is None:
                turn_or_none = Turn(tid, str(line.get("role") or "?"), None, None, "", False, None)
                turn_list.append(turn_or_none)
            turn_or_none.end = t
            turn_or_none.text = str(line.get("text") or "")
            turn_or_none.interrupted = bool(line.get("interrupted"))
            turn_or_none.heard_text = line.get("heard_text")
        elif kind == "call_end":
            end_reason = str(line.get("reason") or end_reason or "")
        if kind in ("call_end", "stream"):  # the stream ended: its queue with it (as app/record/heard.py)
            clear_queue(t)
            cursor = t

    for ch in chunks:
        if ch.sentence is not None:
            s = sentences[ch.sentence]
            s.start = ch.start if s.start is None else min(s.start, ch.start)
            s.end = ch.end if s.end is None else max(s.end, ch.end)
            if ch.heard_end > ch.start:
                s.heard_end = ch.heard_end if s.heard_end is None else max(s.heard_end, ch.heard_end)

    t_end = max([duration] + [c.heard_end for c in chunks])
    caller = caller_said(rec.lines)
    caller_starts = [f.start_s for f in caller]
    caller_pieces = _decode([f.ulaw for f in caller])
    heard = agent_heard(rec.lines)
    heard_env = envelope([h.start_s for h in heard], _decode([h.ulaw for h in heard]), t_end, bins)
    cut_pieces = [c.samples[int(round((c.heard_end - c.start) * RATE)):] for c in chunks]

    bands = _vad_bands(vad, t_end)
    for b in bargeins.values():
        onsets = [v["t"] for v in vad if v.get("previous") == "quiet" and float(v["t"]) <= b.t]
        b.speech_onset = float(onsets[-1]) if onsets else None
        agent_turn = next((tr for tr in turn_list if tr.turn_id == b.turn_id and tr.role == "agent"), None)
        b.heard_text = agent_turn.heard_text if agent_turn is not None else None

    heard_spans = _merge([(c.start, c.heard_end) for c in chunks if c.heard_end > c.start])
    speech_spans = [(a, z) for a, z, state in bands if state in _SPEECH_STATES]
    talk_over = _merge(_intersect(_merge(speech_spans), heard_spans), gap=0.1)

    return Timeline(
        call_id=str(header.get("call_id") or record.get("call_id") or "?"),
        provider=str(header.get("provider") or record.get("provider") or "?"),
        started_at=header.get("started_at") if isinstance(header.get("started_at"), (int, float)) else None,
        duration_s=t_end,
        truncated=rec.truncated or rec.record is None,
        end_reason=end_reason,
        threshold=float(threshold) if isinstance(threshold, (int, float)) else None,
        caller=envelope(caller_starts, caller_pieces, t_end, bins),
        agent_heard=heard_env,
        agent_cut=_under(envelope([c.heard_end for c in chunks], cut_pieces, t_end, bins), heard_env),
        vad=vad,
        vad_bands=bands,
        chunks=chunks,
        sentences=sentences,
        marks=sorted(marks.values(), key=lambda m: m.sent),
        clears=clears,
        bargeins=sorted(bargeins.values(), key=lambda b: b.t),
        turns=turn_list,
        talk_over=talk_over,
        unparsed_frames=unparsed,
    )


def _decode(ulaws: list[bytes]) -> list[npt.NDArray[np.int16]]:
    """Many mu-law pieces decoded in one pass (one table lookup), split back."""
    if not ulaws:
        return []
    pcm = ulaw_to_pcm16(b"".join(ulaws))
    return np.split(pcm, np.cumsum([len(u) for u in ulaws[:-1]]))


def _under(cut: Envelope, heard: Envelope) -> Envelope:
    """The cut audio only where nothing was heard: after a clear, the next reply's audio takes the place."""
    busy = ~np.isnan(heard.hi)
    return Envelope(cut.t, np.where(busy, np.nan, cut.lo), np.where(busy, np.nan, cut.hi))


def _vad_bands(vad: list[dict[str, Any]], t_end: float) -> list[tuple[float, float, str]]:
    bands = []
    for i, v in enumerate(vad):
        state = str(v.get("state"))
        if state == "quiet":
            continue
        until = float(vad[i + 1]["t"]) if i + 1 < len(vad) else t_end
        bands.append((float(v["t"]), until, state))
    return bands


def _merge(spans: list[tuple[float, float]], gap: float = 1e-6) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, z in sorted(spans):
        if out and a <= out[-1][1] + gap:
            out[-1] = (out[-1][0], max(out[-1][1], z))
        else:
            out.append((a, z))
    return out


def _intersect(xs: list[tuple[float, float]], ys: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out = []
    i = j = 0
    while i < len(xs) and j < len(ys):
        a = max(xs[i][0], ys[j][0])
        z = min(xs[i][1], ys[j][1])
        if a < z:
            out.append((a, z))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out
