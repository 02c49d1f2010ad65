"""app/report/timeline.py and figure.py on generated recordings: what the picture says, as data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.record.format import read_recording
from app.record.heard import agent_heard
from app.report.figure import build_figure, fit_text, headline
from app.report.timeline import build_timeline


def test_short_call_timeline(short_call: Path) -> None:
    rec = read_recording(short_call)
    tl = build_timeline(rec)
    assert tl.provider == "twilio" and tl.threshold == 0.9 and not tl.truncated
    [barge] = tl.bargeins
    [clear] = tl.clears
    decided = next(line["t"] for line in rec.of_type("barge_in"))
    assert barge.t == decided and clear.barge_in_id == barge.id
    assert clear.t == pytest.approx(decided + 0.0075, abs=1e-6)
    assert barge.total_ms == 16.0 and barge.heard_text == "Sure, I can help you move your"
    assert 150 < (barge.talk_over_ms or 0) < 300  # speech onset to clear
    assert tl.long_talk_overs == 0
    assert headline(tl) == "1 barge-in, 0 talk-over > 300 ms"
    # nothing of the agent is heard after the clear until the next reply, and what was cut sits there instead
    next_reply = min(c.start for c in tl.chunks if c.sent > clear.t)
    between = (tl.agent_heard.t > clear.t + 0.01) & (tl.agent_heard.t < next_reply - 0.01)
    assert np.all(np.isnan(tl.agent_heard.hi[between]))
    assert np.nanmax(tl.agent_cut.hi[between]) > 0.05
    # every marker the clear cut was echoed by Twilio as not outstanding; the rest acked when due
    cut = [m for m in tl.marks if m.cleared]
    assert cut and all(m.known is False for m in cut)
    assert all(m.acked is not None and m.due is not None and m.acked >= m.due for m in tl.marks if not m.cleared)
    assert [t.role for t in tl.turns] == ["user", "agent", "user", "agent", "user"]
    assert tl.turns[1].interrupted and not tl.turns[3].interrupted


def test_heard_agrees_with_record_heard(short_call: Path) -> None:
    """The per-chunk queue here and app/record/heard.py's say the caller heard the same audio."""
    rec = read_recording(short_call)
    tl = build_timeline(rec)
    mine = sum(round((c.heard_end - c.start) * 8000) for c in tl.chunks)
    theirs = sum(len(h.ulaw) for h in agent_heard(rec.lines))
    assert abs(mine - theirs) <= len(tl.chunks)  # rounding, at most a sample a chunk


def test_plivo_cut_checkpoints_are_never_acked(plivo_call: Path) -> None:
    tl = build_timeline(read_recording(plivo_call))
    cut = [m for m in tl.marks if m.cleared]
    assert cut and all(m.acked is None and m.cleared_at == tl.clears[0].t for m in cut)
    assert headline(tl) == "1 barge-in, 0 talk-over > 300 ms"  # cut checkpoints are not "never acknowledged"


def test_figure_has_the_rows_lines_and_labels(short_call: Path) -> None:
    tl = build_timeline(read_recording(short_call))
    fig = build_figure(tl)
    names = [tr.name for tr in fig.data]
    for name in ("caller", "VAD", "agent, heard", "agent, cut by a clear", "sentence text", "clear"):
        assert name in names
    barge_lines = [s for s in fig.layout.shapes if s.type == "line" and s.yref == "paper"]
    assert [s.x0 for s in barge_lines] == [tl.bargeins[0].t]
    texts = [a.text for a in fig.layout.annotations]
    assert any("barge-in 1" in t and "16 ms" in t and "clear +7.5" in t for t in texts)
    assert any(t.startswith("✂ heard:") and "move your" in t for t in texts)
    [clears] = [tr for tr in fig.data if tr.name == "clear"]
    assert list(clears.x) == [tl.clears[0].t]
    labels = next(tr for tr in fig.data if tr.name == "sentence text")
    assert labels.visible is True and any(t.startswith("Sure, I can help") for t in labels.text)
    # waveforms are decimated: a few thousand strokes, whatever the length
    caller = next(tr for tr in fig.data if tr.name == "caller")
    assert len(caller.x) <= 3 * 4000


def test_long_call_is_decimated_and_compact(long_call: Path) -> None:
    tl = build_timeline(read_recording(long_call))
    assert tl.duration_s > 290 and len(tl.bargeins) >= 10
    fig = build_figure(tl)
    assert all(len(tr.x) <= 3 * 4000 for tr in fig.data if tr.x is not None)
    labels = next(tr for tr in fig.data if tr.name == "sentence text")
    assert labels.visible is False  # too wide a range for text: shown once zoomed in
    assert not any("clear +7.5" in a.text for a in fig.layout.annotations)  # compact barge-in labels


def test_fit_text() -> None:
    assert fit_text("hello world", 20) == "hello world"
    assert fit_text("hello world", 7) == "hello…"
    assert fit_text("hello world", 3) == ""


def test_each_chunk_carries_the_sentence_at_the_front_of_the_queue(tmp_path: Path) -> None:
    """Synthesis runs ahead of playback: a sentence queued before the first one has played starts after it."""
    import base64
    import json

    from app.record.format import read_recording, write_recording
    from app.report.timeline import build_timeline

    def media(t: float) -> dict[str, object]:
        payload = base64.b64encode(bytes([0x10]) * 1280).decode()  # 160 ms of mu-law
        return {"type": "ws_out", "t": t, "text": json.dumps({"event": "media", "streamSid": "MZ1",
                                                              "media": {"payload": payload}})}

    lines: list[dict[str, object]] = [
        {"type": "audio_queued", "t": 0.00, "turn_id": 1, "audio_ms": 320.0, "text": "First one."},
        {"type": "audio_queued", "t": 0.01, "turn_id": 1, "audio_ms": 320.0, "text": "Second one."},
    ] + [media(0.02 + 0.01 * k) for k in range(4)]
    path = tmp_path / "call.jsonl.gz"
    write_recording(path, {"call_id": "CA1", "provider": "twilio", "started_at": 0.0, "settings": {}}, lines)
    timeline = build_timeline(read_recording(path))
    first, second = timeline.sentences
    assert first.start == pytest.approx(0.02) and first.end == pytest.approx(0.34)
    assert second.start == pytest.approx(0.34) and second.end == pytest.approx(0.66)
