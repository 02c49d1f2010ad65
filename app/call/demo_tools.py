"""The embedded demo agent's two tools: a read (`check_opening_hours`) and a mutation (`book_table`).

create_app() registers them when the LLM is the embedded scripted one (no LLM_BASE_URL and no tools of the
application's own); the scripted LLM calls them from its intent table (providers/llm/scripted.py): an hours
question reads the hours, a booking that names a day books it. They hold nothing real: the hours are the
demo's, and the bookings live in this registry's memory, so a newcomer's first call shows a tool running (and
a barge-in cancelling a booking in flight) with no service behind it.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from app.call.tools import Tool, ToolRegistry

OPENING_HOURS = {
    "monday to friday": "9:00-17:00",
    "saturday": "10:00-14:00",
    "sunday": "closed",
}

HOURS_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
BOOKING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "day": {"type": "string", "description": "The day of the booking, e.g. Friday."},
        "time": {"type": "string", "description": "The time, e.g. 19:00 (optional)."},
        "people": {"type": "integer", "minimum": 1, "description": "How many people (optional)."},
    },
    "required": ["day"],
    "additionalProperties": False,
}


class DemoBookings:
    """The bookings the demo agent made, in memory. `delay_s` stands for the booking system's latency: a
    booking is written only at its end, so a barge-in that cancels it leaves nothing behind."""

    def __init__(self, delay_s: float = 0.3) -> None:
        self.delay_s = delay_s
        self.made: list[dict[str, Any]] = []
        self._numbers = itertools.count(1)

    async def book(self, arguments: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(self.delay_s)
        booking = {"reference": f"B{next(self._numbers)}", "day": str(arguments.get("day", "")),
                   "time": str(arguments.get("time", "")), "people": arguments.get("people")}
        self.made.append(booking)  # the commit: one step, after the last await
        return {"booked": True, **booking}


async def check_opening_hours(arguments: dict[str, Any]) -> dict[str, str]:
    return dict(OPENING_HOURS)


def demo_tools(bookings: DemoBookings | None = None) -> ToolRegistry:
    """A registry with the demo agent's two tools."""
    bookings = bookings or DemoBookings()
    return ToolRegistry([
        Tool("check_opening_hours", "Our opening hours, by day.", HOURS_SCHEMA, "read", check_opening_hours),
        Tool("book_table", "Book a table on a day (and time) for the caller.", BOOKING_SCHEMA, "mutation",
             bookings.book),
    ])
