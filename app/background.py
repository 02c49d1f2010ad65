"""BackgroundTask: a coroutine that runs beside a block of code and is cancelled when the block ends.

The benchmark and the hostile-traffic tools watch things while calls run (a health poller, a loop monitor,
frames aimed at live calls); each is `async with Watcher(...) as w:` with its loop in `_run`.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from typing import Self


class BackgroundTask(ABC):
    """Subclasses implement `_run`; entering starts it as a task, leaving cancels it and waits for it."""

    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @abstractmethod
    async def _run(self) -> None:
        """The watcher's loop; runs until cancelled."""
