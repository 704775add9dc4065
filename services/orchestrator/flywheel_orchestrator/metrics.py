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

# Training spend per run (TrainingRunSucceeded's billable_seconds / estimated_cost_usd / spot_savings_usd,
# launchers/pricing.py; docs/decisions/0011). A run with no job at all (the local launcher: it trains on the
# cluster's own nodes, already paid for) counts under instance_type="local" with its run time as seconds and a
# cost of 0, so spend per model and cost per run cover every run; its event still carries no billing fields.
LOCAL_INSTANCE = "local"
TRAINING_BILLABLE_SECONDS = Counter("flywheel_orchestrator_training_billable_seconds_total",
                                    "Billable training seconds of succeeded runs (SageMaker BillableTimeInSeconds; "
                                    "instance_type=local: the run's time on the cluster's nodes)",
                                    ["model_id", "instance_type"])
TRAINING_COST = Counter("flywheel_orchestrator_training_cost_usd_total",
                        "Estimated training cost of succeeded runs, USD (0 for local runs)", ["model_id", "instance_type"])
TRAINING_SPOT_SAVINGS = Counter("flywheel_orchestrator_training_spot_savings_usd_total",
                                "Estimated managed-spot savings of succeeded runs, USD", ["model_id", "instance_type"])
# The 0 bucket holds the runs that cost nothing extra (local), so their quantile is 0, not half a cent.
RUN_COST = Histogram("flywheel_orchestrator_run_cost_usd", "Estimated training cost of one succeeded run, USD",
                     ["model_id"], buckets=(0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100))


def record_run_cost(record: Mapping[str, Any]) -> None:
    """Count a TrainingRunSucceeded's billing fields; a run with no job (local) as instance_type=local, cost 0.

    A SageMaker run whose instance type has no price counts its billable seconds and no cost (never a wrong one).
    """
    model = record["model_id"]
    if not record.get("job_arn") and not record.get("instance_type") and record.get("billable_seconds") is None:
        record = {**record, "instance_type": LOCAL_INSTANCE, "billable_seconds": record.get("duration_seconds"),
                  "estimated_cost_usd": 0.0, "spot_savings_usd": 0.0}
    instance = record.get("instance_type") or "unknown"
    if record.get("billable_seconds") is not None:
        TRAINING_BILLABLE_SECONDS.labels(model, instance).inc(max(0.0, float(record["billable_seconds"])))
    if record.get("estimated_cost_usd") is not None:
        TRAINING_COST.labels(model, instance).inc(max(0.0, float(record["estimated_cost_usd"])))
        TRAINING_SPOT_SAVINGS.labels(model, instance).inc(max(0.0, float(record.get("spot_savings_usd") or 0.0)))
        RUN_COST.labels(model).observe(float(record["estimated_cost_usd"]))


STATE_WRITES = Counter("flywheel_orchestrator_state_writes_total",
                       "Conditional writes of per-model state documents: took (epoch + 1), written, fenced (another "
                       "worker owns the model now)", ["outcome"])
OWNED_MODELS = Gauge("flywheel_orchestrator_owned_models", "Models whose state this worker holds (owned partitions)")
TRIGGER_RETRIES = Counter("flywheel_orchestrator_trigger_retries_total",
                          "Times a trigger's step failed (S3, broker) and was retried at the same record")
