"""CallRegistry: live and recently ended calls, in memory with a cap and a time to live.

A call is live while exactly one media stream owns it. The owner is identified by a key the server makes for
each stream (never by anything in the `start` frame, which the peer chooses), so a second stream that names a
live call is refused without touching its record, and only the owning stream's end can end the call.

With a call store (CALL_STORE_URL, app/store/), the registry still holds the live records (the call changes
them on the event loop and never waits for a store), and hands each opening and closing to the StoreWriter,
which copies the record behind the call. Reads for people (`lookup`, `recent_shared`) ask the store as well,
so calls that another replica served, or that this process served before a restart, are found; a record held
here wins over the stored copy, since it is the newer one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from app.clock import Clock
from app.store.writer import StoreWriter
from app.transcript import CallRecord

logger = logging.getLogger(__name__)

STORE_READ_TIMEOUT_S = 5.0  # a read for /calls that the store cannot answer in time answers from memory


class CallInUse(Exception):
    """Another stream owns this call while it is live; the new stream must be refused."""

    def __init__(self, call_id: str) -> None:
        super().__init__(f"call {call_id} already has a live stream")
        self.call_id = call_id


class CallRegistry:
    """Keeps every live call, and ended calls until they expire or the cap pushes the oldest out."""

    def __init__(self, max_records: int, ttl_s: float, clock: Clock, writer: StoreWriter | None = None) -> None:
        self.writer = writer
        self._max = max_records
        self._ttl_s = ttl_s
        self._clock = clock
        self._records: OrderedDict[str, CallRecord] = OrderedDict()
        self._ended_at: dict[str, float] = {}
        self._owners: dict[str, str] = {}  # live call id -> the key of the stream that owns it
        self.calls_total = 0

    def open(self, call_id: str, provider: str, stream_key: str, wall_now: float) -> tuple[CallRecord, bool]:
        """The record for a starting stream, and whether the call is new (False when a stream reconnects).

        Raises CallInUse, changing nothing, while another stream owns the call: a provider runs one stream per
        call (telephony-protocols.md §1.4, §2.3), so a second one is a stranger or a confused peer, and letting it
        in would give it the first caller's conversation. A stream that reconnects after the owner has closed
        gets the same record back.
        """
        self.prune()
        owner = self._owners.get(call_id)
        if owner is not None and owner != stream_key:
            raise CallInUse(call_id)
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
        self._owners[call_id] = stream_key
        if self.writer is not None:
            self.writer.opened(record, fresh=is_new)
        return record, is_new

    def close(self, record: CallRecord, stream_key: str, reason: str, wall_now: float) -> bool:
        """End the call if `stream_key` owns it; False (and nothing changed) for any other stream."""
        if self._owners.get(record.call_id) != stream_key:
            return False
        del self._owners[record.call_id]
        record.ended_at = wall_now
        record.end_reason = reason
        self._ended_at[record.call_id] = self._clock.now()
        if self.writer is not None:
            self.writer.closed(record)
        self.prune()
        return True

    def get(self, call_id: str) -> CallRecord | None:
        self.prune()
        return self._records.get(call_id)

    def recent(self, limit: int) -> list[CallRecord]:
        """Up to `limit` kept records, newest first (by start, then by arrival); changes nothing but expiry."""
        self.prune()
        records = list(reversed(self._records.values()))  # insertion order: latest opened last
        records.sort(key=lambda r: r.started_at, reverse=True)  # stable: equal starts keep newest-first
        return records[:max(limit, 0)]

    async def prefetch(self, call_id: str) -> None:
        """Before `open`: bring a call this process does not hold in from the store, if the store has it.

        A stream that reconnects to another replica, or to this one after a restart, then continues the stored
        call (its turns, its numbering, the conversation the LLM is given) instead of starting a new record
        under the same id, whose turn rows would overwrite the stored ones. Held as an ended call until
        `open` reopens it. A store that fails or is slow leaves the call new; nothing is raised.
        """
        if self.writer is None or call_id in self._records:
            return
        try:
            async with asyncio.timeout(STORE_READ_TIMEOUT_S):
                stored = await self.writer.store.get_call(call_id)
        except Exception as exc:
            self.writer.failed("read", exc)
            return
        if stored is None or call_id in self._records:  # another stream may have opened it meanwhile
            return
        if stored.ended_at is None:
            # Never closed where it ran: that replica was killed, or it still serves the call (which the token
            # rule stops from reaching here twice when auth is on). Continued from what was stored.
            stored.ended_at, stored.end_reason = stored.started_at, "lost"
        self._records[call_id] = stored
        self._ended_at[call_id] = self._clock.now()

    async def lookup(self, call_id: str) -> CallRecord | None:
        """The call's record: held here, else from the store (None when neither has it, or the store fails)."""
        record = self.get(call_id)
        if record is not None or self.writer is None:
            return record
        try:
            async with asyncio.timeout(STORE_READ_TIMEOUT_S):
                return await self.writer.store.get_call(call_id)
        except Exception as exc:
            self.writer.failed("read", exc)
            return None

    async def recent_shared(self, limit: int) -> list[CallRecord]:
        """Like `recent`, over the records held here and those in the store (held ones win, ordered as `recent`)."""
        local = self.recent(limit)
        if self.writer is None:
            return local
        try:
            async with asyncio.timeout(STORE_READ_TIMEOUT_S):
                stored = await self.writer.store.recent_calls(limit)
        except Exception as exc:
            self.writer.failed("read", exc)
            return local
        held = {r.call_id for r in local} | set(self._records)
        merged = local + [r for r in stored if r.call_id not in held]
        merged.sort(key=lambda r: r.started_at, reverse=True)  # stable: held records keep their order
        return merged[:max(limit, 0)]

    def is_live(self, call_id: str) -> bool:
        return call_id in self._owners

    @property
    def active(self) -> int:
        return len(self._owners)

    def prune(self) -> None:
        now = self._clock.now()
        for call_id, ended in list(self._ended_at.items()):
            if now - ended > self._ttl_s:
                self._drop(call_id)
        # The cap only evicts ended calls: a live call is never forgotten.
        if len(self._records) > self._max:
            for call_id in [c for c in self._records if c not in self._owners]:
                if len(self._records) <= self._max:
                    break
                self._drop(call_id)

    def _drop(self, call_id: str) -> None:
        self._records.pop(call_id, None)
        self._ended_at.pop(call_id, None)
