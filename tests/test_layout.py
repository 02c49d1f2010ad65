"""The tree keeps its one-way dependencies: `providers` never imports `app`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_providers_never_import_app() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in _imported_modules(path) if m == "app" or m.startswith("app."))
        for path in (ROOT / "providers").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_live_decision_path_does_not_import_offline_tooling() -> None:
    for path in (ROOT / "app" / "bargein").rglob("*.py"):
        bad = [m for m in _imported_modules(path) if m.startswith(("app.offline", "app.bench"))]
        assert bad == [], f"{path.name} imports {bad}"
