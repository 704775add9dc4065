"""The EKS profile runs the workflow on Flyte (docs/decisions/0014-flyte-remote.md): the orchestrator is configured
for the in-cluster flyteadmin, may reach it, and skaffold registers the workflow with the pushed image and the
task settings from the same files the orchestrator's ConfigMaps are generated from."""

from __future__ import annotations

import shlex

import pytest
import yaml

from flywheel_dev import deploy_check
from flywheel_orchestrator import flyteregistry
from flywheel_orchestrator.settings import ExecutorKind, OrchestratorSettings

pytestmark = pytest.mark.deploy

REPO = deploy_check.REPO
EKS = REPO / "k8s" / "overlays" / "eks"


def orchestrator_env(objects: list[dict]) -> dict[str, str]:
    maps = {o["metadata"]["name"]: o.get("data") or {} for o in objects if o["kind"] == "ConfigMap"}
    pod = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "flywheel-orchestrator")
    env: dict[str, str] = {}
    for ref in pod["spec"]["template"]["spec"]["containers"][0].get("envFrom", []):
        env |= maps.get(ref.get("configMapRef", {}).get("name"), {})
    return env


def test_eks_orchestrator_runs_the_workflow_on_the_in_cluster_flyte_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = deploy_check.render_overlay("eks")
    for key in [k for k in __import__("os").environ if k.startswith("FLYWHEEL_")]:
        monkeypatch.delenv(key)
    for key, value in orchestrator_env(objects).items():
        monkeypatch.setenv(key, value)
    settings = OrchestratorSettings()
    assert settings.engine is ExecutorKind.FLYTE_REMOTE
    # flyte-binary's Service (release flyte-binary in namespace flyte) answers plain gRPC on 8089.
    assert settings.flyte_endpoint == "flyte-binary.flyte.svc.cluster.local:8089" and settings.flyte_insecure
    assert settings.flyte_version == ""  # the active launch plan: the version registered last
    policy = next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "flywheel-orchestrator")
    assert any(rule.get("to") == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "flyte"}}}]
               and {p["port"] for p in rule["ports"]} == {8089} for rule in policy["spec"]["egress"])


def test_local_overlay_keeps_the_workflow_in_process() -> None:
    env = orchestrator_env(deploy_check.render_overlay("local"))
    assert env.get("FLYWHEEL_ENGINE", "local") == "local"


def test_skaffold_registers_the_workflow_with_the_pushed_image_and_the_configmap_files() -> None:
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    eks = next(p for p in config["profiles"] if p["name"] == "eks")
    artifact = next(a for a in eks["build"]["artifacts"] if a["image"] == "flywheel-orchestrator")
    (hook,) = artifact["hooks"]["after"]
    assert hook["command"][:2] == ["sh", "-c"]
    argv = shlex.split(hook["command"][2].replace("$SKAFFOLD_IMAGE", "repo/flywheel-orchestrator:abc1234"))
    assert argv[:3] == ["flywheel-orchestrator", "flyte", "register"]
    args = flyteregistry._parser().parse_args(argv[2:])
    assert args.image == "repo/flywheel-orchestrator:abc1234" and args.activate
    kustomization = yaml.safe_load((EKS / "kustomization.yaml").read_text())
    generated = {g["name"]: g.get("envs", []) for g in kustomization["configMapGenerator"]}
    sources = [EKS / f for f in generated["flywheel-common"] + generated["flywheel-orchestrator"]]
    # Every ConfigMap file the orchestrator reads, except the engine's own settings, reaches the task pods.
    assert {(REPO / p).resolve() for p in args.env_file} == {p.resolve() for p in sources if p.name != "flyte.env"}
    tasks = flyteregistry.task_environment(flyteregistry.read_env_files(args.env_file))
    assert tasks["FLYWHEEL_LAUNCHER"] == "sagemaker" and "FLYWHEEL_ENGINE" not in tasks
