"""The pytest plugin: `pytest --bargein-replay DIR` turns recorded calls and scenarios into test items.

Installed with the package (entry point `pytest11: bargein`), so a team's own CI can check its own calls:

    pytest --bargein-replay calls/            # every *.jsonl.zst, *.jsonl.gz and *.toml under calls/, recursively

Each file is one test item, named after its path. A recording is replayed in-process on the virtual clock with
the settings of the environment (as `bargein replay` does); it fails when a decision differs beyond the
tolerance (exact against a `--update` baseline, 20 ms / one word against a live recording), and the failure
text is the replay's diff. A scenario fails when an expectation is not met. The option may be given more than
once. Without it the plugin does nothing, so having it installed costs other test runs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.record.format import SUFFIXES as RECORDING_SUFFIXES

OPTION = "--bargein-replay"
SUFFIXES = (*RECORDING_SUFFIXES, ".toml")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bargein", "bargein call replay")
    group.addoption(OPTION, action="append", default=[], metavar="DIR",
                    help="replay every recorded call (*.jsonl.zst, *.jsonl.gz) and scenario (*.toml) under DIR "
                         "as a test")


class ReplayDifference(Exception):
    """A replay's decisions differ from its recording (or a scenario's expectations were not met)."""


def _files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name.endswith(SUFFIXES):
            yield path


class ReplayFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        yield ReplayItem.from_parent(self, name=self.path.name)


class ReplayItem(pytest.Item):
    def runtest(self) -> None:
        from app.replay.check import Unreadable, check_file

        try:
            verdict = check_file(self.path)
        except Unreadable as exc:
            raise ReplayDifference(f"{self.path}: cannot read: {exc}") from None
        if not verdict.passed:
            raise ReplayDifference(verdict.text)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ReplayDifference):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"bargein replay {self.path.name}"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    roots: list[str] = config.getoption(OPTION) or []
    for root in roots:
        base = Path(root)
        if not base.exists():
            raise pytest.UsageError(f"{OPTION} {root}: no such file or directory")
        for path in _files(base):
            items.extend(ReplayFile.from_parent(session, path=path.resolve()).collect())
