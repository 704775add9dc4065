"""The SageMaker launcher's API calls against moto: the job it creates (image per instance type, VpcConfig, KMS,
network isolation, spot with checkpoints), idempotency, the workflow on top, and the run events' job fields."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from flywheel.bootstrap import build_codec
from flywheel.settings import FlywheelSettings
from flywheel_dev.datasets import put_dataset
from flywheel_dev.demodata import make_examples
from flywheel_dev.harness.orchestrator import put_container_output
from flywheel_orchestrator import events
from flywheel_orchestrator.adapters import build_launcher
from flywheel_orchestrator.domain import RunSpec
from flywheel_orchestrator.executors import LocalWorkflowExecutor
from flywheel_orchestrator.launchers.base import job_links
from flywheel_orchestrator.launchers.sagemaker import SageMakerConfig, SageMakerLauncher
from flywheel_orchestrator.policy import Kind
from flywheel_orchestrator.settings import OrchestratorSettings
from flywheel_orchestrator.taskcontext import TaskContext

ROLE = "arn:aws:iam::123456789012:role/flywheel-sagemaker-execution"
CPU_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/flywheel-training:1"
GPU_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/flywheel-training-cuda:1"
VPC = {"FLYWHEEL_SAGEMAKER_SUBNETS": '["subnet-0a", "subnet-0b"]', "FLYWHEEL_SAGEMAKER_SECURITY_GROUP_IDS": '["sg-0a"]'}


def test_settings_pick_the_sagemaker_launcher_with_its_vpc(stack_env, monkeypatch):
    for key, value in {"FLYWHEEL_LAUNCHER": "sagemaker", "FLYWHEEL_SAGEMAKER_IMAGE_URI": CPU_IMAGE, **VPC}.items():
        monkeypatch.setenv(key, value)
    launcher = build_launcher(OrchestratorSettings(), s3=None)
    assert isinstance(launcher, SageMakerLauncher) and launcher.config.image_uri == CPU_IMAGE
    assert launcher.config.subnets == ("subnet-0a", "subnet-0b") and launcher.config.use_spot


def test_the_sagemaker_launcher_refuses_to_start_without_its_image(stack_env, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_LAUNCHER", "sagemaker")
    for key, value in VPC.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match="FLYWHEEL_SAGEMAKER_IMAGE_URI"):
        OrchestratorSettings()


def report_billing(billable_s: int, training_s: int):
    """moto never runs a job, so its DescribeTrainingJob has no BillableTimeInSeconds/TrainingTimeInSeconds;
    add them to moto's parsed answer as SageMaker reports them for a finished spot job."""
    def handler(parsed: dict[str, Any], **_: Any) -> None:
        parsed.setdefault("BillableTimeInSeconds", billable_s)
        parsed.setdefault("TrainingTimeInSeconds", training_s)
    return handler


@pytest.mark.parametrize(("instance_type", "image"), [("ml.g5.xlarge", GPU_IMAGE), ("ml.m5.xlarge", CPU_IMAGE)])
def test_workflow_on_sagemaker_creates_one_secured_spot_job_and_reports_its_cost(stack_env, instance_type, image):
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    model = f"sm-{instance_type.split('.')[1]}"
    uri, _ = put_dataset(s3, "flywheel-data", model, "v1", make_examples(8, seed=1))
    config = SageMakerConfig(role_arn=ROLE, image_uri=CPU_IMAGE, gpu_image_uri=GPU_IMAGE, instance_type=instance_type,
                             subnets=("subnet-0a", "subnet-0b"), security_group_ids=("sg-0a",),
                             volume_kms_key_id="alias/flywheel-volume", output_kms_key_id="alias/flywheel-artifacts")
    sm.meta.events.register("after-call.sagemaker.DescribeTrainingJob", report_billing(600, 1800))
    launcher = SageMakerLauncher(sm, config, s3=s3)
    spec = RunSpec(f"fw-{model}-data-1", model, "ds1", Kind.NEW_DATA, uri, "e1", "corr-1")
    # moto never runs the container and marks the job Completed at once; write what the container would.
    put_container_output(s3, f"models/{model}/{spec.run_id}/output/output.tar.gz")
    executor = LocalWorkflowExecutor(TaskContext(s3, launcher, "flywheel-artifacts", poll_s=0.01))

    result = executor.execute(spec, {"epochs": "1"})
    again = launcher.start(job_request_like(spec))

    assert result.artifact_uri == f"s3://flywheel-artifacts/models/{model}/{spec.run_id}/output/model.tar.gz"
    assert result.metrics == {"accuracy": 0.9} and again is False
    jobs = [j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]]
    assert jobs.count(spec.run_id) == 1
    job = sm.describe_training_job(TrainingJobName=spec.run_id)
    assert job["AlgorithmSpecification"]["TrainingImage"] == image
    channel = f"s3://flywheel-artifacts/models/{model}/{spec.run_id}/input/train.manifest"  # pinned copies
    assert job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == channel
    assert job["VpcConfig"] == {"Subnets": ["subnet-0a", "subnet-0b"], "SecurityGroupIds": ["sg-0a"]}
    assert job["ResourceConfig"]["VolumeKmsKeyId"] == "alias/flywheel-volume"
    assert job["OutputDataConfig"]["KmsKeyId"] == "alias/flywheel-artifacts"
    assert job["EnableNetworkIsolation"] is True and job["EnableInterContainerTrafficEncryption"] is True
    assert job["EnableManagedSpotTraining"] is True and job["StoppingCondition"]["MaxWaitTimeInSeconds"] == 7200
    assert job["CheckpointConfig"] == {"S3Uri": f"s3://flywheel-artifacts/models/{model}/{spec.run_id}/checkpoints/",
                                       "LocalPath": "/opt/ml/checkpoints"}
    assert job["HyperParameters"] == {"epochs": "1", "expected_rows": "8"}
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]}
    assert tags["flywheel:correlation_id"] == "corr-1" and tags["flywheel:run_id"] == spec.run_id

    # The run events: the ARN and logs link known at launch match the job's; the succeeded event has its cost.
    codec = build_codec(FlywheelSettings())
    started = events.run_started(spec, {"event_id": "e1", "correlation_id": "corr-1"}, "sagemaker", {},
                                 job_links(launcher, spec.job_name))
    succeeded = events.run_succeeded(spec, started["envelope"], result.artifact_uri, result.metrics, 3.0, result.job)
    failed = events.run_failed(spec, started["envelope"], "x", 3.0, job_links(launcher, spec.job_name))
    for name, record in (("TrainingRunStarted", started), ("TrainingRunSucceeded", succeeded),
                         ("TrainingRunFailed", failed)):
        decoded = codec.decode(codec.encode(name, record, check=True)).record
        assert decoded["job_arn"] == job["TrainingJobArn"]
        assert decoded["logs_url"].endswith(f"prefix={spec.run_id};streamFilter=typeLogStreamPrefix")
    price = {"ml.g5.xlarge": 1.408, "ml.m5.xlarge": 0.23}[instance_type]
    decoded = codec.decode(codec.encode("TrainingRunSucceeded", succeeded, check=True)).record
    assert decoded["instance_type"] == instance_type and decoded["billable_seconds"] == 600.0
    assert decoded["estimated_cost_usd"] == pytest.approx(600 / 3600 * price, abs=1e-6)
    assert decoded["spot_savings_usd"] == pytest.approx(1200 / 3600 * price, abs=1e-6)


def job_request_like(spec: RunSpec):
    from flywheel_orchestrator.launchers.base import JobRequest

    return JobRequest(spec.run_id, spec.model_id, "flywheel-data", "datasets/sm-model/v1/", (), "flywheel-artifacts",
                      f"models/sm-model/{spec.run_id}/")
