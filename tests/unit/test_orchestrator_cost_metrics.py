"""Training spend as the orchestrator exports it: SageMaker runs at their estimated price, local runs at 0."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from flywheel_orchestrator import events
from flywheel_orchestrator.domain import RunSpec
from flywheel_orchestrator.metrics import LOCAL_INSTANCE, record_run_cost
from flywheel_orchestrator.policy import Kind

pytestmark = pytest.mark.unit


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def succeeded(model: str, job: dict[str, str] | None, duration_s: float = 42.0) -> dict:
    spec = RunSpec(f"fw-{model}-data-1", model, "ds1", Kind.NEW_DATA, "s3://b/m.json", "e1", "corr-1")
    started = events.run_started(spec, {"event_id": "e1", "correlation_id": "corr-1"}, "local", {})
    return events.run_succeeded(spec, started["envelope"], "s3://a/model.tar.gz", {"accuracy": 0.9}, duration_s, job)


def test_a_sagemaker_run_counts_its_billable_seconds_cost_and_savings():
    model = f"cost-{uuid.uuid4().hex[:6]}"
    job = {"job_arn": "arn:aws:sagemaker:eu-west-1:1:training-job/fw-x", "instance_type": "ml.m5.xlarge",
           "billable_seconds": "600", "estimated_cost_usd": "0.038333", "spot_savings_usd": "0.076667"}
    record_run_cost(succeeded(model, job))
    labels = {"model_id": model, "instance_type": "ml.m5.xlarge"}
    assert value("flywheel_orchestrator_training_billable_seconds_total", **labels) == 600
    assert value("flywheel_orchestrator_training_cost_usd_total", **labels) == pytest.approx(0.038333)
    assert value("flywheel_orchestrator_training_spot_savings_usd_total", **labels) == pytest.approx(0.076667)
    assert value("flywheel_orchestrator_run_cost_usd_count", model_id=model) == 1
    assert value("flywheel_orchestrator_run_cost_usd_bucket", model_id=model, le="0.05") == 1
    assert value("flywheel_orchestrator_run_cost_usd_bucket", model_id=model, le="0.01") == 0


def test_a_local_run_counts_its_run_time_at_no_cost_under_instance_type_local():
    model = f"cost-{uuid.uuid4().hex[:6]}"
    record = succeeded(model, None, duration_s=42.0)
    assert record["billable_seconds"] is None and record["estimated_cost_usd"] is None  # the event stays truthful
    record_run_cost(record)
    labels = {"model_id": model, "instance_type": LOCAL_INSTANCE}
    assert value("flywheel_orchestrator_training_billable_seconds_total", **labels) == 42.0
    assert REGISTRY.get_sample_value("flywheel_orchestrator_training_cost_usd_total", labels) == 0.0
    assert value("flywheel_orchestrator_run_cost_usd_bucket", model_id=model, le="0.0") == 1  # p50 is 0, not 0.005


def test_a_sagemaker_run_without_a_price_counts_seconds_but_no_cost():
    model = f"cost-{uuid.uuid4().hex[:6]}"
    job = {"job_arn": "arn:aws:sagemaker:eu-west-1:1:training-job/fw-x", "instance_type": "ml.x99.huge",
           "billable_seconds": "100"}
    record_run_cost(succeeded(model, job))
    labels = {"model_id": model, "instance_type": "ml.x99.huge"}
    assert value("flywheel_orchestrator_training_billable_seconds_total", **labels) == 100
    assert REGISTRY.get_sample_value("flywheel_orchestrator_training_cost_usd_total", labels) is None
    assert REGISTRY.get_sample_value("flywheel_orchestrator_run_cost_usd_count", {"model_id": model}) is None
