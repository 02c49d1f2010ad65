"""An ASGI app under uvicorn on 127.0.0.1 in a thread of its own: the real server, in-process.

The test suite's servers and `python -m app.replay.make_fixtures` run the app this way (the benchmark runs it
in a process of its own instead: app/bench/common.py `ServerProcess`).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal, Self

import uvicorn


class ServedApp:
    """An ASGI app under uvicorn (websockets-sansio, as `bargein serve` runs it) on 127.0.0.1, in a thread."""

    def __init__(self, app: Any, port: int = 0, lifespan: Literal["auto", "on", "off"] = "on") -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, ws="websockets-sansio", log_level="warning", lifespan=lifespan,
            # as `bargein serve` sets it: the app's own cap when it has settings, else the setting's default
            ws_max_size=getattr(getattr(getattr(app, "state", None), "settings", None), "ws_max_message_bytes", 65536),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.url = ""

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
