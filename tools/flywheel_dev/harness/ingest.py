"""Driving a real ingest process on a local stack: used by the integration tests and the benchmark."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flywheel.codec import AvroCodec, Decoded
from flywheel.errors import CodecError
from flywheel_dev.localstack import free_port
from flywheel_dev.platform import ServiceProcess

OUTPUTS = ("dataset.version-ready", "dataset.rejected", "ingest.dead-letter")


def start_ingest(env: dict[str, str], workdir: Path, **overrides: str) -> ServiceProcess:
    """`python -m flywheel_ingest` on the stack in `env`, healthy on return; FLYWHEEL_* overrides by name."""
    workdir.mkdir(parents=True, exist_ok=True)
    extra = {f"FLYWHEEL_{k.upper()}": v for k, v in overrides.items()}
    full = {**env, "FLYWHEEL_DATA_DIR": str(workdir / "state"), "FLYWHEEL_LOG_FORMAT": "json", **extra}
    proc = ServiceProcess("ingest", free_port(), full, workdir / "ingest.log")
    proc.start()
    try:
        proc.wait_healthy(timeout=90)
    except BaseException:
        proc.kill()
        raise
    return proc


class EventReader:
    """Reads ingest's output topics from the beginning (fetch wait 10 ms: Tansu answers when it expires)."""

    def __init__(self, bootstrap: str, codec: AvroCodec, topics: tuple[str, ...] = OUTPUTS) -> None:
        from confluent_kafka import Consumer

        self.codec = codec
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ingest-reader-{uuid.uuid4()}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 10, "session.timeout.ms": 6000})
        self.consumer.subscribe(list(topics))
        self.events: list[tuple[str, Decoded, float]] = []  # (topic, event, local receive time)

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.consumer.poll(min(0.05, max(deadline - time.monotonic(), 0.001)))
            if message is None or message.error():
                continue
            try:
                decoded = self.codec.decode(message.value())
            except CodecError:  # other tests on the shared stack put garbage on these topics on purpose
                continue
            self.events.append((message.topic(), decoded, time.time()))

    def wait_for(self, match: Callable[[str, dict[str, Any]], bool], timeout: float = 30.0,
                 count: int = 1) -> list[dict[str, Any]]:
        """Poll until `count` events match (or the timeout), then return every match."""
        deadline = time.monotonic() + timeout
        while len(self.matching(match)) < count and time.monotonic() < deadline:
            self.poll(0.05)
        return self.matching(match)

    def matching(self, match: Callable[[str, dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [d.record for t, d, _ in self.events if match(t, d.record)]

    def close(self) -> None:
        self.consumer.close()


def under(prefix: str, topic: str = "dataset.version-ready") -> Callable[[str, dict[str, Any]], bool]:
    """Events of `topic` about the version at `prefix` (rejections: about any key under it)."""
    def match(name: str, record: dict[str, Any]) -> bool:
        where = record.get("prefix") or record.get("key") or ""
        return name == topic and where.startswith(prefix)
    return match


def put_version(s3: Any, bucket: str, prefix: str, files: dict[str, bytes], marker: str | None = "_SUCCESS") -> None:
    for name, body in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=body)
    if marker:
        s3.put_object(Bucket=bucket, Key=prefix + marker, Body=b"")


def jsonl(rows: int, labels: tuple[str, ...] = ("billing", "shipping", "refund", "other")) -> bytes:
    return "".join(f'{{"text": "message {i}", "label": "{labels[i % len(labels)]}"}}\n'
                   for i in range(rows)).encode()



def metric(base_url: str, sample: str, **labels: str) -> float:
    """Sum of a sample's values on the service's /metrics page, over series that carry `labels`."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == sample and labels.items() <= s.labels.items())


def s3_event(bucket: str, key: str, etag: str, size: int, at: str = "2024-05-01T10:00:00.000Z") -> str:
    """The body S3 sends to SQS for one created object (keys URL-encoded, as S3 does)."""
    import json
    from urllib.parse import quote_plus

    return json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "eventTime": at,
                                    "s3": {"bucket": {"name": bucket},
                                           "object": {"key": quote_plus(key), "size": size, "eTag": etag}}}]})


def stack_client(env: dict[str, str], service: str) -> Any:
    """A boto3 client on the local stack described by `env` (its moto credentials, never real ones)."""
    import boto3

    return boto3.client(service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
