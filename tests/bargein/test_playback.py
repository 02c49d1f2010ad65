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


# --- the round trip: an edge 40 ms away each way -----------------------------------------------------------------

ONE_WAY = 0.040


def play_over_network(ledger: PlaybackLedger, n: int, ms: float, now: float, ups: list[float]) -> list[str]:
    """Send `n` chunks at `now`; the edge gets them ONE_WAY later, plays them back to back, and each ack takes
    `ups[k]` to come back. Acks are fed in order; returns the marker names."""
    names = send_chunks(ledger, 1, n, ms, now)
    for k, name in enumerate(names):
        played = now + ONE_WAY + (k + 1) * ms / 1000.0
        assert ledger.ack(name, played + ups[k % len(ups)])
    return names


def test_each_ack_is_a_round_trip_sample_and_the_estimate_is_their_median() -> None:
    ledger = PlaybackLedger()
    assert ledger.rtt_s == 0.0
    # Buffered audio does not count: the planned end of each chunk already accounts for the queue before it.
    play_over_network(ledger, 5, 160.0, now=0.0, ups=[0.040, 0.025, 0.055, 0.040, 0.300])
    assert abs(ledger.rtt_s - 0.080) < 1e-9  # median of 80, 65, 95, 80 and one very late ack (340)


def test_an_idle_edge_gives_send_to_ack_minus_the_chunk() -> None:
    ledger = PlaybackLedger()
    for k in range(3):  # each chunk sent after the previous one played out
        name = ledger.chunk_sent(1, 100.0, 5.0 + k)
        assert ledger.ack(name, 5.0 + k + 0.1 + 0.08)
    assert abs(ledger.rtt_s - 0.080) < 1e-9


def test_the_clear_counts_the_audio_played_until_it_reaches_the_edge() -> None:
    ledger = PlaybackLedger()
    names = send_chunks(ledger, 1, 10, 160.0, now=0.0)
    # The edge starts playing at 0.04; marker k (at 160 k ms) plays at 0.04 + 0.16 k, its ack is here 40 ms later.
    for k in range(3):
        assert ledger.ack(names[k], ONE_WAY + 0.16 * (k + 1) + ONE_WAY)
    now = 0.60  # we clear here: the edge has played 560 ms so far, and will have played 600 ms when the clear lands
    heard = ledger.clear(now)
    assert abs(heard.rtt_ms - 80.0) < 1e-6
    assert abs(heard.audio_ms - 600.0) < 1e-6
    assert heard.acked_ms == 480.0


def test_the_estimate_waits_for_three_acks() -> None:
    # One or two acks cannot tell a round trip from an edge that was slow to start: no correction yet.
    ledger = PlaybackLedger()
    names = send_chunks(ledger, 1, 10, 160.0, now=0.0)
    assert ledger.ack(names[0], ONE_WAY + 0.16 + ONE_WAY)
    assert ledger.ack(names[1], ONE_WAY + 0.32 + ONE_WAY)
    assert ledger.rtt_s == 0.0
    assert ledger.ack(names[2], ONE_WAY + 0.48 + ONE_WAY)
    assert abs(ledger.rtt_s - 0.080) < 1e-9
    # Uncorrected, the cut would be the last ack (480 ms) + 40 ms since it arrived = 520 ms: a round trip short.
    assert abs(ledger.clear(0.60).audio_ms - 600.0) < 1e-6


def test_one_slow_ack_does_not_move_the_cut() -> None:
    ledger = PlaybackLedger()
    names = send_chunks(ledger, 1, 10, 160.0, now=0.0)
    for k in range(5):
        assert ledger.ack(names[k], ONE_WAY + 0.16 * (k + 1) + ONE_WAY)
    assert ledger.ack(names[5], ONE_WAY + 0.96 + ONE_WAY + 0.060)  # this one met 60 ms of extra delay
    assert abs(ledger.rtt_s - 0.080) < 1e-9
    assert abs(ledger.clear(1.10).audio_ms - 1100.0) < 1e-6


def test_a_chunk_sent_to_an_idle_edge_starts_when_it_arrives() -> None:
    ledger = PlaybackLedger()
    play_over_network(ledger, 3, 160.0, now=0.0, ups=[ONE_WAY])
    ledger.chunk_sent(1, 160.0, 1.0)  # the TTS was slow: the edge sat idle, and gets this at 1.04
    # We clear at 1.05; it lands at 1.09: 50 ms of the fourth chunk have played.
    assert abs(ledger.clear(1.05).audio_ms - 480.0 - 50.0) < 1e-6


def test_a_lost_ack_stops_the_estimate_a_round_trip_past_its_marker() -> None:
    ledger = PlaybackLedger()
    names = send_chunks(ledger, 1, 6, 160.0, now=0.0)
    for k in range(3):
        assert ledger.ack(names[k], ONE_WAY + 0.16 * (k + 1) + ONE_WAY)
    # The ack of marker 4 (640 ms) never comes: whatever the time, the cut stays within a round trip of it.
    assert abs(ledger.clear(5.0).audio_ms - 720.0) < 1e-6


def test_heard_now_is_the_edge_position_now_and_loopback_is_unchanged() -> None:
    ledger = PlaybackLedger()
    names = send_chunks(ledger, 1, 10, 160.0, now=0.0)
    for k in range(3):
        assert ledger.ack(names[k], ONE_WAY + 0.16 * (k + 1) + ONE_WAY)
    assert abs(ledger.heard(0.60).audio_ms - 560.0) < 1e-6  # the edge started 40 ms late
