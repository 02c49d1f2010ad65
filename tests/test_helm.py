"""The Helm chart in deploy/helm/bargein: rendered by Helm's own engine, checked against the Kubernetes schemas.

How it renders: `helm-python-sdk` (PyPI) ships `libhelm_c`, Helm's Go SDK (v4) built as a C library, and renders
the chart offline the way `helm template` does (same template engine, same values merge, `fail` and `required`
included). No `helm` binary installs from PyPI, npm or Debian; this is the packaged Helm that does.

How it validates: `kubernetes-validate` (PyPI) bundles the Kubernetes JSON schemas (1.25 to 1.37), so every
built-in manifest is checked offline in strict mode (unknown fields are errors) against the oldest and newest.
The two custom resources (KEDA's ScaledObject, prometheus-operator's ServiceMonitor) have no bundled schema:
their few fields are asserted by hand below.

Not covered: the PostgreSQL subchart itself. It is fetched by `helm dependency build` (network), so its
manifests are not rendered here; our templates that point at it (the Secret reference and the URL) are.

Then the properties issue 14 asks for, asserted on the rendered objects: non-root, read-only root filesystem
with writable volumes where the app writes, readiness and liveness on different paths that exist in the app,
a grace period that covers the drain, the HPA's metric named as the app's gauge, resources that cover the
calls a pod is sized for.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.metrics import Metrics
from app.settings import Settings
from app.store.sqlite import sqlite_path

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (the `test` extra) renders the chart")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (the `test` extra)")
yaml = pytest.importorskip("yaml")

CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "bargein"
KUBE_VERSIONS = ("1.25.0", "1.37.0")  # the oldest and newest schemas kubernetes-validate bundles
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "ServiceMonitor")}

# Measured (README.md, "Cost"; values.yaml shows the arithmetic): the upper ends of the hold's figures.
CPU_MILLICORES_PER_CALL = 7.9
RSS_MIB_PER_CALL = 0.91
IDLE_RSS_MIB = 135.0

SCALED: dict[str, Any] = {  # several pods: PostgreSQL, the HPA, every secret, recording and the ServiceMonitor
    "postgresql": {"enabled": True},
    "autoscaling": {"enabled": True},
    "record": {"enabled": True},
    "serviceMonitor": {"enabled": True},
    "publicUrl": "https://agent.example.com",
    "secrets": {
        "twilioAuthToken": "tw",
        "plivoAuthToken": "pl",
        "adminToken": "ad",
        "streamTokenSecret": "st",
        "llmApiKey": "ll",
    },
}
KEDA: dict[str, Any] = {"postgresql": {"enabled": True}, "keda": {"enabled": True}, "existingSecret": "ops-bargein"}
PROFILES = {"default": {}, "scaled": SCALED, "keda": KEDA}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, name="voice", namespace="calls")
    docs: list[dict[str, Any]] = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    return values


def settings_env_names() -> set[str]:
    names = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        names.add(alias.upper() if isinstance(alias, str) else name.upper())
    return names


def cpu_millicores(quantity: str) -> float:
    return float(quantity[:-1]) if quantity.endswith("m") else float(quantity) * 1000


def mebibytes(quantity: str) -> float:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, quantity
    return float(match.group(1)) * (1024 if match.group(2) == "Gi" else 1)


# ---- schema ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_manifest_matches_the_kubernetes_schema(profile: str) -> None:
    docs = render(PROFILES[profile])
    assert docs
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_catches_a_wrong_field() -> None:
    deployment = one(render({}), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}  # wrong case
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)


def test_lint_finds_no_error() -> None:
    report = helm.lint(str(CHART))
    assert report["errors"] == []
    # The only warning: the PostgreSQL subchart's archive is fetched by `helm dependency build`, not committed.
    warnings = [m["error"] for m in report["messages"] if m["severity"] >= 2]
    assert warnings == ["chart directory is missing these dependencies: postgresql"]


def test_postgresql_is_an_optional_dependency() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    (dep,) = chart["dependencies"]
    assert dep["name"] == "postgresql" and dep["condition"] == "postgresql.enabled"
    assert chart_values()["postgresql"]["enabled"] is False


# ---- what issue 14 asks of the Deployment ---------------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_runs_as_non_root_on_a_read_only_root_filesystem(profile: str) -> None:
    docs = render(PROFILES[profile])
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # Everything the app writes lands on a mounted volume.
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    env = env_of(docs)
    assert "/tmp" in mounts
    writes = [env["RECORD_DIR"]] if "RECORD_DIR" in env else []
    url = env.get("CALL_STORE_URL")
    if isinstance(url, str) and url.startswith("sqlite"):
        writes.append(sqlite_path(url))
    for path in writes:
        assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), (path, mounts)


def test_the_default_store_is_an_sqlite_file_on_a_volume() -> None:
    docs = render({})
    url = env_of(docs)["CALL_STORE_URL"]
    assert Settings(_env_file=None, call_store_url=url).call_store_url == url  # a URL the app takes
    path = sqlite_path(url)
    assert path == "/var/lib/bargein/store/calls.db"
    mounts = {m["mountPath"] for m in container(docs)["volumeMounts"]}
    assert str(Path(path).parent) in mounts  # SQLite also writes its -wal and -shm files beside the file


def test_readiness_and_liveness_are_apart_and_answered_by_the_app() -> None:
    c = container(render({}))
    ready = c["readinessProbe"]["httpGet"]["path"]
    live = c["livenessProbe"]["httpGet"]["path"]
    assert ready == "/healthz"
    assert live != ready  # a draining pod is not ready but must not be restarted
    assert c["startupProbe"]["httpGet"]["path"] == live
    # The real app answers both, and tells them apart: liveness is "alive" (200 while draining too, app/drain.py),
    # readiness "ok" once started. A wrong path would 404; a wrong query would fall back to readiness.
    with TestClient(create_app(Settings(_env_file=None, call_store_url="memory://"))) as client:
        answers = {path: client.get(path) for path in (ready, live)}
    assert answers[ready].status_code == 200 and answers[ready].json()["status"] == "ok"
    assert answers[live].status_code == 200 and answers[live].json()["status"] == "alive"


def test_grace_period_covers_prestop_and_the_drain() -> None:
    values = chart_values()
    for drain_s in (300, 30, 900):
        docs = render({"drain": {"timeoutSeconds": drain_s}})
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        c = container(docs)
        sleep_s = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
        assert int(env_of(docs)["DRAIN_TIMEOUT_S"]) == drain_s
        assert sleep_s == values["drain"]["preStopSleepSeconds"]
        # Kubernetes counts the grace period from the start of preStop; SIGTERM comes after it.
        assert pod["terminationGracePeriodSeconds"] >= sleep_s + drain_s + 5
    assert values["drain"]["timeoutSeconds"] == 300  # the app's DRAIN_TIMEOUT_S default (issue 14)


def test_resources_cover_the_calls_a_pod_is_sized_for() -> None:
    docs = render({})
    assert env_of(docs)["WORKERS"] == "1"  # never 0: that is one process per core of the node
    calls = int(env_of(docs)["MAX_CALLS"])
    assert calls == chart_values()["callsPerPod"]
    requests = container(docs)["resources"]["requests"]
    limits = container(docs)["resources"]["limits"]
    assert cpu_millicores(requests["cpu"]) >= calls * CPU_MILLICORES_PER_CALL
    assert mebibytes(requests["memory"]) >= IDLE_RSS_MIB + calls * RSS_MIB_PER_CALL
    assert cpu_millicores(limits["cpu"]) >= cpu_millicores(requests["cpu"])
    assert mebibytes(limits["memory"]) >= 2 * mebibytes(requests["memory"])


def test_environment_names_are_settings() -> None:
    known = settings_env_names() | {"BARGEIN_PG_PASSWORD"}  # spliced into CALL_STORE_URL, not a setting
    for profile in PROFILES.values():
        names = set(env_of(render(profile)))
        assert names <= known, f"not settings: {sorted(names - known)}"
    secret = one(render(SCALED), "Secret")
    assert set(secret["stringData"]) <= settings_env_names()
    assert set(secret["stringData"]) == {
        "TWILIO_AUTH_TOKEN", "PLIVO_AUTH_TOKEN", "ADMIN_TOKEN", "STREAM_TOKEN_SECRET", "LLM_API_KEY"
    }


def test_secrets_come_from_a_secret_or_an_existing_one() -> None:
    scaled = render(SCALED)
    assert container(scaled)["envFrom"] == [{"secretRef": {"name": one(scaled, "Secret")["metadata"]["name"]}}]
    # No secret value is written into the Deployment itself.
    deployment = yaml.safe_dump(one(scaled, "Deployment"))
    for value in SCALED["secrets"].values():
        assert f": {value}\n" not in deployment
    keda = render(KEDA)
    assert not [d for d in keda if d["kind"] == "Secret"]
    assert container(keda)["envFrom"] == [{"secretRef": {"name": "ops-bargein"}}]
    assert not [d for d in render({}) if d["kind"] == "Secret"]  # nothing to keep secret by default


def test_postgresql_password_is_read_from_the_subcharts_secret() -> None:
    env = env_of(render(SCALED))
    assert env["BARGEIN_PG_PASSWORD"] == {"secretKeyRef": {"name": "voice-postgresql", "key": "password"}}
    assert env["CALL_STORE_URL"] == "postgresql://bargein:$(BARGEIN_PG_PASSWORD)@voice-postgresql:5432/bargein"
    # Kubernetes expands $(NAME) only from variables listed before it.
    names = list(env)
    assert names.index("BARGEIN_PG_PASSWORD") < names.index("CALL_STORE_URL")


# ---- scaling ----------------------------------------------------------------------------------------------------


def active_calls_metric() -> str:
    (family,) = Metrics().active_calls.describe()
    name: str = family.name
    return name


def test_hpa_scales_on_the_apps_active_calls_gauge() -> None:
    docs = render(SCALED)
    (metric,) = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == active_calls_metric() == "bargein_active_calls"
    target = int(metric["pods"]["target"]["averageValue"])
    assert 0 < target < int(env_of(docs)["MAX_CALLS"])  # scale out before the busy line is spoken
    assert not [d for d in render({}) if d["kind"] == "HorizontalPodAutoscaler"]  # off by default


def test_keda_alternative_queries_the_same_gauge() -> None:
    docs = render(KEDA)
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]  # KEDA owns its HPA
    scaled = one(docs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["query"].startswith(f"sum({active_calls_metric()}{{")
    assert int(trigger["metadata"]["threshold"]) == chart_values()["autoscaling"]["targetActiveCallsPerPod"]


def test_service_monitor_scrapes_with_the_admin_token() -> None:
    (endpoint,) = one(render(SCALED), "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"
    assert endpoint["authorization"]["credentials"]["key"] == "ADMIN_TOKEN"


def test_ingress_keeps_websockets_open_past_the_drain() -> None:
    docs = render({})
    annotations = one(docs, "Ingress")["metadata"]["annotations"]
    drain_s = int(env_of(docs)["DRAIN_TIMEOUT_S"])
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{key}"]) >= drain_s
    service = one(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_pod_disruption_budget_selects_the_pods() -> None:
    docs = render({})
    pdb = one(docs, "PodDisruptionBudget")
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2}, "shared call store"),
        ({"autoscaling": {"enabled": True}}, "shared call store"),
        ({"autoscaling": {"enabled": True}, "keda": {"enabled": True}, "postgresql": {"enabled": True}}, "one of"),
        ({"replicaCount": 3, "postgresql": {"enabled": True}, "secrets": {"twilioAuthToken": "x"}},
         "streamTokenSecret"),
        ({"postgresql": {"enabled": True}, "secrets": {"plivoAuthToken": "x"}}, "streamTokenSecret"),
        ({"workers": 2, "secrets": {"twilioAuthToken": "x"}}, "streamTokenSecret"),
        ({"workers": 0}, "workers must be at least 1"),
        ({"replicaCount": 2, "store": {"url": "memory://"}}, "shared call store"),
    ],
)
def test_refuses_configurations_that_would_misbehave(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)
