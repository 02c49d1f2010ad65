"""GET /calls/{id}/report over the real server: the page for a recorded call, 404 otherwise, the admin token."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx

from app.record.format import recording_path

CALL = "CA0123456789abcdef0123456789abcdef"


def test_serves_the_report_of_a_recorded_call(server_factory: Any, short_call: Path, tmp_path: Path) -> None:
    shutil.copy(short_call, recording_path(tmp_path, CALL))
    srv = server_factory(record_dir=str(tmp_path))
    with httpx.Client(base_url=srv.url, timeout=30, trust_env=False) as http:
        got = http.get(f"/calls/{CALL}/report")
        assert got.status_code == 200, got.text[:200]
        assert got.headers["content-type"].startswith("text/html")
        assert "1 barge-in, 0 talk-over &gt; 300 ms" in got.text and "Plotly" in got.text
        assert http.get("/calls/CAnothere/report").status_code == 404
        assert http.get("/calls/..%2F..%2Fetc%2Fpasswd/report").status_code == 404


def test_unreadable_recording_is_422(server_factory: Any, tmp_path: Path) -> None:
    recording_path(tmp_path, CALL).write_bytes(b"not gzip at all")
    srv = server_factory(record_dir=str(tmp_path))
    got = httpx.get(f"{srv.url}/calls/{CALL}/report", timeout=30, trust_env=False)
    assert got.status_code == 422


def test_404_when_recording_is_off(server_factory: Any) -> None:
    srv = server_factory()
    got = httpx.get(f"{srv.url}/calls/{CALL}/report", timeout=30, trust_env=False)
    assert got.status_code == 404 and "RECORD_DIR" in got.text


def test_needs_the_admin_token_when_auth_is_on(server_factory: Any, short_call: Path, tmp_path: Path) -> None:
    shutil.copy(short_call, recording_path(tmp_path, CALL))
    srv = server_factory(record_dir=str(tmp_path), twilio_auth_token="tw-secret", admin_token="adm")
    url = f"{srv.url}/calls/{CALL}/report"
    assert httpx.get(url, timeout=30, trust_env=False).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=30, trust_env=False).status_code == 401
    got = httpx.get(url, headers={"Authorization": "Bearer adm"}, timeout=30, trust_env=False)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/html")
