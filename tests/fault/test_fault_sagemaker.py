"""The orchestrator on its SageMaker launcher, with the whole platform around it, against moto behind a
fault-injecting proxy (aws_faults.py): a job that fails, and API calls that are throttled.

A failed job ends its run with TrainingRunFailed and SageMaker's FailureReason, and registers nothing; throttled
CreateTrainingJob / DescribeTrainingJob calls are retried until they pass, and moto (which accepts a duplicate
job name) still holds exactly one job per run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from aws_faults import BILLABLE_S, FAILURE_REASON, TRAINING_S, SageMakerFaults, job_names
from test_fault_kill_services import upload

from conftest import Running, assert_one_run_per_trigger, platform_running

RUN = uuid.uuid4().hex[:6]
FAILING, THROTTLED = f"fault-smfail-{RUN}", f"fault-smthrottle-{RUN}"
THROTTLES = 4  # per operation and job: fewer than botocore's own retry budget (10, adaptive)
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/flywheel-training:fault"


@pytest.fixture(scope="module")
def proxy_and_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SageMakerFaults, Running]]:
    proxies: list[SageMakerFaults] = []

    def through_proxy(stack) -> dict[str, str]:
        s3 = stack.client("s3")
        proxies.append(SageMakerFaults(stack.moto_port, s3, "smfail", "smthrottle", THROTTLES).start())
        endpoint = proxies[0].endpoint
        return {
            "AWS_ENDPOINT_URL": endpoint,
            "FLYWHEEL_AWS_ENDPOINT_URL": endpoint,
            "FLYWHEEL_LAUNCHER": "sagemaker",
            "FLYWHEEL_SAGEMAKER_IMAGE_URI": IMAGE,
            "FLYWHEEL_SAGEMAKER_SUBNETS": '["subnet-0fault"]',
            "FLYWHEEL_SAGEMAKER_SECURITY_GROUP_IDS": '["sg-0fault"]',
        }

    try:
        with platform_running(tmp_path_factory.mktemp("fault"), env_for_stack=through_proxy) as running:
            yield proxies[0], running
    finally:
        for proxy in proxies:
            proxy.stop()


@pytest.fixture(scope="module")
def running(proxy_and_platform) -> Running:
    return proxy_and_platform[1]


def test_failed_training_job_ends_the_run_failed_with_the_reason(proxy_and_platform) -> None:
    _, running = proxy_and_platform
    upload(running, FAILING)
    [failed] = running.timeline.wait_for(
        "TrainingRunFailed", lambda s: s.get("model_id") == FAILING, timeout=120
    )
    assert FAILURE_REASON in failed.get("reason")
    [started] = assert_one_run_per_trigger(running, lambda s: s.get("model_id") == FAILING, job_records=False)
    assert started.get("launcher") == "sagemaker" and failed.get("run_id") == started.get("run_id")
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{started.get('run_id')}"
    assert started.get("job_arn") == failed.get("job_arn") == arn
    assert f"prefix={started.get('run_id')};" in failed.get("logs_url")
    assert job_names(running.client("sagemaker"), lambda n: n == started.get("run_id")) == [
        started.get("run_id")
    ]
    assert running.timeline.matching("ModelVersionRegistered", lambda s: s.get("model_id") == FAILING) == []


def test_throttled_api_calls_are_retried_and_create_one_job(proxy_and_platform) -> None:
    proxy, running = proxy_and_platform
    upload(running, THROTTLED)
    [registered] = running.timeline.wait_for(
        "ModelVersionRegistered", lambda s: s.get("model_id") == THROTTLED, timeout=180
    )
    [started] = assert_one_run_per_trigger(
        running, lambda s: s.get("model_id") == THROTTLED, job_records=False
    )
    run_id = started.get("run_id")
    assert registered.get("run_id") == run_id
    [succeeded] = running.timeline.matching("TrainingRunSucceeded", lambda s: s.get("model_id") == THROTTLED)
    assert succeeded.get("job_arn").endswith(f":training-job/{run_id}") and succeeded.get("logs_url")
    assert succeeded.get("instance_type") == "ml.m5.xlarge" and succeeded.get("billable_seconds") == BILLABLE_S
    assert succeeded.get("estimated_cost_usd") == pytest.approx(BILLABLE_S / 3600 * 0.23, abs=1e-6)
    assert succeeded.get("spot_savings_usd") == pytest.approx((TRAINING_S - BILLABLE_S) / 3600 * 0.23, abs=1e-6)
    assert registered.get("artifact_uri").endswith(f"/{run_id}/output/model.tar.gz")
    assert proxy.throttled[("CreateTrainingJob", run_id)] == THROTTLES
    assert proxy.throttled[("DescribeTrainingJob", run_id)] == THROTTLES
    assert job_names(running.client("sagemaker"), lambda n: n == run_id) == [run_id]
    assert running.timeline.matching("TrainingRunFailed", lambda s: s.get("model_id") == THROTTLED) == []


def test_every_service_alive_at_the_end(running) -> None:
    assert running.dead_services() == []
