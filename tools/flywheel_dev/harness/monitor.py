"""Builders of the events the monitor consumes, for tests, benchmarks and local experiments."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flywheel.bootstrap import build_codec
from flywheel.catalogue import Service, topic_for_event
from flywheel.events import envelope, now_ms
from flywheel.publish import KafkaPublisher
from flywheel.settings import FlywheelSettings
from flywheel.topicreader import read_to_end

SERVING = Service.SERVING
ORCHESTRATOR = Service.ORCHESTRATOR


def metric_event(model_id: str, value: float, sample_count: int = 100, *, metric: str = "accuracy",
                 at_ms: int | None = None, window_ms: int = 1000, model_version: str = "v1",
                 summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ModelMetricsObserved whose window ends at `at_ms` (event time)."""
    end = at_ms if at_ms is not None else now_ms()
    return {"envelope": envelope(SERVING, occurred_at_ms=end), "model_id": model_id,
            "model_version": model_version, "metric": metric, "value": value, "sample_count": sample_count,
            "window_start": end - window_ms, "window_end": end, "summary": summary}


def histogram_summary(bucket_counts: list[int], bounds: list[float], low: float, high: float) -> dict[str, Any]:
    """A MetricSummary from bucket counts, each bucket's observations taken at its midpoint."""
    edges = [low, *bounds, high]
    mids = [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)]
    return {"count": sum(bucket_counts), "sum": sum(c * x for c, x in zip(bucket_counts, mids, strict=True)),
            "sum_squares": sum(c * x * x for c, x in zip(bucket_counts, mids, strict=True)),
            "min": low, "max": high, "bucket_bounds": list(bounds), "bucket_counts": list(bucket_counts)}


def registration(model_id: str, version: str = "v1", reference: dict[str, list[float]] | None = None,
                 at_ms: int | None = None) -> dict[str, Any]:
    """A ModelVersionRegistered that makes `model_id` known (optionally with a drift reference)."""
    return {"envelope": envelope(ORCHESTRATOR, occurred_at_ms=at_ms), "model_id": model_id,
            "model_version": version, "run_id": f"run-{version}", "dataset_version_id": "ds-1",
            "artifact_uri": f"s3://flywheel-artifacts/{model_id}/{version}/model.tar.gz",
            "metrics": {"accuracy": 0.95}, "baseline_metrics": {}, "trigger": "NEW_DATA", "lineage": {},
            "reference_distribution": reference or {}}


def training_events(model_id: str, run_id: str = "run-1", landed_ms: int | None = None) -> list[tuple[str, dict]]:
    """One run of each status (started, succeeded, failed, superseded), as (event name, record) pairs."""
    start = now_ms()
    common = {"model_id": model_id, "dataset_version_id": "ds-1", "job_name": f"job-{run_id}"}
    env = envelope(ORCHESTRATOR)
    return [
        ("TrainingRunStarted", {"envelope": env, "run_id": run_id, **common, "trigger": "NEW_DATA",
                                "launcher": "local", "manifest_uri": "s3://flywheel-data/m.json",
                                "trigger_event_id": "e-1", "data_landed_at": landed_ms or start - 42_000,
                                "hyperparameters": {}}),
        ("TrainingRunSucceeded", {"envelope": envelope(ORCHESTRATOR, causation=env), "run_id": run_id, **common,
                                  "artifact_uri": "s3://flywheel-artifacts/x", "metrics": {"accuracy": 0.9},
                                  "duration_seconds": 31.5}),
        ("TrainingRunFailed", {"envelope": envelope(ORCHESTRATOR), "run_id": f"{run_id}-b", **common,
                               "reason": "out of memory", "duration_seconds": 12.0}),
        ("TrainingRunSuperseded", {"envelope": envelope(ORCHESTRATOR), "run_id": f"{run_id}-c", **common,
                                   "superseded_by_run_id": run_id, "superseded_by_dataset_version_id": "ds-2"}),
    ]


class Bus:
    """Publish the events the monitor consumes (each on the one topic that carries it); read a topic from the
    beginning to its end, decoded."""

    def __init__(self, bootstrap: str) -> None:
        self.settings = FlywheelSettings(kafka_bootstrap=bootstrap)
        self.codec = build_codec(self.settings)
        self.publisher = KafkaPublisher(self.settings, self.codec)

    def send(self, name: str, record: dict[str, Any], raw: bytes | None = None) -> None:
        """Publish `record` (or the `raw` bytes in its place, keyed by the record) and wait for the ack."""
        self.publisher.publish(topic_for_event(name), record, raw_value=raw)

    def read(self, name: str) -> list[dict[str, Any]]:
        return read_to_end(self.settings, self.codec, [name], reader="monitor-harness").records(name)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    """Poll `condition` until it returns something truthy; TimeoutError says what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.3)
    raise TimeoutError(f"{what} within {timeout:.0f}s")
