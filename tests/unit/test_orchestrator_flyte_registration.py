"""Registration of the training workflow (flyteregistry.py), offline: what `flywheel-orchestrator flyte package`
serialises, which settings reach the task pods, and the image's entry point handing pyflyte-execute through."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from flyteidl.admin import launch_plan_pb2, task_pb2, workflow_pb2

from flywheel_orchestrator import flyteregistry
from flywheel_orchestrator.executors import LAUNCH_PLAN, FlyteTarget, execution_name

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/flywheel-orchestrator:abc1234"


def test_version_is_the_image_tag():
    assert flyteregistry.version_of(IMAGE) == "abc1234"
    assert flyteregistry.version_of("localhost:5000/flywheel-orchestrator:v1@sha256:" + "0" * 64) == "v1"
    with pytest.raises(ValueError, match="no tag"):
        flyteregistry.version_of("localhost:5000/flywheel-orchestrator")


def test_a_changed_task_setting_registers_a_new_version():
    one = flyteregistry.registered_version(IMAGE, {"FLYWHEEL_A": "1"})
    assert one.startswith("abc1234-") and one == flyteregistry.registered_version(IMAGE, {"FLYWHEEL_A": "1"})
    assert one != flyteregistry.registered_version(IMAGE, {"FLYWHEEL_A": "2"})


def test_task_settings_come_from_the_eks_configmap_files_without_the_service_only_ones():
    overlay = REPO / "k8s" / "overlays" / "eks"
    env = flyteregistry.read_env_files([overlay / "environment.env", overlay / "orchestrator.env"])
    tasks = flyteregistry.task_environment(env)
    assert tasks["FLYWHEEL_LAUNCHER"] == "sagemaker" and tasks["FLYWHEEL_ARTIFACT_BUCKET"] == env["FLYWHEEL_ARTIFACT_BUCKET"]
    assert tasks["FLYWHEEL_SAGEMAKER_SUBNETS"] == env["FLYWHEEL_SAGEMAKER_SUBNETS"]  # JSON lists kept verbatim
    assert not [k for k in tasks if k.startswith(("FLYWHEEL_FLYTE_", "FLYWHEEL_ENGINE", "FLYWHEEL_WEB_"))]
    assert all(k.startswith("FLYWHEEL_") for k in tasks)


def test_a_bad_env_line_is_named(tmp_path: Path):
    bad = tmp_path / "x.env"
    bad.write_text("# fine\nFLYWHEEL_A=1\nnot a setting\n")
    with pytest.raises(ValueError, match=r"x.env:3"):
        flyteregistry.read_env_files([bad])


def test_package_writes_task_workflow_and_launch_plan_specs_offline(tmp_path: Path):
    out = tmp_path / "flyte-package.tgz"
    names = flyteregistry.package(out, IMAGE, "flywheel", "production", "abc1234", {"FLYWHEEL_LAUNCHER": "sagemaker"})
    with tarfile.open(out) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert list(members) == names
    tasks = [task_pb2.TaskSpec.FromString(body) for name, body in members.items() if name.endswith("_1.pb")]
    assert sorted(t.template.id.name.rsplit(".", 1)[1] for t in tasks) == ["evaluate", "prepare", "register", "train"]
    for task in tasks:
        assert task.template.id.version == "abc1234" and task.template.id.project == "flywheel"
        container = task.template.container
        assert container.image == IMAGE
        assert container.args[0] == "pyflyte-execute" and "flywheel_orchestrator.workflow" in container.args
        assert {kv.key: kv.value for kv in container.env} == {"FLYWHEEL_LAUNCHER": "sagemaker"}
    (wf_body,) = [b for n, b in members.items() if n.endswith("_2.pb")]
    workflow = workflow_pb2.WorkflowSpec.FromString(wf_body)
    assert workflow.template.id.name == LAUNCH_PLAN and len(workflow.template.nodes) == 4
    (lp_body,) = [b for n, b in members.items() if n.endswith("_3.pb")]
    plan = launch_plan_pb2.LaunchPlan.FromString(lp_body)
    assert plan.id.name == LAUNCH_PLAN and plan.spec.workflow_id.version == "abc1234"
    assert set(plan.spec.default_inputs.parameters) >= {"run_id", "model_id", "hyperparameters", "tags"}


def test_the_command_line_packages_and_refuses_without_an_image(tmp_path: Path):
    out = tmp_path / "p.tgz"
    assert flyteregistry.main(["package", "--image", IMAGE, "--output", str(out)]) == 0 and out.exists()
    with pytest.raises(SystemExit, match="--image"):
        flyteregistry.main(["package", "--image", ""])
    with pytest.raises(SystemExit, match="--endpoint"):
        flyteregistry.main(["register", "--image", IMAGE, "--endpoint", ""])


def test_the_entry_point_hands_pyflyte_execute_through():
    """A Flyte task pod runs the container args after the image's ENTRYPOINT (flywheel-orchestrator)."""
    script = Path(sys.executable).parent / "flywheel-orchestrator"
    done = subprocess.run([str(script), "pyflyte-execute", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--resolver" in done.stdout  # pyflyte-execute's own options, not the service starting


def test_execution_ids_are_deterministic_and_fit_flyte_names():
    name = execution_name("fw-support-intent-data-0123456789ab")
    assert name == execution_name("fw-support-intent-data-0123456789ab") and len(name) == 20 and name[0].isalpha()
    assert FlyteTarget("admin:8089", "flywheel", "production").execution_id("r") == \
        f"flywheel:production:{execution_name('r')}"
