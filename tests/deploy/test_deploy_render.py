"""Every overlay renders with kubectl kustomize, validates at the pinned Kubernetes version, passes policy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from flywheel_dev import deploy_check
from flywheel_dev.deploy_policy import violations

REPO = deploy_check.REPO
SERVICES = ("ingest", "orchestrator", "monitor", "serving")
MONITORING = REPO / "k8s" / "monitoring"


@pytest.fixture(scope="module", params=deploy_check.OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, deploy_check.render_overlay(request.param)


def kinds(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}


def test_overlay_validates_against_kubernetes_schemas(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    assert deploy_check.schema_errors(objects) == []


def test_overlay_passes_every_policy(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    assert violations(objects, skaffold_images=deploy_check.skaffold_images(),
                      known_keys=deploy_check.known_settings_keys(), allow_stand_ins=name == "local") == []


def test_every_service_has_its_hardened_set(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    present = kinds(objects)
    for svc in SERVICES:
        for kind in ("ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"):
            assert (kind, f"flywheel-{svc}") in present
        pod = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == f"flywheel-{svc}")
        spec = pod["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == f"flywheel-{svc}"
        probe = spec["containers"][0]["readinessProbe"]["httpGet"]
        assert (probe["path"], probe["port"]) == ("/healthz", "http-web")
        if svc != "serving":  # Faust services: liveness from consumer/worker progress (flywheel/health.py)
            assert spec["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/livez"


def config_env(objects: list[dict[str, Any]], svc: str) -> dict[str, str]:
    """The environment a service's container gets from its ConfigMaps and literal env."""
    maps = {o["metadata"]["name"]: o.get("data") or {} for o in objects if o["kind"] == "ConfigMap"}
    pod = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == f"flywheel-{svc}")
    container = pod["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        env |= maps.get(ref.get("configMapRef", {}).get("name"), {})
    return env | {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@pytest.mark.parametrize("svc", SERVICES)
def test_service_settings_load_from_the_rendered_config(svc: str, overlay: tuple[str, list[dict[str, Any]]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    name, objects = overlay
    module = importlib.import_module(f"flywheel_{svc}.settings")
    cls = next(getattr(module, n) for n in dir(module) if n.lower() == f"{svc}settings")
    for key in [k for k in __import__("os").environ if k.startswith("FLYWHEEL_")]:
        monkeypatch.delenv(key)
    for key, value in config_env(objects, svc).items():
        monkeypatch.setenv(key, value)
    settings = cls()
    assert settings.profile.value == name and settings.web_port == 6066 and str(settings.web_host) == "0.0.0.0"
    if name == "eks":  # MSK over TLS with IAM auth, chosen by configuration alone
        assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "OAUTHBEARER")
        assert settings.aws_endpoint_url is None and settings.kafka_bootstrap.endswith(":9098")


def test_local_overlay_brings_its_stand_ins() -> None:
    present = kinds(deploy_check.render_overlay("local"))
    for wanted in [("StatefulSet", "kafka"), ("Deployment", "moto"), ("Deployment", "prometheus"),
                   ("Deployment", "grafana")]:
        assert wanted in present
    assert not [k for k, _ in present if k == "ServiceMonitor"]  # no Prometheus Operator on a dev cluster


def test_local_kafka_runs_in_kraft_mode() -> None:
    kafka = next(o for o in deploy_check.render_overlay("local") if o["kind"] == "StatefulSet")
    env = {e["name"]: e["value"] for e in kafka["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller" and "ZOOKEEPER" not in " ".join(env)


def test_eks_overlay_has_irsa_roles_and_no_in_cluster_kafka() -> None:
    objects = deploy_check.render_overlay("eks")
    assert not [o for o in objects if o["kind"] in ("StatefulSet", "Secret")]
    arn = re.compile(r"^arn:aws:iam::\d{12}:role/flywheel-(ingest|orchestrator|monitor|serving)$")
    for svc in SERVICES:
        account = next(o for o in objects if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == f"flywheel-{svc}")
        role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert arn.match(role) and role.endswith(svc)
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceMonitor"} == {
        f"flywheel-{svc}" for svc in SERVICES}


def generated_monitoring_files() -> list[Path]:
    """Dashboards and rule files Prometheus/Grafana load; promtool's unit-test files (*.test.yml) are not."""
    patterns = {"dashboards": ("*.json",), "rules": ("*.yml", "*.yaml")}
    return sorted(p for sub, globs in patterns.items() for g in globs for p in (MONITORING / sub).glob(g)
                  if ".test." not in p.name)


def test_local_overlay_consumes_every_generated_monitoring_file_unchanged() -> None:
    # The monitor's code writes these; the overlay must read them in place, every one, byte for byte.
    config = {o["metadata"]["name"].rsplit("-", 1)[0]: o.get("data") or {}
              for o in deploy_check.render_overlay("local") if o["kind"] == "ConfigMap"}
    wired = {"dashboards": config["flywheel-grafana-dashboards"], "rules": config["flywheel-prometheus-rules"]}
    for path in generated_monitoring_files():
        assert wired[path.parent.name].get(path.name) == path.read_text(), (
            f"{path.relative_to(REPO)} is not wired into k8s/overlays/local/kustomization.yaml "
            f"(add ../../monitoring/{path.parent.name}/{path.name} to its generator)")
    assert sum(len(v) for v in wired.values()) == len(generated_monitoring_files())


def test_no_copies_of_monitoring_files_in_the_overlays() -> None:
    copies = [p for p in (REPO / "k8s" / "overlays").rglob("*") if p.suffix == ".json"
              or (p.suffix in (".yml", ".yaml") and "groups:" in p.read_text())]
    assert copies == []


def test_prometheus_scrapes_each_service_by_its_service_name() -> None:
    import yaml

    config = yaml.safe_load((REPO / "k8s" / "overlays" / "local" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    for svc in SERVICES:
        assert targets[f"flywheel-{svc}"] == [f"flywheel-{svc}:6066"]


# What the fault tier proves per service (docs/reliability.md): two live ingest, orchestrator and monitor
# processes are fenced (tests/fault/test_fault_ingest_replicas.py, test_fault_orchestrator_replicas.py,
# test_fault_monitor_replicas.py); serving's replicas answer alone and hand feedback to the one that answered
# (tests/integration/test_serving_replicas.py), and its HorizontalPodAutoscaler starts from these two.
PROVEN_REPLICAS = {"ingest": 2, "orchestrator": 2, "monitor": 2, "serving": 2}
SIDE_BY_SIDE_SAFE = {"ingest", "orchestrator", "monitor", "serving"}


@pytest.mark.parametrize("overlay", ["local", "eks"])
def test_replicas_and_rollouts_promise_only_what_the_fault_tier_proves(overlay: str) -> None:
    found = {d["metadata"]["name"].removeprefix("flywheel-"): d["spec"] for d in deploy_check.render_overlay(overlay)
             if d["kind"] == "Deployment" and d["metadata"]["name"].removeprefix("flywheel-") in PROVEN_REPLICAS}
    assert set(found) == set(PROVEN_REPLICAS)
    for name, spec in found.items():
        assert spec.get("replicas", 1) <= PROVEN_REPLICAS[name], name
        if name in SIDE_BY_SIDE_SAFE:  # a rollout never takes the last ready pod away
            assert spec["strategy"] == {"type": "RollingUpdate",
                                        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, name
        else:  # never the old and the new pod side by side
            assert spec["strategy"] == {"type": "Recreate"}, name
    if overlay == "eks":
        assert {n: s.get("replicas", 1) for n, s in found.items()} == PROVEN_REPLICAS


@pytest.mark.parametrize("overlay", ["local", "eks"])
def test_every_service_has_a_disruption_budget_that_lets_nodes_drain(overlay: str) -> None:
    budgets = {d["metadata"]["name"]: d["spec"] for d in deploy_check.render_overlay(overlay)
               if d["kind"] == "PodDisruptionBudget"}
    for name in PROVEN_REPLICAS:
        assert budgets[f"flywheel-{name}"].get("maxUnavailable") == 1, name
