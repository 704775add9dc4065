"""A run on base + feedback (docs/decisions/0012): the workflow composes one training manifest under the run's
prefix (create-only) and both launchers read exactly the objects of every chosen version."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from flywheel.s3json import get_json
from flywheel_dev.datasets import put_dataset
from flywheel_dev.demodata import make_examples
from flywheel_dev.harness.orchestrator import put_container_output
from flywheel_orchestrator.domain import RunSpec
from flywheel_orchestrator.executors import LocalWorkflowExecutor, workflow_inputs
from flywheel_orchestrator.launchers.local import LocalLauncher
from flywheel_orchestrator.launchers.localjob import Runner
from flywheel_orchestrator.launchers.sagemaker import SageMakerConfig, SageMakerLauncher
from flywheel_orchestrator.policy import Kind
from flywheel_orchestrator.runs import failure_reason
from flywheel_orchestrator.taskcontext import TaskContext
from flywheel_orchestrator.trainingset import manifest_key

RUN = "fw-m-data-2"
STUB_TRAINER = """
import json, os, pathlib
channel = pathlib.Path(os.environ["SM_CHANNEL_TRAIN"])
files = sorted(p.name for p in channel.iterdir())
out = {"metrics": {"accuracy": 1.0}, "baseline_metrics": {"accuracy": 0.0}, "channel": files,
       "hps": json.loads(os.environ["SM_HPS"])}
for d in (os.environ["SM_OUTPUT_DATA_DIR"], os.environ["SM_MODEL_DIR"]):
    pathlib.Path(d).mkdir(parents=True, exist_ok=True)
    pathlib.Path(d, "metrics.json").write_text(json.dumps(out))
"""


@pytest.fixture
def aws(moto_s3):
    for bucket in ("flywheel-data", "flywheel-artifacts"):
        moto_s3.create_bucket(Bucket=bucket)
    return moto_s3


class InProcessLocalLauncher(LocalLauncher):
    def _spawn(self, job_name: str) -> None:
        Runner(self.s3, self.bucket, job_name).run()


def base_and_feedback(aws) -> tuple[RunSpec, dict, dict]:
    base_uri, base = put_dataset(aws, "flywheel-data", "m", "v1", make_examples(12, seed=1), parts=2)
    fb_uri, feedback = put_dataset(
        aws, "flywheel-data", "m", "feedback-20261128T050000-local", make_examples(5, seed=2)
    )
    spec = RunSpec(
        RUN,
        "m",
        feedback["dataset_version_id"],
        Kind.NEW_DATA,
        fb_uri,
        "e2",
        "c2",
        training_data=((base["dataset_version_id"], base_uri), (feedback["dataset_version_id"], fb_uri)),
    )
    return spec, base, feedback


def test_workflow_inputs_name_every_manifest_base_first(aws):
    spec, _, _ = base_and_feedback(aws)
    assert workflow_inputs(spec, {})["manifest_uris"] == [uri for _, uri in spec.training_data]
    alone = RunSpec("fw-m-data-1", "m", "ds1", Kind.NEW_DATA, "s3://b/m.json", "e", "c")
    assert workflow_inputs(alone, {})["manifest_uris"] == ["s3://b/m.json"]


def test_a_local_run_reads_the_objects_of_base_and_feedback_and_checks_their_total(aws, tmp_path: Path):
    spec, base, feedback = base_and_feedback(aws)
    entry = tmp_path / "stub_train.py"
    entry.write_text(STUB_TRAINER)
    launcher = InProcessLocalLauncher(
        aws, "flywheel-artifacts", entry, tmp_path / "jobs", {}, heartbeat_s=0.05
    )
    executor = LocalWorkflowExecutor(TaskContext(aws, launcher, "flywheel-artifacts", poll_s=0.01))
    executor.execute(spec, {"epochs": "1"})
    composed = get_json(aws, "flywheel-artifacts", manifest_key("m", RUN))
    keys = [o["key"] for o in base["objects"] + feedback["objects"]]
    assert [o["key"] for o in composed["objects"]] == keys
    assert [v["feedback"] for v in composed["versions"]] == [False, True] and composed["row_count"] == 17
    seen = get_json(aws, "flywheel-artifacts", f"models/m/{RUN}/metrics.json")
    assert seen["channel"] == sorted(k.replace("/", "__") for k in keys)
    assert seen["hps"]["expected_rows"] == "17"
    executor.execute(spec, {"epochs": "1"})  # a resumed run finds its training manifest and keeps it


def test_a_training_manifest_already_written_for_another_set_fails_the_run(aws, tmp_path: Path):
    spec, _, _ = base_and_feedback(aws)
    aws.put_object(
        Bucket="flywheel-artifacts", Key=manifest_key("m", RUN), Body=json.dumps({"other": 1}).encode()
    )
    launcher = InProcessLocalLauncher(aws, "flywheel-artifacts", tmp_path / "none.py", tmp_path / "jobs", {})
    with pytest.raises(Exception) as caught:
        LocalWorkflowExecutor(TaskContext(aws, launcher, "flywheel-artifacts", poll_s=0.01)).execute(spec, {})
    assert "already lists another training set" in failure_reason(caught.value)


def test_the_sagemaker_manifest_file_channel_lists_base_and_feedback_objects(aws):
    spec, base, feedback = base_and_feedback(aws)
    put_container_output(aws, f"models/m/{RUN}/output/output.tar.gz")  # moto never runs the container
    config = SageMakerConfig(
        role_arn="arn:aws:iam::123456789012:role/flywheel-sagemaker-execution",
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/flywheel-training:1",
    )
    launcher = SageMakerLauncher(boto3.client("sagemaker"), config, s3=aws)
    LocalWorkflowExecutor(TaskContext(aws, launcher, "flywheel-artifacts", poll_s=0.01)).execute(spec, {})
    listed = json.loads(
        aws.get_object(Bucket="flywheel-artifacts", Key=f"models/m/{RUN}/input/train.manifest")["Body"].read()
    )
    assert listed[1:] == [o["key"].replace("/", "__") for o in base["objects"] + feedback["objects"]]
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName=RUN)
    assert described["HyperParameters"]["expected_rows"] == "17"
