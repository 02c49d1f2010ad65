"""`bargein serve` hands uvicorn the WebSocket message cap (uvicorn's own default is 16 MiB)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn

from app import cli


@pytest.mark.parametrize(("env", "expected"), [(None, 65_536), ("32768", 32_768)])
def test_serve_caps_inbound_websocket_messages(
    env: str | None, expected: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no developer .env
    monkeypatch.delenv("WS_MAX_MESSAGE_BYTES", raising=False)
    if env is not None:
        monkeypatch.setenv("WS_MAX_MESSAGE_BYTES", env)
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(kwargs, app=app))
    assert cli.main(["serve", "--port", "18080"]) == 0
    assert seen["ws_max_size"] == expected
    assert seen["ws"] == "websockets-sansio"
