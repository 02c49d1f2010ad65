"""CallRegistry: live and recently ended calls, in memory with a cap and a time to live."""

from __future__ import annotations

from collections import OrderedDict

from app.clock import Clock
from app.transcript import CallRecord


class CallRegistry:
    """Keeps every live call, and ended calls until they expire or the cap pushes the oldest out."""

    def __init__(self, max_records: int, ttl_s: float, clock: Clock) -> None:
        self._max = max_records
        self._ttl_s = ttl_s
        self._clock = clock
        self._records: OrderedDict[str, CallRecord] = OrderedDict()
        self._ended_at: dict[str, float] = {}
        self._live: set[str] = set()
        self.calls_total = 0

    def open(self, call_id: str, provider: str, wall_now: float) -> tuple[CallRecord, bool]:
        """The record for a starting stream, and whether the call is new (False when a stream reconnects)."""
        self.prune()
        record = self._records.get(call_id)
        is_new = record is None or record.provider != provider
        if record is None or record.provider != provider:
            record = CallRecord(call_id=call_id, provider=provider, started_at=wall_now)
            self._records[call_id] = record
            self.calls_total += 1
        else:
            record.ended_at = None
            record.end_reason = None
            self._ended_at.pop(call_id, None)
        self._live.add(call_id)
        return record, is_new

    def close(self, record: CallRecord, reason: str, wall_now: float) -> None:
        self._live.discard(record.call_id)
        record.ended_at = wall_now
        record.end_reason = reason
        self._ended_at[record.call_id] = self._clock.now()
        self.prune()

    def get(self, call_id: str) -> CallRecord | None:
        self.prune()
        return self._records.get(call_id)

    @property
    def active(self) -> int:
        return len(self._live)

    def prune(self) -> None:
        now = self._clock.now()
        for call_id, ended in list(self._ended_at.items()):
            if now - ended > self._ttl_s:
                self._drop(call_id)
        # The cap only evicts ended calls: a live call is never forgotten.
        if len(self._records) > self._max:
            for call_id in [c for c in self._records if c not in self._live]:
                if len(self._records) <= self._max:
                    break
                self._drop(call_id)

    def _drop(self, call_id: str) -> None:
        self._records.pop(call_id, None)
        self._ended_at.pop(call_id, None)
