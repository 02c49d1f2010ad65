"""`bargein serve`: the WebSocket message cap it hands uvicorn (uvicorn's own default is 16 MiB), and its
--host/--port flags reaching the settings the app runs with (the real command, in a subprocess); the command
line itself: `--version`, a help text on every option, and how a subcommand is registered."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app import cli
from app.edge.emulator import EmulatedCall
from app.offline.corpus import load_clip, read_manifest
from app.settings import Settings
from tests.conftest import free_port


@pytest.mark.parametrize(("env", "expected"), [(None, 65_536), ("32768", 32_768)])
def test_serve_caps_inbound_websocket_messages(
    env: str | None, expected: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no developer .env
    monkeypatch.delenv("WS_MAX_MESSAGE_BYTES", raising=False)
    if env is not None:
        monkeypatch.setenv("WS_MAX_MESSAGE_BYTES", env)
    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli, "run_server", lambda settings, options, **kw: seen.update(options) or 0)
    assert cli.main(["serve", "--port", "18080", "--workers", "1"]) == 0
    assert seen["ws_max_size"] == expected
    assert seen["ws"] == "websockets-sansio"


# --- the real `bargein serve`, as a subprocess ------------------------------------------------------------------

SERVE = [sys.executable, "-m", "app.cli", "serve"]


def serve_env(**values: str) -> dict[str, str]:
    """The test's environment without any bargein setting (nor a proxy), plus `values`."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names and "PROXY" not in k.upper()}
    env["WORKERS"] = "1"  # one process: these tests read its log and its port
    env.update(values)
    return env


@contextmanager
def serving(tmp_path: Path, args: list[str], env: dict[str, str], timeout_s: float = 20.0) -> Iterator[str]:
    """`bargein serve ARGS` in tmp_path (no .env there) until /healthz answers 200; yields the base URL."""
    port = args[args.index("--port") + 1]
    with (tmp_path / "stderr.log").open("wb") as err:
        proc = subprocess.Popen([*SERVE, *args], cwd=tmp_path, env=env, stdout=err, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + timeout_s
            while True:
                assert proc.poll() is None, (tmp_path / "stderr.log").read_text()
                assert time.monotonic() < deadline, "no /healthz 200: " + (tmp_path / "stderr.log").read_text()
                try:
                    if httpx.get(f"{url}/healthz", timeout=1.0, trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_serve_port_flag_reaches_the_embedded_llm_url(tmp_path: Path) -> None:
    """`--port N` wins over PORT for everything: the agent's turn reaches the embedded LLM on N, no fallback."""
    port, elsewhere = free_port(), free_port()  # PORT names a closed port: the old code sent the LLM there
    env = serve_env(PORT=str(elsewhere), AGENT_GREETING="Hello.", PUBLIC_URL=f"http://127.0.0.1:{port}")

    async def one_turn(url: str) -> list[dict[str, Any]]:
        word = next(c for c in read_manifest() if c.category == "isolated_word")
        async with EmulatedCall.start("twilio", url) as call, httpx.AsyncClient(trust_env=False) as client:
            await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 10)
            greeting = call.received_samples
            await call.send_audio(load_clip(word))
            # The reply's first audio (a failed LLM turn speaks the fallback line instead, also audio).
            await call.wait_until(lambda: call.received_samples > greeting + 8000, 10)
            await call.hangup()
            for _ in range(100):  # the server closes the record once it has read the stop
                record = (await client.get(f"{url}/calls/{call.call_id}")).json()
                if record["end_reason"] is not None:
                    break
                await asyncio.sleep(0.05)
        return [t for t in record["turns"] if t["role"] == "agent"]

    with serving(tmp_path, ["--port", str(port), "--host", "127.0.0.1"], env) as url:
        agent = asyncio.run(one_turn(url))
    assert len(agent) == 2, agent
    reply = agent[1]
    assert not reply["fallback"], reply
    fallback_text = Settings.model_fields["agent_fallback_text"].default
    assert reply["text"] and not fallback_text.startswith(reply["text"]), reply


# --- the command line itself: --version, and a help text for every option -------------------------------------


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    proc = subprocess.run([sys.executable, "-m", "app.cli", "--version"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"bargein {version('bargein')}"


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """`bargein`'s parser, each subcommand's, and bench's own (`bargein bench` hands its arguments on to it)."""
    from app.bench.run import build_parser as bench_parser

    top = cli.build_parser()
    yield "bargein", top
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, parser in action.choices.items():
                yield f"bargein {name}", parser
    yield "bargein bench (app.bench.run)", bench_parser()


def test_every_option_of_every_command_says_what_it_does() -> None:
    seen = set()
    for command, parser in parsers():
        seen.add(command)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                described = {a.dest: a.help for a in action._choices_actions}
                assert set(described) == set(action.choices), command
                assert all(described.values()), (command, described)
            assert action.help and action.help != argparse.SUPPRESS, (command, action.option_strings or action.dest)
    assert {"bargein", "bargein serve", "bargein bench", "bargein bench (app.bench.run)"} <= seen


def test_a_new_subcommand_is_one_register_call_and_unknown_flags_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="bargein")
    sub = parser.add_subparsers(dest="command", required=True)
    ran: list[tuple[str, list[str]]] = []
    cli.register(sub, "hello", "say hello", lambda p: p.add_argument("--name", help="who to greet"),
                 lambda args, rest: ran.append((args.name, rest)) or 0)
    args, rest = parser.parse_known_args(["hello", "--name", "world"])
    assert args._run(args, rest) == 0 and ran == [("world", [])]
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", "--prot", "8080"])  # a typo is an error, not a silently ignored flag
    assert exc.value.code == 2
    assert "unrecognized arguments: --prot 8080" in capsys.readouterr().err
