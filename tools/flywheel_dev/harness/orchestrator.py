"""Put a dataset version on the stack the way ingest would (data, manifest, DatasetVersionReady) and watch
what the orchestrator answers. Used by tests, benchmarks and demos that run without the ingest service."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer

from flywheel.codec import AvroCodec, Decoded
from flywheel.events import envelope, now_ms
from flywheel.kafka import confluent_consumer_config, confluent_producer_config
from flywheel.settings import FlywheelSettings


def put_dataset(s3: Any, bucket: str, model_id: str, version: str, examples: list[dict]) -> tuple[str, dict]:
    """Data as one .jsonl object under datasets/<model_id>/<version>/ plus its manifest; (manifest_uri, manifest)."""
    prefix = f"datasets/{model_id}/{version}/"
    body = "".join(json.dumps(e) + "\n" for e in examples).encode()
    etag = s3.put_object(Bucket=bucket, Key=f"{prefix}part-0.jsonl", Body=body)["ETag"].strip('"')
    objects = [{"key": f"{prefix}part-0.jsonl", "etag": etag, "size_bytes": len(body), "rows": len(examples),
                "format": "jsonl"}]
    labels: dict[str, int] = {}
    for e in examples:
        labels[e["label"]] = labels.get(e["label"], 0) + 1
    version_id = hashlib.sha256("".join(o["key"] + o["etag"] for o in objects).encode()).hexdigest()[:16]
    manifest = {"model_id": model_id, "dataset_version_id": version_id, "bucket": bucket, "prefix": prefix,
                "objects": objects, "row_count": len(examples), "columns": ["text", "label"],
                "label_counts": labels, "content_hash": hashlib.sha256(body).hexdigest(),
                "first_object_at": now_ms(), "created_at": now_ms()}
    key = f"manifests/{model_id}/{version_id}.json"
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest).encode())
    return f"s3://{bucket}/{key}", manifest


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


def produce(settings: FlywheelSettings, codec: AvroCodec, topic: str, schema: str, record: dict) -> None:
    producer = Producer(confluent_producer_config(settings))
    producer.produce(topic, key=record["model_id"].encode(), value=codec.encode(schema, record))
    if producer.flush(10):
        raise RuntimeError(f"could not deliver to {topic}")


class Watcher:
    """Reads the orchestrator's output topics from the start and keeps the events about one model (None: all)."""

    def __init__(self, settings: FlywheelSettings, codec: AvroCodec, model_id: str | None,
                 topics: tuple[str, ...]) -> None:
        self.codec, self.model_id = codec, model_id
        self.consumer = Consumer(confluent_consumer_config(settings, f"watch-{uuid.uuid4()}", from_beginning=True))
        self.consumer.subscribe(list(topics))
        self.events: list[tuple[str, Decoded, int]] = []  # (topic, event, received at ms)

    def wait_for(self, done: Callable[[list[tuple[str, Decoded, int]]], bool], timeout_s: float) -> list:
        deadline = time.monotonic() + timeout_s
        while not done(self.events):
            if time.monotonic() > deadline:
                names = [(t, e.record.get("run_id")) for t, e, _ in self.events]
                raise TimeoutError(f"no expected events within {timeout_s:.0f}s; seen {names}")
            message = self.consumer.poll(0.1)
            if message is None or message.error():
                continue
            event = self.codec.decode(message.value())
            if self.model_id is None or event.record.get("model_id") == self.model_id:
                self.events.append((message.topic(), event, now_ms()))
        return self.events

    def of(self, topic: str) -> list[dict]:
        return [e.record for t, e, _ in self.events if t == topic]

    def close(self) -> None:
        self.consumer.close()
