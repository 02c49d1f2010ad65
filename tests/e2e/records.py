"""Reading a call's record from the real server while the call goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx


async def record_when(url: str, call_id: str, done: Callable[[dict[str, Any]], Any],
                      timeout_s: float = 5.0) -> dict[str, Any]:
    """GET /calls/{call_id} every 50 ms until `done(record)` is true; fails the test after `timeout_s`."""
    record: dict[str, Any] = {}
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(int(timeout_s / 0.05)):
            record = (await client.get(f"{url}/calls/{call_id}")).json()
            if done(record):
                return record
            await asyncio.sleep(0.05)
    raise AssertionError(f"the record never got there: {record}")
