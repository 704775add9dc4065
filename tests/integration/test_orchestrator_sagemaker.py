"""The SageMaker launcher's API calls against moto: the job it creates, idempotency, the workflow on top."""

from __future__ import annotations

import boto3

from flywheel_dev.datasets import put_dataset
from flywheel_dev.demodata import make_examples
from flywheel_dev.harness.orchestrator import put_container_output
from flywheel_orchestrator.adapters import build_launcher
from flywheel_orchestrator.domain import RunSpec
from flywheel_orchestrator.executors import LocalWorkflowExecutor
from flywheel_orchestrator.launchers.sagemaker import SageMakerConfig, SageMakerLauncher, resolve_image_uri
from flywheel_orchestrator.policy import Kind
from flywheel_orchestrator.settings import OrchestratorSettings
from flywheel_orchestrator.taskcontext import TaskContext

ROLE = "arn:aws:iam::123456789012:role/flywheel-sagemaker-execution"


def test_image_uri_is_resolved_by_the_sdk_for_the_region():
    uri = resolve_image_uri("eu-west-1", "ml.g5.xlarge", "2.3")
    assert uri.startswith("763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.3-gpu-py311")


def test_settings_pick_the_sagemaker_launcher(stack_env, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_LAUNCHER", "sagemaker")
    monkeypatch.setenv("FLYWHEEL_SAGEMAKER_IMAGE_URI", "123.dkr.ecr.us-east-1.amazonaws.com/flywheel-training:1")
    launcher = build_launcher(OrchestratorSettings(), s3=None)
    assert isinstance(launcher, SageMakerLauncher) and launcher.config.image_uri.endswith("flywheel-training:1")


def test_workflow_on_sagemaker_creates_one_job_and_registers_its_output(stack_env):
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    uri, _ = put_dataset(s3, "flywheel-data", "sm-model", "v1", make_examples(8, seed=1))
    config = SageMakerConfig(role_arn=ROLE, image_uri=resolve_image_uri("us-east-1", "ml.g5.xlarge", "2.3"),
                             use_spot=True)
    launcher = SageMakerLauncher(sm, config, s3=s3)
    spec = RunSpec("fw-sm-model-data-1", "sm-model", "ds1", Kind.NEW_DATA, uri, "e1", "corr-1")
    # moto never runs the container and marks the job Completed at once; write what the container would.
    put_container_output(s3, f"models/sm-model/{spec.run_id}/output/output.tar.gz")
    executor = LocalWorkflowExecutor(TaskContext(s3, launcher, "flywheel-artifacts", poll_s=0.01))

    result = executor.execute(spec, {"epochs": "1"})
    again = launcher.start(job_request_like(spec))

    assert result.artifact_uri == f"s3://flywheel-artifacts/models/sm-model/{spec.run_id}/output/model.tar.gz"
    assert result.metrics == {"accuracy": 0.9} and again is False
    jobs = [j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]]
    assert jobs.count(spec.run_id) == 1
    job = sm.describe_training_job(TrainingJobName=spec.run_id)
    assert job["AlgorithmSpecification"]["TrainingImage"] == config.image_uri
    channel = f"s3://flywheel-artifacts/models/sm-model/{spec.run_id}/input/train.manifest"  # pinned copies
    assert job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == channel
    assert job["EnableManagedSpotTraining"] is True and job["HyperParameters"] == {"epochs": "1", "expected_rows": "8"}
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]}
    assert tags["flywheel:correlation_id"] == "corr-1" and tags["flywheel:run_id"] == spec.run_id




def job_request_like(spec: RunSpec):
    from flywheel_orchestrator.launchers.base import JobRequest

    return JobRequest(spec.run_id, spec.model_id, "flywheel-data", "datasets/sm-model/v1/", (), "flywheel-artifacts",
                      f"models/sm-model/{spec.run_id}/")
