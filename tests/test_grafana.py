"""deploy/grafana/bargein.json queries only metrics that exist: the app's (app/metrics.py) or named external ones.

Every PromQL expression in the dashboard is reduced to the metric names it reads (label matchers, ranges,
strings, `by (...)` lists and PromQL's own words removed). A name starting with `bargein_` must be one the app
exposes: the families of a fresh `Metrics()` registry, with the suffixes Prometheus adds (a counter's `_total`,
a histogram's `_bucket`, `_sum`, `_count`). So renaming a metric in app/metrics.py fails here until the dashboard
follows. The only other names allowed are the kubelet's cAdvisor series listed in EXTERNAL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "bargein.json"

# CPU and memory come from the kubelet (cAdvisor), per container: the app's registry has no process collector.
EXTERNAL = {"container_cpu_usage_seconds_total", "container_memory_working_set_bytes"}

# PromQL functions, aggregations and keywords that can appear as bare words.
PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "by", "without", "rate", "irate", "increase", "histogram_quantile",
    "clamp_min", "clamp_max", "label_values", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "offset", "bool", "topk", "bottomk", "abs", "vector", "scalar", "time",
}

IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def exposed_names(metrics: Metrics) -> set[str]:
    """The series names /metrics can carry for each family in the app's registry."""
    names: set[str] = set()
    for family in metrics.registry.collect():
        match family.type:
            case "counter":
                names.add(f"{family.name}_total")
            case "histogram":
                names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            case "summary":
                names.update(f"{family.name}{suffix}" for suffix in ("", "_sum", "_count"))
            case _:
                names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    # Grafana's label_values(metric{...}, label): the second argument is a label, not a metric.
    stripped = re.sub(r"label_values\(([^,]*),\s*\w+\s*\)", r"\1", expr)
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', "", stripped)  # strings
    stripped = re.sub(r"\{[^}]*\}", "", stripped)  # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # range selectors
    stripped = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", stripped)  # grouping labels
    return {word for word in IDENT.findall(stripped) if word not in PROMQL_WORDS}


def expressions(node: Any) -> Iterator[str]:
    """Every PromQL expression in the dashboard: panel targets and templating queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            elif key == "definition" and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def test_every_queried_metric_exists() -> None:
    known = exposed_names(Metrics())
    queried: set[str] = set()
    for expr in expressions(dashboard()):
        queried |= metric_names(expr)
    assert queried, "no metric found in the dashboard"
    app_side = {name for name in queried if name.startswith("bargein_")}
    assert app_side - known == set(), f"not in app/metrics.py: {sorted(app_side - known)}"
    assert queried - app_side <= EXTERNAL, f"unknown metrics: {sorted(queried - app_side - EXTERNAL)}"


@pytest.mark.parametrize(
    "name",
    [
        "bargein_active_calls",
        "bargein_bargeins_total",
        "bargein_bargein_resumed_total",
        "bargein_bargein_clear_sent_ms_bucket",
        "bargein_event_loop_stall_ms_bucket",
        "bargein_turn_gap_seconds_bucket",
        "bargein_draining",
        "bargein_store_write_seconds_bucket",
    ],
)
def test_the_dashboard_shows(name: str) -> None:
    """What issue 14 asks the dashboard to show is queried (and so, by the test above, exists in the app)."""
    assert any(name in metric_names(expr) for expr in expressions(dashboard()))


def test_the_extractor_sees_through_promql() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, pod) (rate(bargein_x_ms_bucket{pod=~"a_b",le!="1"}[5m]))) '
            '/ on (pod) group_left sum(up_metric) or vector(0)')
    assert metric_names(expr) == {"bargein_x_ms_bucket", "up_metric"}
    assert metric_names('label_values(bargein_a{namespace=~"$namespace"}, pod)') == {"bargein_a"}


def test_exposed_names_follow_prometheus_suffixes() -> None:
    names = exposed_names(Metrics())
    assert {"bargein_active_calls", "bargein_calls_total", "bargein_bargein_clear_sent_ms_bucket"} <= names
    assert "bargein_calls" not in names and "bargein_active_calls_total" not in names


def test_panels_use_the_datasource_variable_and_have_unique_ids() -> None:
    dash = dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
