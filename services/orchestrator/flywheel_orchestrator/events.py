"""Avro records <-> domain objects, and the events the orchestrator produces (pure: no I/O)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from flywheel.errors import InvalidEvent
from flywheel.events import envelope, to_millis
from flywheel.lifecycle import ModelStages
from flywheel_orchestrator.domain import DatasetRef, RunSpec, Trigger
from flywheel_orchestrator.policy import Kind

PRODUCER = "orchestrator"
_EVIDENCE = ("model_version", "rule", "metric", "aggregation", "comparator", "observed_value", "threshold",
             "sample_size", "detail")


def dataset_ref(record: dict[str, Any]) -> DatasetRef:
    return DatasetRef(
        model_id=record["model_id"], dataset_version_id=record["dataset_version_id"],
        manifest_uri=record["manifest_uri"], row_count=int(record["row_count"]),
        objects=tuple((o["key"], o["etag"], int(o.get("rows") or 0)) for o in record["objects"]),
        landed_at_ms=to_millis(record["first_object_at"]), prefix=str(record.get("prefix") or ""))


def trigger_of(name: str, topic: str, record: dict[str, Any], now_ms: int) -> Trigger:
    """A trigger from a consumed event; a retrain request that names no retrain kind is invalid."""
    common = {"model_id": record["model_id"], "event_id": record["envelope"]["event_id"],
              "causation": record["envelope"], "received_at_ms": now_ms}
    if name.endswith("DatasetVersionReady"):
        return Trigger(kind=Kind.NEW_DATA, dataset=dataset_ref(record), **common)
    kind = Kind.MANUAL if topic == "retrain.manual-requested" else _retrain_kind(record.get("trigger"))
    evidence = {k: str(record[k]) for k in _EVIDENCE if record.get(k) not in (None, "")}
    return Trigger(kind=kind, evidence=evidence, **common)


def _retrain_kind(value: Any) -> Kind:
    if value in (Kind.METRIC_BREACH, Kind.DRIFT, Kind.MANUAL):
        return Kind(value)
    raise InvalidEvent(f"RetrainRequested.trigger must be METRIC_BREACH, DRIFT or MANUAL, got {value!r}")


def spec_of_started(record: dict[str, Any], manifests: Mapping[str, str] | None = None) -> RunSpec:
    """The run as TrainingRunStarted recorded it: enough to resume it after a restart. `manifests` (dataset
    version -> manifest URI, from the versions' DatasetVersionReady) resolve the versions it trains on."""
    landed = record.get("data_landed_at")
    return RunSpec(
        run_id=record["run_id"], model_id=record["model_id"], dataset_version_id=record["dataset_version_id"],
        kind=Kind(record["trigger"]), manifest_uri=record["manifest_uri"],
        trigger_event_id=record["trigger_event_id"], correlation_id=record["envelope"]["correlation_id"],
        data_landed_at_ms=to_millis(landed) if landed is not None else None,
        lineage=dict(record.get("lineage") or {}), training_data=training_data_of(record, manifests or {}))


def training_data_of(record: dict[str, Any], manifests: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The versions a TrainingRunStarted names, with their manifests; () (the run's own version alone) when it
    names only that one, or one whose manifest is unknown."""
    ids = list(record.get("training_dataset_version_ids") or ())
    if ids in ([], [record["dataset_version_id"]]) or any(v not in manifests for v in ids):
        return ()
    return tuple((v, manifests[v]) for v in ids)


RUN_EVENT_NAMESPACE = uuid.UUID("6f1c2a0e-4d1b-5e53-9a57-0c1d2f0e9b11")


def fixed_id(record: dict[str, Any], run_id: str, what: str) -> dict[str, Any]:
    """The event's id derived from its run and kind: a re-sent event (outbox after a crash, or a worker that
    lost a model mid-publish) carries the same id, so a consumer can drop the copy."""
    record["envelope"]["event_id"] = str(uuid.uuid5(RUN_EVENT_NAMESPACE, f"{run_id}/{what}"))
    return record


def run_started(spec: RunSpec, causation: dict[str, Any], launcher: str, hps: dict[str, str],
                job: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "envelope": envelope(PRODUCER, causation=causation), "run_id": spec.run_id, "model_id": spec.model_id,
        "dataset_version_id": spec.dataset_version_id, "trigger": spec.kind.value, "launcher": launcher,
        "job_name": spec.job_name, "manifest_uri": spec.manifest_uri, "trigger_event_id": spec.trigger_event_id,
        "data_landed_at": spec.data_landed_at_ms, "hyperparameters": dict(hps), "lineage": dict(spec.lineage),
        "training_dataset_version_ids": spec.training_version_ids,
        **job_links(job), **workflow_execution(job)}


def job_links(job: Mapping[str, str] | None) -> dict[str, str | None]:
    """The SageMaker job's ARN and CloudWatch logs link (None for a local run)."""
    return {"job_arn": (job or {}).get("job_arn") or None, "logs_url": (job or {}).get("logs_url") or None}


def workflow_execution(job: Mapping[str, str] | None) -> dict[str, str | None]:
    """The Flyte execution that runs the workflow (project:domain:name; None when it ran in this process)."""
    return {"execution_id": (job or {}).get("execution_id") or None}


def job_cost(job: Mapping[str, str] | None) -> dict[str, Any]:
    """Billable seconds, instance type and estimated cost of a SageMaker job (launchers/pricing.py); None
    where the launcher reported nothing (a local run, or an instance type missing from the price table)."""
    job = job or {}

    def number(key: str) -> float | None:
        return float(job[key]) if job.get(key) not in (None, "") else None

    return {**job_links(job), "instance_type": job.get("instance_type") or None,
            "billable_seconds": number("billable_seconds"), "estimated_cost_usd": number("estimated_cost_usd"),
            "spot_savings_usd": number("spot_savings_usd")}


def _run_fields(spec: RunSpec, causation: dict[str, Any]) -> dict[str, Any]:
    return {"envelope": envelope(PRODUCER, causation=causation), "run_id": spec.run_id,
            "model_id": spec.model_id, "dataset_version_id": spec.dataset_version_id, "job_name": spec.job_name}


def run_succeeded(spec: RunSpec, causation: dict[str, Any], artifact_uri: str, metrics: dict[str, float],
                  duration_s: float, job: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {**_run_fields(spec, causation), "artifact_uri": artifact_uri, "metrics": dict(metrics),
            "duration_seconds": float(duration_s), **job_cost(job), **workflow_execution(job)}


def run_failed(spec: RunSpec, causation: dict[str, Any], reason: str, duration_s: float,
               job: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {**_run_fields(spec, causation), "reason": reason or "unknown", "duration_seconds": float(duration_s),
            **job_links(job), **workflow_execution(job)}


def run_superseded(stale: RunSpec, by: RunSpec, causation: dict[str, Any]) -> dict[str, Any]:
    return {**_run_fields(stale, causation), "superseded_by_run_id": by.run_id,
            "superseded_by_dataset_version_id": by.dataset_version_id}


def version_registered(spec: RunSpec, causation: dict[str, Any], registration: dict[str, Any]) -> dict[str, Any]:
    """ModelVersionRegistered with the lineage a user walks back to the data and the decision."""
    lineage = {**spec.lineage, "manifest_uri": spec.manifest_uri, "trigger_event_id": spec.trigger_event_id,
               "trigger": spec.kind.value, "correlation_id": spec.correlation_id,
               "started_event_id": causation["event_id"]}
    return {"envelope": envelope(PRODUCER, causation=causation), "model_id": spec.model_id,
            "model_version": spec.run_id, "run_id": spec.run_id, "dataset_version_id": spec.dataset_version_id,
            "artifact_uri": registration["artifact_uri"], "metrics": registration["metrics"],
            "baseline_metrics": registration["baseline_metrics"], "trigger": spec.kind.value,
            "lineage": lineage, "reference_distribution": registration.get("reference_distribution", {}),
            "training_dataset_version_ids": spec.training_version_ids}


# --- the model lifecycle: one event per stage-store history entry ----------------------------------------

STAGE_TOPICS = {"promote": "model.version-promoted", "reject": "model.version-rejected",
                "rollback": "model.version-rolled-back", "shadow": "model.version-shadowed"}


def stage_event(stages: ModelStages, entry: dict[str, Any], causation: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The event announcing a history entry of the stage store (promote, reject, rollback or shadow)."""
    action, version = entry["action"], entry["version"]
    common = {"envelope": envelope(PRODUCER, causation=causation), "model_id": stages.model_id,
              "reason": entry["reason"], "evidence": {k: float(v) for k, v in (entry.get("evidence") or {}).items()}}
    if action == "promote":
        record = {**common, "model_version": version, "artifact_uri": stages.versions[version].artifact_uri,
                  "previous_version": entry.get("from_version")}
    elif action == "reject":
        record = {**common, "model_version": version, "champion_version": entry.get("from_version")}
    elif action == "shadow":  # docs/decisions/0013-shadow-evaluation.md
        record = {**common, "model_version": version, "artifact_uri": stages.versions[version].artifact_uri,
                  "production_version": entry.get("from_version") or ""}
    elif action == "rollback":
        record = {**common, "from_version": entry["from_version"], "to_version": version,
                  "artifact_uri": stages.versions[version].artifact_uri}
    else:
        raise ValueError(f"no event announces a {action!r} entry")
    return STAGE_TOPICS[action], record
