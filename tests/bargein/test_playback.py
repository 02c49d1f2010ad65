"""PlaybackLedger on a fake clock: acknowledgements move the heard cursor; clears freeze it."""

from __future__ import annotations

from app.bargein.playback import PlaybackLedger


def send_chunks(ledger: PlaybackLedger, turn_id: int, n: int, ms: float, now: float) -> list[str]:
    return [ledger.chunk_sent(turn_id, ms, now) for _ in range(n)]


def test_heard_is_last_ack_plus_real_time_capped_at_next_marker() -> None:
    ledger = PlaybackLedger()
    names = send_chunks(ledger, 1, 5, 160.0, now=10.0)
    assert ledger.ack(names[0], 10.16)
    assert ledger.ack(names[1], 10.32)
    # 50 ms after the second ack: 320 + 50
    assert abs(ledger.heard(10.37).audio_ms - 370.0) < 1e-6
    # never past the next unacknowledged marker, however late the clear
    assert ledger.heard(20.0).audio_ms == 480.0
    assert ledger.heard(10.37).acked_ms == 320.0


def test_before_any_ack_the_estimate_starts_at_the_first_send() -> None:
    ledger = PlaybackLedger()
    send_chunks(ledger, 7, 3, 160.0, now=5.0)
    heard = ledger.heard(5.1)
    assert heard.turn_id == 7
    assert abs(heard.audio_ms - 100.0) < 1e-6


def test_underrun_counts_from_when_the_next_chunk_was_sent() -> None:
    ledger = PlaybackLedger()
    first = ledger.chunk_sent(1, 160.0, 0.0)
    assert ledger.ack(first, 0.16)
    ledger.chunk_sent(1, 160.0, 1.0)  # the TTS was slow: the edge sat idle from 0.16 to 1.0
    assert abs(ledger.heard(1.05).audio_ms - 210.0) < 1e-6


def test_clear_freezes_the_position_and_ignores_echoes_of_cleared_marks() -> None:
    ledger = PlaybackLedger()
    names = send_chunks(ledger, 1, 4, 160.0, now=0.0)
    ledger.ack(names[0], 0.16)
    heard = ledger.clear(0.2)
    assert abs(heard.audio_ms - 200.0) < 1e-6
    assert not ledger.playing(0.2)
    # Twilio echoes every pending mark after a clear: none of them is heard audio
    for name in names[1:]:
        assert not ledger.ack(name, 0.21)
    new = ledger.chunk_sent(2, 160.0, 0.5)
    assert new.startswith(f"g{ledger.generation}s")
    assert ledger.playing(0.5)


def test_unacknowledged_checkpoints_cannot_keep_the_call_speaking_forever() -> None:
    ledger = PlaybackLedger(ack_grace_s=1.0)
    send_chunks(ledger, 1, 2, 160.0, now=0.0)
    assert ledger.playing(0.3)
    assert ledger.playing(1.2)
    assert not ledger.playing(1.4)  # 320 ms of audio + 1 s grace


def test_an_ack_implies_every_earlier_marker_played() -> None:
    ledger = PlaybackLedger()
    names = send_chunks(ledger, 1, 3, 100.0, now=0.0)
    assert ledger.ack(names[2], 0.3)
    assert not ledger.ack(names[0], 0.31)
    assert not ledger.playing(0.31)
    assert ledger.heard(0.4).audio_ms == 300.0


def test_pacing_sees_what_is_buffered_at_the_edge() -> None:
    ledger = PlaybackLedger()
    send_chunks(ledger, 1, 3, 100.0, now=0.0)
    assert abs(ledger.buffered_ms(0.0) - 300.0) < 1e-6
    assert abs(ledger.buffered_ms(0.25) - 50.0) < 1e-6
    assert ledger.buffered_ms(1.0) == 0.0
