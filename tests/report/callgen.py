"""A generator of realistic call recordings (format v1) for the report tests: real corpus speech on both legs.

The caller leg is a corpus clip laid on low line noise and sent as 20 ms Twilio (or Plivo) media frames for the
whole call; the agent's sentences are corpus speech too, sent as 160 ms media chunks with a marker after each
sentence, acknowledged when it would have finished playing. Barge-ins are scripted: the caller talks over a
reply, the detector decides, a clear goes out, the cut markers are echoed (Twilio) or never acked (Plivo).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.audio import pcm16_to_ulaw
from app.offline.corpus import load_clip
from app.record.format import write_recording

RATE = 8000
CHUNK_S = 0.16
CALLER_CLIPS = ("speech/read_02_libri6272F.wav", "speech/read_07_libri4340F.wav", "speech/oration_01_jfk.wav",
                "speech/read_04_libri3112F.wav")
AGENT_CLIPS = ("speech/read_03_libri5688F.wav", "speech/read_05_libri2910F.wav", "speech/read_06_libri1502F.wav",
               "speech/read_08_libri5867F.wav")
USER_LINES = ("I'd like to move my appointment to Thursday afternoon please.",
              "Actually wait, can we make it Friday instead?",
              "And what's the address of the clinic again?",
              "Okay, thanks, that's everything.")
AGENT_REPLIES = (
    ("Sure, I can help you move your appointment.", "Thursday afternoon I have two-thirty or four o'clock open.",
     "Which of those works better for you?"),
    ("Of course, Friday works too.", "On Friday the first free slot is at nine fifteen in the morning.",
     "After that there is eleven and then three in the afternoon."),
    ("The clinic is at 42 Harbour Street, second floor.", "There is parking behind the building."),
    ("You're welcome, see you on Friday!",),
)


@dataclass
class Sentence:
    text: str
    pcm: np.ndarray


@dataclass
class CallBuilder:
    provider: str = "twilio"
    call_id: str = "CA0123456789abcdef0123456789abcdef"
    stream_id: str = "MZ0123456789abcdef0123456789abcdef"
    events: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    caller: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seq: int = 0
    play_cursor: float = 0.0
    chunks: list[list[float]] = field(default_factory=list)  # [start, end] per chunk still to play
    pending_marks: list[tuple[str, float]] = field(default_factory=list)  # (name, expected play time)
    mark_no: int = 0
    turn_no: int = 0
    barge_no: int = 0
    turns: list[dict[str, Any]] = field(default_factory=list)

    def emit(self, t: float, kind: str, **fields: Any) -> None:
        self.seq += 1
        self.events.append((round(t, 6), self.seq, {"type": kind, "t": round(t, 6), **fields}))

    # -- the wire, per provider ------------------------------------------------------------------------------
    def out_media(self, payload: bytes) -> str:
        b64 = base64.b64encode(payload).decode()
        if self.provider == "twilio":
            return json.dumps({"event": "media", "streamSid": self.stream_id, "media": {"payload": b64}})
        return json.dumps({"event": "playAudio", "streamId": self.stream_id,
                           "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": b64}})

    def out_mark(self, name: str) -> str:
        if self.provider == "twilio":
            return json.dumps({"event": "mark", "streamSid": self.stream_id, "mark": {"name": name}})
        return json.dumps({"event": "checkpoint", "streamId": self.stream_id, "name": name})

    def out_clear(self) -> str:
        if self.provider == "twilio":
            return json.dumps({"event": "clear", "streamSid": self.stream_id})
        return json.dumps({"event": "clearAudio", "streamId": self.stream_id})

    def in_mark(self, name: str) -> str:
        if self.provider == "twilio":
            return json.dumps({"event": "mark", "streamSid": self.stream_id, "sequenceNumber": "1",
                               "mark": {"name": name}})
        return json.dumps({"event": "playedStream", "streamId": self.stream_id, "name": name})

    # -- the caller ------------------------------------------------------------------------------------------
    def caller_says(self, t0: float, clip: str) -> float:
        pcm = load_clip(clip).astype(np.float64)
        start = int(t0 * RATE)
        end = start + len(pcm)
        if len(self.caller) < end:
            self.caller = np.concatenate([self.caller, np.zeros(end - len(self.caller))])
        self.caller[start:end] += pcm
        return len(pcm) / RATE

    def vad_speech(self, t0: float, dur: float) -> None:
        self.emit(t0 + 0.10, "vad", state="starting", previous="quiet", probability=0.94, level_dbfs=-24.0)
        self.emit(t0 + 0.34, "vad", state="speaking", previous="starting", probability=0.98, level_dbfs=-19.5)
        self.emit(t0 + dur + 0.05, "vad", state="stopping", previous="speaking", probability=0.12, level_dbfs=-52.0)
        self.emit(t0 + dur + 0.65, "vad", state="quiet", previous="stopping", probability=0.03, level_dbfs=-120.0)

    def user_turn(self, t0: float, dur: float, text: str) -> float:
        self.turn_no += 1
        tid = self.turn_no
        self.emit(t0 + 0.34, "turn_start", turn_id=tid, role="user")
        end = t0 + dur + 0.65
        self.emit(end, "turn_end", turn_id=tid, role="user", text=text, interrupted=False, heard_text=None,
                  heard_chars=None, heard_audio_ms=None, audio_ms=None)
        self.turns.append({"role": "user", "text": text, "interrupted": False})
        return end

    # -- the agent -------------------------------------------------------------------------------------------
    def agent_turn(self, t0: float, sentences: list[Sentence], barge_after_s: float | None,
                   barge_clip: str | None) -> tuple[float, float | None]:
        """Returns (when the turn's audio ends or was cut, the barge-in speech's start or None)."""
        self.turn_no += 1
        tid = self.turn_no
        full = " ".join(s.text for s in sentences)
        self.emit(t0, "turn_start", turn_id=tid, role="agent")
        self.emit(t0 + 0.01, "llm_open", turn_id=tid)
        t = t0 + 0.25
        for word in full.split():
            self.emit(t, "llm_token", turn_id=tid, text=word + " ")
            t += 0.025
        llm_done = t
        q = t0 + 0.45
        total_ms = 0.0
        sentence_spans: list[tuple[float, float, int]] = []  # (play start, play end, chars)
        first_play: float | None = None
        for s in sentences:
            self.emit(q - 0.2, "tts_start", turn_id=tid, text=s.text)
            audio_ms = len(s.pcm) / RATE * 1000
            self.emit(q, "audio_queued", turn_id=tid, audio_ms=audio_ms, text=s.text)
            ulaw = pcm16_to_ulaw(s.pcm.astype(np.int16))
            step = int(CHUNK_S * RATE)
            span_start = None
            for k in range(0, len(ulaw), step):
                piece = ulaw[k:k + step]
                ts = q + 0.0005 * (k // step)
                dur = len(piece) / RATE
                start = max(ts, self.play_cursor)
                self.play_cursor = start + dur
                span_start = start if span_start is None else span_start
                self.chunks.append([start, start + dur])
                self.emit(ts, "ws_out", text=self.out_media(piece))
            first_play = span_start if first_play is None else first_play
            sentence_spans.append((span_start or q, self.play_cursor, len(s.text)))
            self.mark_no += 1
            name = f"t{tid}-{self.mark_no}"
            self.emit(q + 0.01, "ws_out", text=self.out_mark(name))
            self.emit(q + 0.01, "mark_sent", name=name, turn_id=tid, audio_ms=audio_ms)
            self.pending_marks.append((name, self.play_cursor))
            self.emit(q + 0.02, "tts_done", turn_id=tid, audio_ms=audio_ms)
            total_ms += audio_ms
            q += max(0.35, 0.06 * len(s.text.split()))
        assert first_play is not None
        end = self.play_cursor
        if barge_after_s is None or barge_clip is None:
            self.emit(llm_done, "llm_close", turn_id=tid, reason="done")
            self.ack_marks_until(end + 1.0)
            self.emit(end + 0.06, "turn_end", turn_id=tid, role="agent", text=full, interrupted=False,
                      heard_text=None, heard_chars=None, heard_audio_ms=total_ms, audio_ms=total_ms)
            self.turns.append({"role": "agent", "text": full, "interrupted": False})
            return end, None
        # the caller talks over the reply
        b0 = first_play + barge_after_s
        self.barge_no += 1
        bid = f"b{self.barge_no}"
        decided = b0 + 0.30
        cleared = decided + 0.0075
        self.ack_marks_until(cleared)
        heard_ms = (cleared - first_play) * 1000
        chars = 0
        for s0, s1, n in sentence_spans:  # whole sentences heard, plus the share of the one cut
            if s1 <= cleared:
                chars += n + 1
            elif s0 < cleared:
                chars += int(n * (cleared - s0) / (s1 - s0))
        heard = full[:chars].rstrip()
        self.emit(decided, "barge_in", id=bid, turn_id=tid, confidence=0.97, sustained_ms=260.0, peak_dbfs=-17.8)
        self.emit(cleared, "ws_out", text=self.out_clear())
        self.emit(cleared, "clear", barge_in_id=bid, heard_turn_id=tid, heard_audio_ms=round(heard_ms, 1))
        dropped = sum(1 for c in self.chunks if c[0] >= cleared)
        self.emit(cleared + 0.0002, "audio_dropped", chunks=dropped)
        for name, _ in self.pending_marks:
            if self.provider == "twilio":  # Twilio echoes every mark the clear cut
                self.emit(cleared + 0.055, "ws_in", text=self.in_mark(name))
                self.emit(cleared + 0.0552, "mark_acked", name=name, known=False)
        self.pending_marks.clear()
        self.chunks = [c for c in self.chunks if c[0] < cleared]
        self.play_cursor = cleared
        if llm_done > decided:
            self.emit(decided + 0.0135, "llm_close", turn_id=tid, reason="cancelled")
        else:
            self.emit(llm_done, "llm_close", turn_id=tid, reason="done")
        self.emit(decided + 0.016, "barge_in_done", id=bid, clear_sent_ms=7.5, tts_stopped_ms=10.9,
                  llm_closed_ms=13.5, total_ms=16.0)
        self.emit(decided + 0.017, "turn_end", turn_id=tid, role="agent", text=full, interrupted=True,
                  heard_text=heard, heard_chars=len(heard), heard_audio_ms=round(heard_ms, 1), audio_ms=total_ms)
        self.turns.append({"role": "agent", "text": full, "interrupted": True, "heard_text": heard})
        return cleared, b0

    def ack_marks_until(self, t: float) -> None:
        keep = []
        for name, expected in self.pending_marks:
            if expected <= t:
                self.emit(expected + 0.045, "ws_in", text=self.in_mark(name))
                self.emit(expected + 0.0452, "mark_acked", name=name, known=True)
            else:
                keep.append((name, expected))
        self.pending_marks = keep

    # -- the whole file --------------------------------------------------------------------------------------
    def write(self, path: Path, duration_s: float) -> Path:
        noise = np.random.default_rng(7).normal(0, 12.0, int(duration_s * RATE))
        caller = noise
        caller[: min(len(self.caller), len(caller))] += self.caller[: len(caller)]
        ulaw = pcm16_to_ulaw(np.clip(np.round(caller), -32768, 32767).astype(np.int16))
        if self.provider == "twilio":
            self.emit(0.0, "ws_in", text=json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            self.emit(0.001, "ws_in", text=json.dumps({
                "event": "start", "sequenceNumber": "1", "streamSid": self.stream_id,
                "start": {"accountSid": "AC-redacted", "callSid": self.call_id, "streamSid": self.stream_id,
                          "tracks": ["inbound"], "customParameters": {},
                          "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        else:
            self.emit(0.001, "ws_in", text=json.dumps({
                "event": "start", "sequenceNumber": 0,
                "start": {"callId": self.call_id, "streamId": self.stream_id, "accountId": "MA-redacted",
                          "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}}))
        frame = RATE // 50
        for n in range(len(ulaw) // frame):
            b64 = base64.b64encode(ulaw[n * frame:(n + 1) * frame]).decode()
            t = (n + 1) * 0.02 + 0.004 * ((n * 7919) % 5) / 5  # a little arrival jitter
            media = {"track": "inbound", "chunk": str(n + 1), "timestamp": str(n * 20), "payload": b64}
            if self.provider == "twilio":
                msg = {"event": "media", "sequenceNumber": str(n + 2), "media": media, "streamSid": self.stream_id}
            else:
                msg = {"event": "media", "sequenceNumber": n + 1, "media": media, "streamId": self.stream_id}
            self.emit(t, "ws_in", text=json.dumps(msg, separators=(",", ":")))
        stop = "stop" if self.provider == "twilio" else "stop"
        self.emit(duration_s, "ws_in", text=json.dumps({"event": stop, "streamSid": self.stream_id}))
        self.emit(duration_s + 0.001, "call_end", reason="stop")
        self.events.sort(key=lambda e: (e[0], e[1]))
        header = {"call_id": self.call_id, "stream_id": self.stream_id, "provider": self.provider,
                  "started_at": 1764470000.0, "build": "0.1.0",
                  "settings": {"vad_silero_threshold": 0.9, "bargein_min_speech_ms": 250},
                  "redacted": ["start.customParameters"]}
        record = {"call_id": self.call_id, "provider": self.provider, "end_reason": "stop", "turns": self.turns,
                  "bargeins": [{"id": f"b{i + 1}"} for i in range(self.barge_no)]}
        write_recording(path, header, [e[2] for e in self.events], record)
        return path


def agent_sentences(reply: tuple[str, ...], clip_no: int) -> list[Sentence]:
    out = []
    for k, text in enumerate(reply):
        clip = load_clip(AGENT_CLIPS[(clip_no + k) % len(AGENT_CLIPS)])
        n = int(min(len(clip), max(0.9, 0.062 * len(text)) * RATE))
        out.append(Sentence(text, (clip[:n].astype(np.float64) * 0.7).astype(np.int16)))
    return out


def make_call(path: Path, duration_s: float = 30.0, provider: str = "twilio",
              barge_every: int = 2) -> Path:
    """A call of about `duration_s`: exchanges of caller speech and agent replies; every `barge_every`-th
    reply (the first one included) is cut by the caller talking over it 1.6 s into its audio."""
    b = CallBuilder(provider=provider)
    t = 0.6
    speech_at: float | None = None
    n = 0
    while True:
        clip = CALLER_CLIPS[n % len(CALLER_CLIPS)]
        u0 = speech_at if speech_at is not None else t
        dur = b.caller_says(u0, clip)
        if speech_at is None:
            b.vad_speech(u0, dur)
        else:  # the barge-in's speech: the VAD went to speaking before the decision; it ends like any other
            b.emit(u0 + dur + 0.05, "vad", state="stopping", previous="speaking", probability=0.1, level_dbfs=-50.0)
            b.emit(u0 + dur + 0.65, "vad", state="quiet", previous="stopping", probability=0.02, level_dbfs=-120.0)
        user_end = b.user_turn(u0, dur, USER_LINES[n % len(USER_LINES)])
        if user_end + 6 > duration_s:
            break
        barge = n % barge_every == 0
        reply = AGENT_REPLIES[n % len(AGENT_REPLIES)]
        a_end, b0 = b.agent_turn(user_end + 0.05, agent_sentences(reply, n), 1.6 if barge else None,
                                 CALLER_CLIPS[(n + 1) % len(CALLER_CLIPS)] if barge else None)
        if b0 is not None:
            b.emit(b0 + 0.10, "vad", state="starting", previous="quiet", probability=0.95, level_dbfs=-22.0)
            b.emit(b0 + 0.30, "vad", state="speaking", previous="starting", probability=0.99, level_dbfs=-18.0)
        speech_at = b0
        t = a_end + 1.2
        n += 1
    end = max(t, b.play_cursor + 1.0, user_end + 1.0)
    return b.write(path, end)
