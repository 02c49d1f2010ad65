"""CALL_STORE_URL and the rule it brings: one STREAM_TOKEN_SECRET for every replica that may serve a call."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.metrics import Metrics
from app.settings import SettingsError, load_settings
from app.store import is_shared, open_store, safe_url
from app.store.base import StoreError
from app.store.sqlite import SqliteStore
from app.store.writer import start_writer

AUTH = {"twilio_auth_token": "t", "public_url": "https://agent.example.com"}


def settings(**values: object) -> object:
    return load_settings(_env_file=None, **values)


def test_the_default_is_a_sqlite_file_in_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALL_STORE_URL", raising=False)
    s = load_settings(_env_file=None)
    assert s.call_store_url == "sqlite:///./bargein-calls.db"
    store = open_store(s.call_store_url)
    assert isinstance(store, SqliteStore) and store.path == "./bargein-calls.db"
    assert open_store("memory://") is None
    assert open_store("sqlite:////var/lib/bargein/calls.db").path == "/var/lib/bargein/calls.db"  # type: ignore[union-attr]


@pytest.mark.parametrize("url", ["mysql://h/db", "sqlite:///", "postgresq://user:hunter2@h/db", "calls.db"])
def test_an_unknown_store_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(SettingsError) as refused:
        settings(call_store_url=url)
    assert "CALL_STORE_URL" in str(refused.value)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("values", "refused"),
    [
        ({"call_store_url": "postgresql://u:pw@db/bargein"}, True),  # replicas on other hosts
        ({"workers": 2}, True),  # processes on this one
        ({"workers": 1}, False),
        ({"call_store_url": "sqlite:////data/calls.db", "workers": 1}, False),
        ({"call_store_url": "postgresql://u:pw@db/bargein", "stream_token_secret": "s"}, False),
        ({"workers": 4, "stream_token_secret": "s"}, False),
    ],
)
def test_stream_token_secret_is_required_when_several_replicas_may_serve(values: dict[str, object],
                                                                          refused: bool) -> None:
    if refused:
        with pytest.raises(SettingsError, match="STREAM_TOKEN_SECRET must be set") as error:
            settings(**AUTH, **values)
        assert "pw@" not in str(error.value)
    else:
        settings(**AUTH, **values)
    settings(**values)  # without provider auth there are no tokens to agree on


def test_shared_and_safe_urls() -> None:
    assert is_shared("postgresql://h/db") and is_shared("postgres://h/db")
    assert not is_shared("sqlite:///x.db") and not is_shared("memory://")
    assert safe_url("postgresql://bargein:s3cret@db:5432/calls") == "postgresql://bargein:***@db:5432/calls"


def test_a_default_store_that_cannot_open_falls_back_to_memory_an_explicit_one_stops_the_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the store's directory should be")
    monkeypatch.chdir(blocked.parent)
    monkeypatch.delenv("CALL_STORE_URL", raising=False)
    default = load_settings(_env_file=None)
    object.__setattr__(default, "call_store_url", "sqlite:///./not-a-dir/calls.db")  # as if it were the default
    assert asyncio.run(start_writer(default, Metrics())) is None
    explicit = load_settings(_env_file=None, call_store_url="sqlite:///./not-a-dir/calls.db")
    with pytest.raises(StoreError, match="cannot open the SQLite store"):
        asyncio.run(start_writer(explicit, Metrics()))
