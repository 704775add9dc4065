"""Serving's manifests: CPU requests = limits = torch threads in every overlay (a forward sharing its cores
slows ~50x), readiness means models loaded, replicas roll without a gap, and on EKS a HorizontalPodAutoscaler
on CPU keeps at least the two replicas that feedback forwarding is proven at (docs/decisions/0007-serving.md)."""

from __future__ import annotations

from typing import Any

import pytest

from flywheel_dev import deploy_check
from flywheel_serving.settings import ServingSettings


def serving(overlay: str) -> tuple[dict[str, Any], dict[str, str]]:
    objects = deploy_check.render_overlay(overlay)
    maps = {o["metadata"]["name"]: o.get("data") or {} for o in objects if o["kind"] == "ConfigMap"}
    deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "flywheel-serving")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for ref in container["envFrom"]:
        env |= maps.get(ref.get("configMapRef", {}).get("name"), {})  # the moto secretRef in local
    return deployment, env


@pytest.mark.parametrize("overlay", deploy_check.OVERLAYS)
def test_cpu_requests_equal_limits_equal_torch_threads(overlay: str) -> None:
    deployment, env = serving(overlay)
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    threads = ServingSettings(torch_threads=env["FLYWHEEL_TORCH_THREADS"]).torch_threads
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == str(threads)
    assert resources["requests"]["memory"] == resources["limits"]["memory"]


@pytest.mark.parametrize("overlay", deploy_check.OVERLAYS)
def test_ready_means_loaded_and_rollouts_keep_a_ready_replica(overlay: str) -> None:
    deployment, _ = serving(overlay)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def autoscalers(overlay: str) -> list[dict[str, Any]]:
    return [o for o in deploy_check.render_overlay(overlay) if o["kind"] == "HorizontalPodAutoscaler"]


def test_eks_scales_serving_on_cpu_from_the_proven_two_replicas() -> None:
    deployment, _ = serving("eks")
    [hpa] = autoscalers("eks")
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "flywheel-serving"}
    assert spec["minReplicas"] == deployment["spec"]["replicas"] == 2 <= spec["maxReplicas"]
    [metric] = spec["metrics"]  # CPU utilisation means something only because requests = limits (above)
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100


def test_forwarding_is_on_where_serving_runs_replicas() -> None:
    _, env = serving("eks")
    settings = ServingSettings(**{k.removeprefix("FLYWHEEL_").lower(): v for k, v in env.items()
                                  if k.removeprefix("FLYWHEEL_").lower() in ("feedback_forward", "follow_events")})
    assert settings.feedback_forward and settings.follow_events  # else a label on the wrong replica is dropped


def test_local_runs_one_serving_replica_and_no_autoscaler() -> None:
    deployment, _ = serving("local")
    assert deployment["spec"].get("replicas", 1) == 1 and autoscalers("local") == []
