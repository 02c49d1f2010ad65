"""UnstartedStreams: how many media streams are open without having presented a valid `start`.

A stream costs a socket, a task and a timer from the upgrade on, but until its `start` carries a valid
per-call token anyone could have opened it. The cap is on those streams only, per client address and in
total: the providers' media servers come from a few addresses and carry many calls each, and a started
stream is bounded by MAX_CALLS already. A genuine stream holds its slot for one round trip (the provider
sends `start` right after the upgrade); a stream that never starts holds it until the start deadline
closes it.

Pure bookkeeping, no I/O and no clock: `routes/media.py` asks `admit()` before accepting the upgrade and
releases the slot when the session has a record (the stream started) or the socket closes, whichever is first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Refused:
    """Why an upgrade was refused: the address's cap or the server-wide cap was reached."""

    scope: Literal["address", "total"]
    open: int  # unstarted streams open in that scope
    cap: int


class Slot:
    """One admitted, not yet started stream. `release()` is idempotent."""

    __slots__ = ("address", "_owner")

    def __init__(self, owner: UnstartedStreams, address: str) -> None:
        self.address = address
        self._owner: UnstartedStreams | None = owner

    @property
    def held(self) -> bool:
        return self._owner is not None

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._release(self.address)


class UnstartedStreams:
    """Counts unstarted streams per address and in total; refuses past either cap."""

    def __init__(self) -> None:
        self._by_address: dict[str, int] = {}  # only addresses with at least one open unstarted stream
        self.total = 0

    def admit(self, address: str, per_address: int, total: int) -> Slot | Refused:
        """A slot for one more unstarted stream from `address`, or why not."""
        here = self._by_address.get(address, 0)
        if here >= per_address:
            return Refused("address", here, per_address)
        if self.total >= total:
            return Refused("total", self.total, total)
        self._by_address[address] = here + 1
        self.total += 1
        return Slot(self, address)

    def open_from(self, address: str) -> int:
        return self._by_address.get(address, 0)

    @property
    def addresses(self) -> int:
        return len(self._by_address)

    def _release(self, address: str) -> None:
        left = self._by_address[address] - 1
        if left:
            self._by_address[address] = left
        else:
            del self._by_address[address]
        self.total -= 1
