"""skaffold.yaml validates against skaffold's published schema (vendored) and matches the repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flywheel_dev import deploy_check

REPO = deploy_check.REPO
SCHEMA = REPO / "deploy" / "schemas" / "skaffold-v4beta14.schema.json"
CONFIG = yaml.safe_load((REPO / "skaffold.yaml").read_text())


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--schemafile", str(SCHEMA), str(path)],
                          capture_output=True, text=True)


def test_skaffold_yaml_matches_the_published_schema() -> None:
    done = check_jsonschema(REPO / "skaffold.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert CONFIG["apiVersion"] == "skaffold/v4beta14"


def test_check_jsonschema_rejects_a_broken_skaffold_yaml(tmp_path: Path) -> None:
    broken = dict(CONFIG, build={**CONFIG["build"], "artifacts": [{"image": "x", "dockerfile": "Dockerfile"}]})
    (tmp_path / "skaffold.yaml").write_text(yaml.safe_dump(broken))
    assert check_jsonschema(tmp_path / "skaffold.yaml").returncode != 0


# The training image's CUDA variant (GPU instance types): the same Dockerfile with CUDA torch.
CUDA_BUILD = {"TORCH_VARIANT": "cuda", "TORCH_INDEX": "https://download.pytorch.org/whl/cu128"}


def artifacts(config: dict[str, Any]) -> dict[str, tuple[str, dict[str, str]]]:
    """image -> (its Dockerfile, its build args)."""
    return {a["image"]: (a["docker"]["dockerfile"], a["docker"].get("buildArgs", {}))
            for a in config["build"]["artifacts"]}


@pytest.mark.parametrize("profile", [None, "eks"])
def test_one_artifact_per_service_plus_training(profile: str | None) -> None:
    config = CONFIG if profile is None else next(p for p in CONFIG["profiles"] if p["name"] == profile)
    built = artifacts(config)
    assert built == {**{f"flywheel-{s}": ("services/Dockerfile", {"SERVICE": s})
                        for s in ("ingest", "orchestrator", "monitor", "serving")},
                     "flywheel-training": ("services/training/Dockerfile", {}),
                     "flywheel-training-cuda": ("services/training/Dockerfile", CUDA_BUILD)}
    assert all((REPO / dockerfile).is_file() for dockerfile, _ in built.values())
    assert deploy_check.skaffold_images() == set(artifacts(CONFIG))


def test_profiles_render_their_overlays() -> None:
    profiles = {p["name"]: p for p in CONFIG["profiles"]}
    assert set(profiles) == {"local", "eks"}
    assert CONFIG["manifests"]["kustomize"]["paths"] == ["k8s/overlays/local"]
    assert profiles["eks"]["manifests"]["kustomize"]["paths"] == ["k8s/overlays/eks"]
    assert CONFIG["manifests"]["kustomize"]["buildArgs"] == list(deploy_check.KUSTOMIZE_ARGS)


def test_port_forwards_point_at_rendered_services_and_ports() -> None:
    services = {o["metadata"]["name"]: {p["port"] for p in o["spec"]["ports"]}
                for o in deploy_check.render_overlay("local") if o["kind"] == "Service"}
    local = next(p for p in CONFIG["profiles"] if p["name"] == "local")
    forwards = CONFIG["portForward"] + local["portForward"]
    for forward in forwards:
        assert forward["port"] in services[forward["resourceName"]], forward
    forwarded = {f["resourceName"] for f in local["portForward"]}
    assert {"flywheel-ingest", "flywheel-orchestrator", "flywheel-monitor", "prometheus", "grafana"} <= forwarded


def test_manifests_name_only_images_skaffold_builds_or_pinned_ones() -> None:
    for name in deploy_check.OVERLAYS:
        images = {c["image"] for o in deploy_check.render_overlay(name) if o["kind"] in ("Deployment", "StatefulSet")
                  for c in o["spec"]["template"]["spec"]["containers"] + o["spec"]["template"]["spec"].get(
                      "initContainers", [])}
        own = {i for i in images if i.startswith("flywheel-")}
        assert own <= set(artifacts(CONFIG)) and own, name
