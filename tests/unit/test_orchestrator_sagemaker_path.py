"""The SageMaker path's pure parts: price table and cost, image per instance type, job links, the settings
it requires at start-up, and the run events' billing fields (docs/decisions/0011)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flywheel_orchestrator import events
from flywheel_orchestrator.launchers import pricing
from flywheel_orchestrator.launchers.base import JobRequest, job_links
from flywheel_orchestrator.launchers.sagemaker import SageMakerConfig, SageMakerLauncher, is_gpu_instance
from flywheel_orchestrator.settings import OrchestratorSettings

ROLE = "arn:aws:iam::111122223333:role/flywheel-sagemaker-execution"
CPU, GPU = "1.dkr.ecr.eu-west-1.amazonaws.com/flywheel-training:1", "1.dkr.ecr.eu-west-1.amazonaws.com/flywheel-training-cuda:1"


def test_on_demand_cost_is_billable_seconds_times_the_hourly_price():
    cost = pricing.estimate(1800, 1800, "ml.m5.xlarge")
    assert cost.price_per_hour == 0.23 and cost.estimated_cost_usd == pytest.approx(0.115)
    assert cost.spot_savings_usd == 0.0 and not cost.spot


def test_spot_cost_bills_the_billable_time_and_saves_the_rest():
    cost = pricing.estimate(billable_s=600, training_s=1800, instance_type="ml.g5.xlarge", spot=True)
    assert cost.estimated_cost_usd == pytest.approx(600 / 3600 * 1.408, abs=1e-6)
    assert cost.spot_savings_usd == pytest.approx(1200 / 3600 * 1.408, abs=1e-6)


def test_instance_count_multiplies_and_overrides_win_over_the_table():
    cost = pricing.estimate(3600, 3600, "ml.m5.xlarge", instance_count=2, overrides={"ml.m5.xlarge": 0.5})
    assert cost.price_per_hour == 0.5 and cost.estimated_cost_usd == pytest.approx(1.0)
    assert pricing.price_of("ml.trn1.2xlarge", {"ml.trn1.2xlarge": 1.34}) == 1.34


def test_an_unknown_instance_type_has_no_cost_but_keeps_its_seconds():
    cost = pricing.estimate(100, 100, "ml.unknown.xlarge")
    assert cost.estimated_cost_usd is None and cost.spot_savings_usd is None and cost.billable_seconds == 100


def test_the_price_table_is_dated_and_positive():
    assert pricing.PRICES_AS_OF in (pricing.__doc__ or "") and "sagemaker/pricing" in (pricing.__doc__ or "")
    assert all(k.startswith("ml.") and 0 < v < 100 for k, v in pricing.PRICES_USD_PER_HOUR.items())
    with pytest.raises(ValueError):
        pricing.estimate(-1, 0, "ml.m5.xlarge")


@pytest.mark.parametrize(("instance_type", "gpu"), [
    ("ml.g5.xlarge", True), ("ml.g4dn.xlarge", True), ("ml.g6e.2xlarge", True), ("ml.p3.2xlarge", True),
    ("ml.p4d.24xlarge", True), ("ml.m5.xlarge", False), ("ml.c5.2xlarge", False), ("ml.m6g.large", False)])
def test_gpu_instance_types_get_the_cuda_image(instance_type: str, gpu: bool):
    config = SageMakerConfig(ROLE, CPU, GPU)
    assert is_gpu_instance(instance_type) is gpu
    assert config.image_for(instance_type) == (GPU if gpu else CPU)


def test_a_gpu_instance_without_the_cuda_image_is_an_error_not_the_cpu_image():
    with pytest.raises(ValueError, match="FLYWHEEL_SAGEMAKER_GPU_IMAGE_URI"):
        SageMakerConfig(ROLE, CPU).image_for("ml.g5.xlarge")


def test_job_arn_and_logs_link_come_from_the_role_account_and_region():
    config = SageMakerConfig(ROLE, CPU, region="eu-west-1")
    assert config.job_arn("fw-m-data-1") == "arn:aws:sagemaker:eu-west-1:111122223333:training-job/fw-m-data-1"
    url = config.logs_url("fw-m-data-1")
    assert url.startswith("https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logStream:")
    assert "group=/aws/sagemaker/TrainingJobs;prefix=fw-m-data-1;" in url
    launcher = SageMakerLauncher(None, config)
    assert job_links(launcher, "fw-m-data-1") == {"job_arn": config.job_arn("fw-m-data-1"), "logs_url": url}
    assert job_links(object(), "x") == {}  # the local launcher has none


def test_the_request_carries_vpc_kms_isolation_spot_and_checkpoints_by_default():
    config = SageMakerConfig(ROLE, CPU, GPU, instance_type="ml.g5.xlarge", subnets=("subnet-1", "subnet-2"),
                             security_group_ids=("sg-1",), volume_kms_key_id="vol-key", output_kms_key_id="out-key")
    request = JobRequest("fw-m-data-1", "m", "data", "datasets/m/v1/", ("datasets/m/v1/a.jsonl",), "art",
                         "models/m/fw-m-data-1/")
    body = SageMakerLauncher(None, config).create_request(request, "s3://art/models/m/fw-m-data-1/input/train.manifest")
    assert body["AlgorithmSpecification"]["TrainingImage"] == GPU
    assert body["VpcConfig"] == {"Subnets": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}
    assert body["ResourceConfig"]["VolumeKmsKeyId"] == "vol-key" and body["OutputDataConfig"]["KmsKeyId"] == "out-key"
    assert body["EnableNetworkIsolation"] is True and body["EnableInterContainerTrafficEncryption"] is True
    assert body["EnableManagedSpotTraining"] is True
    assert body["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert body["CheckpointConfig"] == {"S3Uri": "s3://art/models/m/fw-m-data-1/checkpoints/",
                                        "LocalPath": "/opt/ml/checkpoints"}
    assert "sagemaker_submit_directory" not in body["HyperParameters"]


def test_on_demand_without_keys_or_vpc_sends_none_of_them():
    body = SageMakerLauncher(None, SageMakerConfig(ROLE, CPU, use_spot=False)).create_request(
        JobRequest("fw-x", "m", "d", "p/", (), "art", "models/m/fw-x/"), "s3://art/m")
    assert "VpcConfig" not in body and "CheckpointConfig" not in body and "KmsKeyId" not in body["OutputDataConfig"]
    assert "MaxWaitTimeInSeconds" not in body["StoppingCondition"] and body["EnableManagedSpotTraining"] is False


def test_job_details_turn_describe_training_job_into_billing_fields():
    launcher = SageMakerLauncher(None, SageMakerConfig(ROLE, CPU, GPU, region="eu-west-1"))
    described = {"TrainingJobArn": "arn:aws:sagemaker:eu-west-1:111122223333:training-job/fw-x",
                 "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1},
                 "EnableManagedSpotTraining": True, "BillableTimeInSeconds": 600, "TrainingTimeInSeconds": 1800}
    job = launcher.job_details("fw-x", described)
    assert job["job_arn"] == described["TrainingJobArn"] and job["instance_type"] == "ml.g5.xlarge"
    assert float(job["billable_seconds"]) == 600 and float(job["training_seconds"]) == 1800 and job["spot"] == "true"
    assert float(job["estimated_cost_usd"]) == pytest.approx(0.234667, abs=1e-6)
    assert float(job["spot_savings_usd"]) == pytest.approx(0.469333, abs=1e-6)
    in_progress = launcher.job_details("fw-x", {"ResourceConfig": {"InstanceType": "ml.g5.xlarge"}})
    assert set(in_progress) == {"job_arn", "logs_url", "instance_type"}


def test_events_carry_the_job_fields_or_nulls_for_a_local_run():
    job = {"job_arn": "arn:x", "logs_url": "https://l", "instance_type": "ml.m5.xlarge", "billable_seconds": "600",
           "estimated_cost_usd": "0.038333", "spot_savings_usd": "0.0"}
    cost = events.job_cost(job)
    assert cost == {"job_arn": "arn:x", "logs_url": "https://l", "instance_type": "ml.m5.xlarge",
                    "billable_seconds": 600.0, "estimated_cost_usd": 0.038333, "spot_savings_usd": 0.0}
    assert set(events.job_cost(None).values()) == {None} and set(events.job_links({}).values()) == {None}


SAGEMAKER_ENV = {"FLYWHEEL_LAUNCHER": "sagemaker", "FLYWHEEL_SAGEMAKER_IMAGE_URI": CPU,
                 "FLYWHEEL_SAGEMAKER_SUBNETS": '["subnet-1"]', "FLYWHEEL_SAGEMAKER_SECURITY_GROUP_IDS": '["sg-1"]'}


def settings_with(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> OrchestratorSettings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return OrchestratorSettings()


def test_the_sagemaker_defaults_are_cpu_spot_isolated_and_encrypted(monkeypatch):
    s = settings_with(monkeypatch, SAGEMAKER_ENV)
    assert s.sagemaker_instance_type == "ml.m5.xlarge" and s.sagemaker_use_spot
    assert s.sagemaker_network_isolation and s.sagemaker_inter_container_encryption
    assert s.sagemaker_subnets == ["subnet-1"] and s.sagemaker_security_group_ids == ["sg-1"]


@pytest.mark.parametrize(("drop", "named"), [
    ("FLYWHEEL_SAGEMAKER_IMAGE_URI", "FLYWHEEL_SAGEMAKER_IMAGE_URI"),
    ("FLYWHEEL_SAGEMAKER_SUBNETS", "FLYWHEEL_SAGEMAKER_SUBNETS"),
    ("FLYWHEEL_SAGEMAKER_SECURITY_GROUP_IDS", "FLYWHEEL_SAGEMAKER_SECURITY_GROUP_IDS")])
def test_start_up_fails_naming_what_the_sagemaker_path_lacks(monkeypatch, drop: str, named: str):
    with pytest.raises(ValidationError, match=named):
        settings_with(monkeypatch, {k: v for k, v in SAGEMAKER_ENV.items() if k != drop})


def test_a_gpu_instance_type_requires_the_cuda_image_at_start_up(monkeypatch):
    env = {**SAGEMAKER_ENV, "FLYWHEEL_SAGEMAKER_INSTANCE_TYPE": "ml.g5.xlarge"}
    with pytest.raises(ValidationError, match="FLYWHEEL_SAGEMAKER_GPU_IMAGE_URI"):
        settings_with(monkeypatch, env)
    assert settings_with(monkeypatch, {**env, "FLYWHEEL_SAGEMAKER_GPU_IMAGE_URI": GPU}).sagemaker_gpu_image_uri == GPU


def test_script_mode_needs_network_access_and_spot_needs_room_to_wait(monkeypatch):
    with pytest.raises(ValidationError, match="NETWORK_ISOLATION=false"):
        settings_with(monkeypatch, {**SAGEMAKER_ENV, "FLYWHEEL_SAGEMAKER_SOURCE_URI": "s3://b/src.tar.gz"})
    monkeypatch.delenv("FLYWHEEL_SAGEMAKER_SOURCE_URI")
    with pytest.raises(ValidationError, match="MAX_WAIT_S"):
        settings_with(monkeypatch, {**SAGEMAKER_ENV, "FLYWHEEL_SAGEMAKER_MAX_WAIT_S": "60"})


def test_the_local_launcher_needs_none_of_it(monkeypatch):
    assert settings_with(monkeypatch, {"FLYWHEEL_LAUNCHER": "local"}).sagemaker_image_uri == ""
