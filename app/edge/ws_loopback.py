"""What every loopback vendor WebSocket server in app/edge/ shares: its life on 127.0.0.1.

Each server (Deepgram's `/v1/listen`, ElevenLabs' `stream-input`, ...) speaks its vendor's wire protocol in its
own module; this base only starts and stops the `websockets` server, keeps the open sockets so a test can drop
them all at once (`kill`: a crashed vendor, a cut network), and says which port it got.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response


class WsLoopback(ABC):
    """Start / stop / kill for a loopback WebSocket server; subclasses write `_handle` and may write `_check`."""

    _ws_logger: logging.Logger | None = None  # websockets' own logger for this server (None: its default)

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: Server | None = None
        self._live: set[ServerConnection] = set()  # subclasses add and discard their open sockets

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        port: int = list(self._server.sockets)[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await serve(self._handle, self._host, self._port, process_request=self._check,
                                   ping_interval=None, logger=self._ws_logger)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def kill(self) -> None:
        """Drop every open socket now, without a close frame (a crashed server, a cut network)."""
        for ws in list(self._live):
            ws.transport.abort()

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        """The handshake: None accepts it, a response refuses it."""
        return None

    @abstractmethod
    async def _handle(self, ws: ServerConnection) -> None:
        """One vendor connection, from the accepted handshake to its close (the vendor's wire protocol)."""
