"""`bargein call` against the real server under uvicorn: the run() function, as the CLI calls it."""

from __future__ import annotations

import argparse
import io
import wave
from concurrent.futures import ThreadPoolExecutor
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


def test_call_barges_in_and_writes_what_was_heard(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory()
    providers = ("twilio", "plivo")
    outs = [io.StringIO() for _ in providers]
    # --listen 1 after the clip: the checks below end 1 s into it
    argv = [parse(srv.url, "--say", str(corpus_root() / CLIP), "--at", "1.5", "-o", str(tmp_path / f"{p}.wav"),
                  "--provider", p, "--listen", "1", "--stereo") for p in providers]
    # one call per provider, at once (run() is the CLI's: an event loop of its own, here one per thread)
    with ThreadPoolExecutor(len(providers)) as pool:
        codes = list(pool.map(run, argv, outs))
    assert codes == [0, 0], [o.getvalue() for o in outs]
    for provider, out in zip(providers, outs, strict=True):
        text = out.getvalue()
        assert text.count("clear at +") == 1, (provider, text)
        assert "server record (GET /calls/{id}):" in text and '"bargeins": [' in text, provider
        rate, channels, samples = read(tmp_path / f"{provider}.wav")
        assert (rate, channels) == (8000, 2)
        agent, caller = samples[0::2].astype(float), samples[1::2].astype(float)
        # The agent was heard before the caller spoke, and was silent for a while after the clear.
        spoke = int(np.flatnonzero(np.abs(caller) > 500)[0])
        assert np.sqrt(np.mean(agent[:spoke] ** 2)) > 100, provider
        after_clear = agent[spoke + 3200 : spoke + 8000]  # 0.4-1.0 s after the caller started speaking
        assert np.abs(after_clear).max() < 50, f"{provider}: the agent kept talking over the caller"


def test_call_with_auth_signs_the_webhook_and_reads_the_record(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory(twilio_auth_token="tw-secret", admin_token="adm")
    with_admin = parse(srv.url, "--say", str(corpus_root() / CLIP), "--at", "1", "-o", str(tmp_path / "h.wav"),
                       "--listen", "1", "--auth-token", "tw-secret", "--admin-token", "adm")
    # Without the admin token the record is refused: what the emulator saw is all there is.
    without = parse(srv.url, "--say", str(corpus_root() / CLIP), "--at", "1", "-o", str(tmp_path / "h2.wav"),
                    "--listen", "1", "--auth-token", "tw-secret")
    outs = [io.StringIO(), io.StringIO()]
    # the two calls at once (run() is the CLI's: an event loop of its own, here one per thread)
    with ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(run, [with_admin, without], outs))
    assert codes == [0, 0], [o.getvalue() for o in outs]
    assert '"provider": "twilio"' in outs[0].getvalue()
    assert "server record: not available (pass --admin-token" in outs[1].getvalue()
    assert "clear at +" in outs[1].getvalue()


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
