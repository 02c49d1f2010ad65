"""A real PostgreSQL for the store tests: BARGEIN_TEST_POSTGRES_URL if set, else a throwaway cluster of our own.

The throwaway cluster needs the server binaries (Debian: `apt-get install postgresql`; .ci/run installs them):
initdb into a temporary directory, then pg_ctl start on a free loopback port, trust authentication, its socket
in that directory. initdb refuses to run as root, so as root the cluster belongs to the `postgres` user. The
reason is kept when it cannot start, so the tests that need it skip saying why.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ENV = "BARGEIN_TEST_POSTGRES_URL"


@dataclass
class Postgres:
    url: str | None
    reason: str = ""  # why there is none
    _dir: Path | None = None
    _as: list[str] | None = None
    _bin: Path | None = None

    def stop(self) -> None:
        if self._dir is not None and self._bin is not None:
            subprocess.run([*(self._as or []), str(self._bin / "pg_ctl"), "-D", str(self._dir / "data"), "-m",
                            "immediate", "stop"], capture_output=True, timeout=30)
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)  # Debian: newest first
    return Path(candidates[0]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_postgres() -> Postgres:
    if os.environ.get(ENV):
        return Postgres(os.environ[ENV])
    bindir = _bindir()
    if bindir is None:
        return Postgres(None, f"no PostgreSQL server binaries (initdb) found and {ENV} is unset: "
                              "apt-get install postgresql")
    run_as: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="bargein-pg-"))
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return Postgres(None, "running as root without runuser: cannot start PostgreSQL as its own user")
        shutil.chown(root, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = root / "data"
    pg = Postgres(None, "", root, run_as, bindir)
    try:
        subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l",
                        str(root / "log"), "-o",
                        f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
                        "-c full_page_writes=off -c synchronous_commit=off", "start"],
                       check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        log = (root / "log").read_text(errors="replace")[-500:] if (root / "log").exists() else ""
        pg.stop()
        return Postgres(None, f"PostgreSQL ({bindir}) could not start: {exc}; "
                              f"{detail.decode(errors='replace')[-300:]} {log}")
    pg.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    return pg
