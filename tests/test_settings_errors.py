"""A setting the server cannot run with stops `bargein serve` with one line naming its environment variable;
an unreachable LLM_BASE_URL is only a start-up warning."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from app.settings import Settings, SettingsError, describe_error, load_settings
from tests.conftest import free_port
from tests.test_cli import SERVE, serve_env, serving


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MAX_CALLS", "abc", "MAX_CALLS must be an integer, got 'abc'"),
        ("MAX_CALLS", "0", "MAX_CALLS must be >= 1, got '0'"),
        ("IDLE_TIMEOUT_S", "-5", "IDLE_TIMEOUT_S must be > 0, got '-5'"),
        ("PUBLIC_URL", "ftp://agent.example.com", "PUBLIC_URL must be an absolute http(s) URL"),
        ("TTS_VOICE", "no-such-voice", "TTS_VOICE must be a voice espeak-ng knows"),
        ("API_DOCS", "maybe", "API_DOCS must be a boolean"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'"),
    ],
)
def test_bad_setting_stops_serve_with_one_line_naming_the_variable(
    name: str, value: str, expected: str, tmp_path: Path
) -> None:
    env = serve_env(**{name: value})
    done = subprocess.run([*SERVE, "--port", str(free_port())], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert name in lines[0] and expected in lines[0], lines[0]
    assert repr(value) in lines[0], lines[0]
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout


def test_every_field_error_names_its_variable() -> None:
    """Generic over Settings: any field given a value of the wrong type is reported by its variable name."""
    for field, info in Settings.model_fields.items():
        if info.annotation is str:
            continue  # any string parses (PUBLIC_URL and LOG_LEVEL are checked above)
        with pytest.raises(ValidationError) as caught:
            Settings(_env_file=None, **{field: "not-a-value"})  # type: ignore[arg-type]
        [error] = caught.value.errors()
        message = describe_error(error)
        assert message.startswith(f"{field.upper()} must be "), message
        assert "'not-a-value'" in message and "\n" not in message


def test_load_settings_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORT", "1234")
    monkeypatch.setenv("HOST", "0.0.0.0")
    settings = load_settings(port=4321, host="127.0.0.1")
    assert (settings.port, settings.host) == (4321, "127.0.0.1")
    monkeypatch.setenv("MAX_CALLS", "-3")
    with pytest.raises(SettingsError, match=r"^MAX_CALLS must be >= 1, got '-3'$"):
        load_settings()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_llm_base_url_is_a_startup_warning_not_a_failure(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{closed_port()}/v1"
    port = free_port()
    with serving(tmp_path, ["--port", str(port), "--host", "127.0.0.1"], serve_env(LLM_BASE_URL=base)) as url:
        assert httpx.get(f"{url}/healthz", trust_env=False).status_code == 200
        log = tmp_path / "stderr.log"
        for _ in range(50):  # the probe runs off the start-up path, within its 2 s timeout
            if "LLM_BASE_URL" in log.read_text():
                break
            time.sleep(0.1)
    [line] = [ln for ln in log.read_text().splitlines() if "LLM_BASE_URL" in ln]
    assert "WARNING" in line and base in line and "cannot be reached" in line
