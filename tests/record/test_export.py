"""`bargein export`: a recording (written with format.write_recording) to a stereo WAV, and its errors."""

from __future__ import annotations

import argparse
import base64
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from app.record import export
from app.record.format import write_recording


def args(recording: Path, output: Path | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    return parser.parse_args([str(recording), *(["-o", str(output)] if output else [])])


def test_a_recording_becomes_caller_left_agent_right(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loud = base64.b64encode(b"\x10" * 160).decode()  # mu-law 0x10: a large negative sample
    lines = [
        {"type": "ws_in", "t": 0.12, "text": json.dumps({"event": "media", "media": {"payload": loud}})},
        {"type": "ws_out", "t": 0.5, "text": json.dumps({"event": "media", "media": {"payload": loud}})},
        {"type": "call_end", "t": 1.0, "reason": "stop"},
    ]
    path = tmp_path / "CA1.jsonl.gz"
    write_recording(path, {"call_id": "CA1", "redacted": []}, lines, record={"call_id": "CA1"})
    assert export.run(args(path)) == 0  # default output: beside the recording
    with wave.open(str(tmp_path / "CA1.wav")) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    assert len(samples) == 8001
    left, right = np.flatnonzero(samples[:, 0]), np.flatnonzero(samples[:, 1])
    assert (left[0], left[-1]) == (800, 959)  # 100-120 ms: the frame ends when it arrived
    assert (right[0], right[-1]) == (4000, 4159)
    assert "wrote" in capsys.readouterr().out


def test_redacted_channels_are_named_and_a_bad_file_is_refused(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.jsonl.gz"
    write_recording(path, {"call_id": "CA1", "redacted": ["audio", "text"]}, [])
    assert export.run(args(path, tmp_path / "out.wav")) == 0
    out = capsys.readouterr().out
    assert "caller's channel is silent" in out and "agent's channel is silent" in out and "cut short" in out

    junk = tmp_path / "junk.jsonl.gz"
    junk.write_bytes(b"not gzip")
    assert export.run(args(junk)) == 2
    assert "bargein export:" in capsys.readouterr().err
    assert export.run(args(tmp_path / "missing.jsonl.gz")) == 2


def test_a_recording_of_other_audio_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pcm.jsonl.gz"
    write_recording(path, {"call_id": "c1", "audio": {"encoding": "unknown"}}, [])
    assert export.run(args(path)) == 2
    assert "mu-law" in capsys.readouterr().err
