"""CallerAudio: the caller's recent audio cut out by call time, bounded."""

from __future__ import annotations

from app.call.caller_audio import CallerAudio


def frames(n: int, start: float = 1.0) -> list[tuple[bytes, float]]:
    """n 20 ms frames, frame i filled with byte i, arriving at start + 0.02 * (i + 1)."""
    return [(bytes([i % 256]) * 160, start + 0.02 * (i + 1)) for i in range(n)]


def test_between_cuts_the_audio_of_a_stretch_of_call_time() -> None:
    audio = CallerAudio(keep_s=5.0)
    for ulaw, at in frames(50):
        audio.push(ulaw, at)
    # frame 10 covers 1.20-1.22 s, frame 14 1.28-1.30 s
    cut = audio.between(1.20, 1.30)
    assert len(cut) == 800
    assert cut[:160] == bytes([10]) * 160 and cut[-160:] == bytes([14]) * 160


def test_what_is_kept_is_bounded_and_older_audio_is_clipped() -> None:
    audio = CallerAudio(keep_s=1.0)
    for ulaw, at in frames(500):  # 10 s
        audio.push(ulaw, at)
    assert 1.0 <= audio.kept_s <= 2.0
    whole = audio.between(0.0, 100.0)
    assert len(whole) == int(audio.kept_s * 8000)
    assert whole[-1] == 499 % 256
    assert audio.between(1.0, 3.0) == b"", "audio older than what is kept is gone"
