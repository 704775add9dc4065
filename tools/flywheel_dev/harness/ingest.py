"""Driving a real ingest process on a local stack: used by the integration tests and the benchmark."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flywheel import catalogue
from flywheel.bootstrap import build_codec
from flywheel_dev.demo import settings_for
from flywheel_dev.localstack import LocalStack, free_port
from flywheel_dev.platform import ServiceProcess
from flywheel_dev.timeline import Seen, Timeline

OUTPUTS = catalogue.produced_by(catalogue.Service.INGEST)


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


class IngestEvents:
    """Ingest's output events as the tests read them: a `Timeline` (the shared background watch of every
    topic, from the beginning) filtered by `(topic, record)` predicates. Only records that decode as their
    topic's schema count: other tests on the shared stack put garbage on these topics on purpose."""

    def __init__(self, stack: LocalStack) -> None:
        settings = settings_for(stack)
        self.timeline = Timeline(settings, build_codec(settings))

    def matching(self, match: Callable[[str, dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [s.record for s in self.seen(match)]

    def seen(self, match: Callable[[str, dict[str, Any]], bool]) -> list[Seen]:
        """Matching events with their arrival time (`Seen.at`, monotonic seconds since `timeline.started`)."""
        return [s for s in self.timeline.events
                if s.topic in OUTPUTS and s.name == catalogue.topic(s.topic).value_schema and match(s.topic, s.record)]

    def wait_for(self, match: Callable[[str, dict[str, Any]], bool], timeout: float = 30.0,
                 count: int = 1) -> list[dict[str, Any]]:
        """Wait until `count` events match (or the timeout), then return every match."""
        deadline = time.monotonic() + timeout
        while len(found := self.matching(match)) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return found

    def linger(self, seconds: float) -> None:
        """Let `seconds` pass while the watch keeps reading: room for a duplicate to show."""
        time.sleep(seconds)

    def close(self) -> None:
        self.timeline.close()


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
