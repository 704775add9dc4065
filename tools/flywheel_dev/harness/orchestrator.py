"""Stand in for ingest and the monitor around the orchestrator and watch what it answers.

Puts a dataset version on the stack the way ingest would (data, manifest, DatasetVersionReady), builds
retrain requests, and reads the orchestrator's answers off a `flywheel_dev.timeline.Timeline`. Used by
tests, benchmarks and demos that run without the ingest service.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

from flywheel.catalogue import topic
from flywheel.events import envelope
from flywheel.publish import KafkaPublisher
from flywheel_dev.datasets import put_dataset
from flywheel_dev.timeline import Seen, Timeline


def dataset_ready(manifest_uri: str, manifest: dict) -> dict[str, Any]:
    return {"envelope": envelope("ingest"), "model_id": manifest["model_id"],
            "dataset_version_id": manifest["dataset_version_id"], "bucket": manifest["bucket"],
            "prefix": manifest["prefix"], "manifest_uri": manifest_uri,
            "objects": [{"key": o["key"], "etag": o["etag"], "size_bytes": o["size_bytes"], "rows": o["rows"]}
                        for o in manifest["objects"]],
            "row_count": manifest["row_count"], "content_hash": manifest["content_hash"],
            "columns": manifest["columns"], "label_counts": manifest["label_counts"],
            "first_object_at": manifest["first_object_at"]}


def retrain_requested(model_id: str, trigger: str = "METRIC_BREACH", **evidence: Any) -> dict[str, Any]:
    return {"envelope": envelope("monitor"), "model_id": model_id, "trigger": trigger,
            "rule": evidence.pop("rule", "accuracy-floor"), **evidence}


def publish_dataset(publisher: KafkaPublisher, s3: Any, model_id: str, version: str, examples: list[dict],
                    bucket: str = "flywheel-data") -> dict[str, Any]:
    """Data and manifest in S3 (`flywheel_dev.datasets.put_dataset`), then DatasetVersionReady; the record."""
    uri, manifest = put_dataset(s3, bucket, model_id, version, examples)
    record = dataset_ready(uri, manifest)
    publisher.publish("dataset.version-ready", record)
    return record


def _about(topic_name: str, model_id: str | None):
    return lambda seen: seen.topic == topic_name and (model_id is None or seen.get("model_id") == model_id)


def answers(timeline: Timeline, topic_name: str, model_id: str | None = None) -> list[dict[str, Any]]:
    """The records seen so far on `topic_name` (about `model_id` when given), in arrival order."""
    return [s.record for s in timeline.matching(_event_name(topic_name), _about(topic_name, model_id))]


def wait_for(timeline: Timeline, topic_name: str, model_id: str | None = None, count: int = 1,
             timeout_s: float = 60.0) -> list[Seen]:
    """Block until `count` records on `topic_name` (about `model_id` when given) arrived; all of them."""
    return timeline.wait_for(_event_name(topic_name), _about(topic_name, model_id), timeout_s, count)


def _event_name(topic_name: str) -> str:
    return topic(topic_name).value_schema.rsplit(".", 1)[-1]


def put_container_output(s3: Any, key: str, accuracy: float = 0.9, baseline: float = 0.3) -> None:
    """What a SageMaker training container leaves behind (moto never runs one): output.tar.gz with metrics."""
    metrics = json.dumps({"metrics": {"accuracy": accuracy}, "baseline_metrics": {"accuracy": baseline}}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("metrics.json")
        info.size = len(metrics)
        tar.addfile(info, io.BytesIO(metrics))
    s3.put_object(Bucket="flywheel-artifacts", Key=key, Body=buf.getvalue())
