"""`bargein call` against the real server under uvicorn: the run() function, as the CLI calls it."""

from __future__ import annotations

import argparse
import io
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.callcli import add_arguments, run
from app.offline.corpus import corpus_root

CLIP = "speech/read_01_libri3982F.wav"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bargein call")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def read(path: Path) -> tuple[int, int, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), np.frombuffer(w.readframes(w.getnframes()), "<i2")


@pytest.fixture(autouse=True)
def no_developer_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's is read
    for name in ("TWILIO_AUTH_TOKEN", "PLIVO_AUTH_TOKEN", "TWILIO_WEBHOOK_KEYS", "ADMIN_TOKEN", "PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
def test_call_barges_in_and_writes_what_was_heard(server_factory: Any, tmp_path: Path, provider: str) -> None:
    srv = server_factory()
    heard = tmp_path / "heard.wav"
    out = io.StringIO()
    args = parse(srv.url, "--say", str(corpus_root() / CLIP), "--at", "1.5", "-o", str(heard),
                 "--provider", provider, "--listen", "3", "--stereo")
    assert run(args, out) == 0
    text = out.getvalue()
    assert text.count("clear at +") == 1, text
    assert "server record (GET /calls/{id}):" in text and '"bargeins": [' in text
    rate, channels, samples = read(heard)
    assert (rate, channels) == (8000, 2)
    agent, caller = samples[0::2].astype(float), samples[1::2].astype(float)
    # The agent was heard before the caller spoke, and was silent for a while after the clear.
    spoke = int(np.flatnonzero(np.abs(caller) > 500)[0])
    assert np.sqrt(np.mean(agent[:spoke] ** 2)) > 100
    after_clear = agent[spoke + 3200 : spoke + 8000]  # 0.4-1.0 s after the caller started speaking
    assert np.abs(after_clear).max() < 50, "the agent kept talking over the caller"


def test_call_with_auth_signs_the_webhook_and_reads_the_record(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory(twilio_auth_token="tw-secret", admin_token="adm")
    out = io.StringIO()
    args = parse(srv.url, "--say", str(corpus_root() / CLIP), "--at", "1", "-o", str(tmp_path / "h.wav"),
                 "--listen", "1", "--auth-token", "tw-secret", "--admin-token", "adm")
    assert run(args, out) == 0
    assert '"provider": "twilio"' in out.getvalue()
    # Without the admin token the record is refused: what the emulator saw is all there is.
    out = io.StringIO()
    args = parse(srv.url, "--say", str(corpus_root() / CLIP), "--at", "1", "-o", str(tmp_path / "h2.wav"),
                 "--listen", "1", "--auth-token", "tw-secret")
    assert run(args, out) == 0
    assert "server record: not available (pass --admin-token" in out.getvalue()
    assert "clear at +" in out.getvalue()


def test_call_refused_without_the_signature(server_factory: Any, tmp_path: Path, capsys: Any) -> None:
    srv = server_factory(twilio_auth_token="tw-secret", admin_token="adm")
    args = parse(srv.url, "--say", str(corpus_root() / CLIP), "-o", str(tmp_path / "h.wav"))
    assert run(args, io.StringIO()) == 1
    assert "refused" in capsys.readouterr().err


def test_call_prints_the_report_url_when_the_server_records(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory(record_dir=str(tmp_path / "records"))
    out = io.StringIO()
    args = parse(srv.url, "--say", str(corpus_root() / CLIP), "--at", "1", "-o", str(tmp_path / "h.wav"),
                 "--listen", "1")
    assert run(args, out) == 0
    assert f"report: {srv.url}/calls/" in out.getvalue()
