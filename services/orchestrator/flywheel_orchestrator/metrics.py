"""Every Prometheus metric of the orchestrator (served on /metrics by the Faust web server)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter("flywheel_orchestrator_decisions_total", "Trigger decisions", ["decision", "trigger"])
RUN_ENDS = Counter("flywheel_orchestrator_runs_ended_total", "Training runs by how they ended", ["outcome"])
STAGE_CHANGES = Counter("flywheel_orchestrator_stage_changes_total",
                        "Lifecycle decisions announced (promote, reject, rollback), by how they were decided",
                        ["action", "by"])

# SageMaker spend per run (TrainingRunSucceeded's billable_seconds / estimated_cost_usd / spot_savings_usd,
# launchers/pricing.py). Local runs report nothing and add nothing.
TRAINING_BILLABLE_SECONDS = Counter("flywheel_orchestrator_training_billable_seconds_total",
                                    "SageMaker billable training seconds of succeeded runs", ["model_id", "instance_type"])
TRAINING_COST = Counter("flywheel_orchestrator_training_cost_usd_total",
                        "Estimated SageMaker training cost of succeeded runs, USD", ["model_id", "instance_type"])
TRAINING_SPOT_SAVINGS = Counter("flywheel_orchestrator_training_spot_savings_usd_total",
                                "Estimated managed-spot savings of succeeded runs, USD", ["model_id", "instance_type"])
RUN_COST = Histogram("flywheel_orchestrator_run_cost_usd", "Estimated SageMaker cost of one succeeded run, USD",
                     ["model_id"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100))


def record_run_cost(record: Mapping[str, Any]) -> None:
    """Count a TrainingRunSucceeded's billing fields (None: nothing to count)."""
    model, instance = record["model_id"], record.get("instance_type") or "unknown"
    if record.get("billable_seconds") is not None:
        TRAINING_BILLABLE_SECONDS.labels(model, instance).inc(record["billable_seconds"])
    if record.get("estimated_cost_usd") is not None:
        TRAINING_COST.labels(model, instance).inc(record["estimated_cost_usd"])
        TRAINING_SPOT_SAVINGS.labels(model, instance).inc(record.get("spot_savings_usd") or 0.0)
        RUN_COST.labels(model).observe(record["estimated_cost_usd"])
STATE_WRITES = Counter("flywheel_orchestrator_state_writes_total",
                       "Conditional writes of per-model state documents: took (epoch + 1), written, fenced (another "
                       "worker owns the model now)", ["outcome"])
OWNED_MODELS = Gauge("flywheel_orchestrator_owned_models", "Models whose state this worker holds (owned partitions)")
TRIGGER_RETRIES = Counter("flywheel_orchestrator_trigger_retries_total",
                          "Times a trigger's step failed (S3, broker) and was retried at the same record")
