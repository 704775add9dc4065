"""Serving's manifests: CPU requests = limits = torch threads in every overlay (a forward sharing its cores
slows ~50x), readiness means models loaded, and replicas roll without a gap."""

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
