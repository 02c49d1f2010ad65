"""UnstartedStreams: caps on streams without a valid start, per client address and in total."""

from __future__ import annotations

from app.call.admission import Refused, Slot, UnstartedStreams


def admit(streams: UnstartedStreams, address: str, per_address: int = 2, total: int = 3) -> Slot | Refused:
    return streams.admit(address, per_address, total)


def test_an_address_is_refused_past_its_cap_and_admitted_again_once_a_slot_is_released() -> None:
    streams = UnstartedStreams()
    a, b = admit(streams, "10.0.0.1"), admit(streams, "10.0.0.1")
    assert isinstance(a, Slot) and isinstance(b, Slot)
    assert admit(streams, "10.0.0.1") == Refused("address", 2, 2)
    a.release()
    assert streams.open_from("10.0.0.1") == 1
    assert isinstance(admit(streams, "10.0.0.1"), Slot)


def test_other_addresses_are_untouched_by_one_address_at_its_cap() -> None:
    streams = UnstartedStreams()
    for _ in range(2):
        assert isinstance(admit(streams, "203.0.113.9"), Slot)
    assert isinstance(admit(streams, "203.0.113.9"), Refused)
    assert isinstance(admit(streams, "198.51.100.7"), Slot)


def test_the_total_cap_holds_across_addresses() -> None:
    streams = UnstartedStreams()
    slots = [admit(streams, f"10.0.0.{i}") for i in range(3)]
    assert all(isinstance(s, Slot) for s in slots)
    assert admit(streams, "10.0.0.99") == Refused("total", 3, 3)
    assert streams.total == 3 and streams.addresses == 3


def test_release_is_idempotent_and_forgets_empty_addresses() -> None:
    streams = UnstartedStreams()
    slot = admit(streams, "10.0.0.1")
    assert isinstance(slot, Slot) and slot.held
    slot.release()
    slot.release()  # the start and the close both release: counted once
    assert not slot.held
    assert streams.total == 0 and streams.addresses == 0 and streams.open_from("10.0.0.1") == 0


def test_a_refusal_takes_no_slot() -> None:
    streams = UnstartedStreams()
    for _ in range(5):
        admit(streams, "10.0.0.1", per_address=1)
    assert streams.total == 1
