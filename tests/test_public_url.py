"""app/public_url.py: the base URL a webhook was called on, from literal header values (no server); and
PUBLIC_URL required with provider auth on (app/settings.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app.public_url import FirstSeen, derive_base_url, valid_host, ws_url
from app.settings import Settings, SettingsError, load_settings
from tests.conftest import free_port
from tests.test_cli import SERVE, serve_env


def test_host_only_over_plain_http() -> None:
    assert derive_base_url({"host": "agent.example.com"}, "http") == "http://agent.example.com"


def test_host_over_https_is_https_and_its_default_port_is_dropped() -> None:
    assert derive_base_url({"host": "agent.example.com:443"}, "https") == "https://agent.example.com"
    assert derive_base_url({"host": "agent.example.com:8443"}, "https") == "https://agent.example.com:8443"


def test_x_forwarded_host_and_proto_https() -> None:
    headers = {"host": "10.0.0.5:8080", "x-forwarded-host": "agent.example.com", "x-forwarded-proto": "https"}
    base = derive_base_url(headers, "http")
    assert base == "https://agent.example.com"
    assert ws_url(base) + "/twilio/stream" == "wss://agent.example.com/twilio/stream"


def test_x_forwarded_proto_alone_keeps_the_host_header() -> None:
    assert derive_base_url({"host": "agent.example.com", "x-forwarded-proto": "https"}, "http") == (
        "https://agent.example.com"
    )


def test_forwarded_rfc7239_host_and_proto() -> None:
    headers = {
        "host": "10.0.0.5:8080",
        "forwarded": "for=192.0.2.60;proto=https;host=a.example",
        "x-forwarded-host": "other.example",  # Forwarded is trusted first
        "x-forwarded-proto": "http",
    }
    assert derive_base_url(headers, "http") == "https://a.example"


def test_forwarded_quoted_values_and_case_insensitive_names() -> None:
    headers = {"host": "internal", "forwarded": 'For="[2001:db8::1]:4711";Proto=HTTPS;Host="a.example:8443"'}
    assert derive_base_url(headers, "http") == "https://a.example:8443"


def test_forwarded_without_host_falls_to_x_forwarded_host() -> None:
    headers = {"host": "internal", "forwarded": "for=192.0.2.60;proto=https", "x-forwarded-host": "b.example"}
    assert derive_base_url(headers, "http") == "https://b.example"


def test_only_the_first_value_of_comma_lists_counts() -> None:
    headers = {
        "host": "internal",
        "x-forwarded-host": "first.example, second.example",
        "x-forwarded-proto": "https, http",
    }
    assert derive_base_url(headers, "http") == "https://first.example"
    forwarded = {"host": "internal", "forwarded": "proto=https;host=one.example, proto=http;host=two.example"}
    assert derive_base_url(forwarded, "http") == "https://one.example"
    # a comma inside a quoted value does not end the first element
    quoted = {"host": "internal", "forwarded": 'for="x,y";host=one.example, host=two.example'}
    assert derive_base_url(quoted, "http") == "http://one.example"


@pytest.mark.parametrize(
    "bad",
    [
        "evil.example/path",
        "user@evil.example",
        "evil .example",
        "evil.example:99999",
        "evil.example:port",
        "[not-ipv6]:443",
        "",
        "evil.example\r\nX-Injected: 1",
    ],
)
def test_malformed_forwarded_host_falls_back_to_host(bad: str) -> None:
    assert derive_base_url({"host": "agent.example.com", "x-forwarded-host": bad}, "http") == (
        "http://agent.example.com"
    )
    assert derive_base_url({"host": "agent.example.com", "forwarded": f'host="{bad}"'}, "http") == (
        "http://agent.example.com"
    )


def test_malformed_host_header_falls_back_to_the_server_address() -> None:
    assert derive_base_url({"host": "a b"}, "http", ("127.0.0.1", 8080)) == "http://127.0.0.1:8080"
    assert derive_base_url({}, "http", ("::1", 8080)) == "http://[::1]:8080"


def test_ipv6_host_with_port() -> None:
    assert derive_base_url({"host": "[2001:db8::1]:8443"}, "https") == "https://[2001:db8::1]:8443"
    assert derive_base_url({"host": "[2001:db8::1]:443"}, "https") == "https://[2001:db8::1]"
    assert derive_base_url({"host": "internal", "forwarded": 'host="[2001:db8::2]:8080"'}, "http") == (
        "http://[2001:db8::2]:8080"
    )


def test_unknown_forwarded_proto_is_not_https() -> None:
    assert derive_base_url({"host": "a.example", "x-forwarded-proto": "gopher"}, "http") == "http://a.example"


def test_valid_host() -> None:
    for good in ("agent.example.com", "agent.example.com:8080", "192.0.2.1", "192.0.2.1:80", "[::1]", "[::1]:8080"):
        assert valid_host(good), good
    for bad in ("a/b", "a@b", "a b", "[::1", "::1", "a:", "a:0", "-a.example", "a..example"):
        assert not valid_host(bad), bad


def test_ws_url_keeps_the_path_prefix() -> None:
    assert ws_url("https://agent.example.com/voice") == "wss://agent.example.com/voice"
    assert ws_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080"


def test_first_seen_is_bounded_and_says_full_once() -> None:
    seen = FirstSeen(limit=2)
    assert [seen.note(v) for v in ("a", "a", "b", "c", "d", "a", "c")] == [
        "new", "seen", "new", "full", "seen", "seen", "seen"
    ]


# --- with provider auth on, PUBLIC_URL is required ------------------------------------------------------------


@pytest.mark.parametrize("credential", ["TWILIO_AUTH_TOKEN", "TWILIO_WEBHOOK_KEYS", "PLIVO_AUTH_TOKEN"])
def test_auth_on_without_public_url_is_one_settings_error_naming_it(
    credential: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    secret = "key_1=s3cret-value" if credential == "TWILIO_WEBHOOK_KEYS" else "s3cret-value"
    monkeypatch.setenv(credential, secret)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("PUBLIC_URL must be set") and "\n" not in message
    assert "s3cret" not in message  # the check sees every setting; it must not echo them
    monkeypatch.setenv("PUBLIC_URL", "https://agent.example.com")
    assert load_settings().public_url == "https://agent.example.com"


def test_auth_off_public_url_unset_is_empty_and_its_helpers_refuse() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.public_url == "" and not settings.auth_enabled
    with pytest.raises(RuntimeError, match="PUBLIC_URL is unset"):
        settings.public_http("/twilio/voice")


def test_serve_with_auth_and_no_public_url_stops_with_one_line(tmp_path: Path) -> None:
    env = serve_env(TWILIO_AUTH_TOKEN="s3cret-value")
    done = subprocess.run([*SERVE, "--port", str(free_port())], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "PUBLIC_URL" in lines[0] and "s3cret" not in lines[0]
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
