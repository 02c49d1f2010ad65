"""`bargein export FILE -o call.wav`: a recording as a stereo WAV, the caller left, the agent as heard right.

8 kHz, 16-bit PCM, t = 0 at the stream's upgrade (the recording's t). The right channel is what the caller
heard (app/record/heard.py: played in order, cut at each clear), so a barge-in sounds as it did on the phone.
A recording made with RECORD_REDACT=audio has a silent left channel, RECORD_REDACT=text a silent right one.
"""

from __future__ import annotations

import argparse
import sys
import wave
from pathlib import Path
from typing import TYPE_CHECKING

from app.record.format import SUFFIXES, Recording, RecordingError, read_recording
from app.record.heard import SAMPLE_RATE, agent_heard, caller_said

if TYPE_CHECKING:  # numpy is imported when a WAV is made, not when `bargein` builds its parser
    import numpy as np
    import numpy.typing as npt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", metavar="FILE", help="a call recording (RECORD_DIR/<call id>.jsonl.zst)")
    parser.add_argument("-o", "--output", metavar="WAV", default=None,
                        help="the WAV file to write (default: FILE with .wav in place of .jsonl.zst / .jsonl.gz)")


def stereo(recording: Recording) -> npt.NDArray[np.int16]:
    """The call as (samples, 2) int16 at 8 kHz: caller left, agent as heard right."""
    import numpy as np

    from app.audio import ulaw_to_pcm16

    caller = caller_said(recording.lines)
    agent = agent_heard(recording.lines)
    end = recording.duration_s
    for frame in caller:
        end = max(end, frame.start_s + len(frame.ulaw) / SAMPLE_RATE)
    for chunk in agent:
        end = max(end, chunk.end_s)
    out = np.zeros((int(round(end * SAMPLE_RATE)) + 1, 2), dtype=np.int16)
    for channel, spans in ((0, ((f.start_s, f.ulaw) for f in caller)), (1, ((c.start_s, c.ulaw) for c in agent))):
        for start_s, ulaw in spans:
            at = int(round(start_s * SAMPLE_RATE))
            pcm = ulaw_to_pcm16(ulaw)[: max(0, len(out) - at)]
            out[at:at + len(pcm), channel] = pcm
    return out


def write_wav(path: str | Path, samples: npt.NDArray[np.int16]) -> None:
    import numpy as np

    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())


def default_output(recording: str) -> Path:
    name = Path(recording).name
    stem = next((name[: -len(x)] for x in SUFFIXES if name.endswith(x)), Path(name).stem)
    return Path(recording).with_name(stem + ".wav")


def run(args: argparse.Namespace) -> int:
    try:
        recording = read_recording(args.recording)
    except RecordingError as exc:
        print(f"bargein export: {exc}", file=sys.stderr)
        return 2
    audio = recording.header.get("audio") or {"encoding": "audio/x-mulaw", "sample_rate": SAMPLE_RATE}
    if audio.get("encoding") != "audio/x-mulaw" or audio.get("sample_rate") != SAMPLE_RATE:
        print(f"bargein export: {args.recording} holds {audio.get('encoding')} audio; export reads the carriers' "
              "8 kHz mu-law (Twilio, Plivo recordings)", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output else default_output(args.recording)
    samples = stereo(recording)
    try:
        write_wav(output, samples)
    except OSError as exc:
        print(f"bargein export: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    notes = []
    if recording.truncated or recording.record is None:
        notes.append("the recording was cut short (no final call record)")
    redacted = recording.header.get("redacted") or []
    if "audio" in redacted:
        notes.append("RECORD_REDACT=audio: the caller's channel is silent")
    if "text" in redacted:
        notes.append("RECORD_REDACT=text: the agent's channel is silent")
    print(f"wrote {output}: {len(samples) / SAMPLE_RATE:.1f} s, stereo 8 kHz 16-bit "
          "(left: the caller, right: the agent as the caller heard it)")
    for note in notes:
        print(f"note: {note}")
    return 0
