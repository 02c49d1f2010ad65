"""What every loopback vendor HTTP server in app/edge/ shares: its life on 127.0.0.1 and its failure mode.

Each server (the OpenAI-compatible chat completions in llm_server.py, `/audio/speech` in
openai_speech_server.py) speaks its vendor's wire protocol in its own module; this base starts and stops the
asyncio server, says which port and base URL it got, and holds the failure mode a test sets (`mode`, checked
against the server's own pattern so a typo in a test fails loudly instead of serving "ok").
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from types import TracebackType
from typing import ClassVar, Self


class HttpLoopback(ABC):
    """Start / stop / mode for a loopback HTTP server; subclasses write `_handle` and `_end_connections`."""

    MODES: ClassVar[re.Pattern[str]]  # every mode the server knows, e.g. "ok|dead|http_error=(\d{3})"

    def __init__(self, mode: str, host: str, port: int) -> None:
        self.mode = mode
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if not self.MODES.fullmatch(value):
            raise ValueError(f"unknown mode {value!r}")
        self._mode = value

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        # Since 3.12 wait_closed() also waits for open connections, so they are ended first.
        await self._end_connections()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @abstractmethod
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until the client or the server closes it."""

    @abstractmethod
    async def _end_connections(self) -> None:
        """End every open connection (the server has stopped accepting new ones)."""
