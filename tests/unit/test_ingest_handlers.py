"""The ingest handlers with fakes at their edges: S3 store, SQS queue and the broker's acknowledged publish."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from flywheel.bootstrap import build_codec
from flywheel.publish import TopicEncoder
from flywheel.settings import FlywheelSettings
from flywheel_ingest.app import close_config
from flywheel_ingest.closer import VersionCloser
from flywheel_ingest.handlers import Ingestor, NotificationPoller, ReconciliationScan
from flywheel_ingest.ports import QueueMessage
from flywheel_ingest.settings import IngestSettings
from support.memory_store import MemoryStore

BUCKET = "flywheel-data"
CODEC = build_codec(FlywheelSettings())


class FakeQueue:
    name = "flywheel-s3-events"

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete(self, receipts: list[str]) -> int:
        self.deleted += receipts
        return 0


class FakeBroker:
    """publish(topic, record) as the app binds it: encoded per the catalogue, acknowledged on return."""

    def __init__(self, failures: int = 0) -> None:
        self.sent: list[tuple[str, bytes | None, dict[str, Any]]] = []
        self.failures = failures
        self.encoder = TopicEncoder(CODEC)

    async def publish(self, topic: str, record: dict[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unavailable")
        out = self.encoder.outgoing(topic, record)
        self.sent.append((out.topic, out.key, CODEC.decode(out.value).record))

    def topics(self) -> list[str]:
        return [t for t, _, _ in self.sent]


def notification(store: MemoryStore, key: str, n: int) -> QueueMessage:
    seen = store.seen(key)
    record = {"eventName": "ObjectCreated:Put", "eventTime": "2024-05-01T10:00:00.000Z",
              "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "size": seen.size, "eTag": seen.etag}}}
    return QueueMessage(f"m{n}", f"r{n}", json.dumps({"Records": [record]}))


def make(tmp_path: Path, broker: FakeBroker, store: MemoryStore | None = None) -> tuple[Ingestor, FakeQueue]:
    settings = IngestSettings(data_dir=tmp_path, quiet_period_s=3600)
    store, queue = store or MemoryStore(), FakeQueue()
    closer = VersionCloser(store, close_config(settings))
    return Ingestor(settings, store, closer, broker.publish, ThreadPoolExecutor(2), queue), queue


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_duplicated_notifications_give_one_version_and_are_deleted_after_it(tmp_path: Path) -> None:
    broker = FakeBroker()
    ingestor, queue = make(tmp_path, broker)
    store = ingestor.store
    store.objects = {"datasets/m/v1/a.jsonl": b'{"text": "a", "label": "x"}\n', "datasets/m/v1/_SUCCESS": b""}
    messages = [notification(store, k, i) for i, k in enumerate(["datasets/m/v1/a.jsonl",
                                                                 "datasets/m/v1/_SUCCESS"] * 2)]
    test_event = QueueMessage("t", "r-test", json.dumps({"Event": "s3:TestEvent"}))

    async def scenario() -> None:
        poller = NotificationPoller(ingestor, queue)
        await poller.handle([test_event, messages[0], messages[1]])
        await ingestor.idle()
        await poller.handle(messages[2:])  # redelivered after the version is done
        await ReconciliationScan(ingestor).scan_once()  # and the scan lists the same objects
        await ingestor.idle()

    run(scenario())
    assert broker.topics() == ["dataset.version-ready"]
    topic, key, record = broker.sent[0]
    assert key == b"m" and record["envelope"]["correlation_id"] == f"s3://{BUCKET}/datasets/m/v1/"
    assert sorted(queue.deleted) == ["r-test", "r0", "r1", "r2", "r3"]
    assert any(k.startswith("ingest-state/done/m/") for k in store.docs)


def test_nothing_is_deleted_until_the_event_is_acknowledged(tmp_path: Path) -> None:
    broker = FakeBroker(failures=1)
    ingestor, queue = make(tmp_path, broker)
    ingestor.store.objects = {"datasets/m/v1/a.jsonl": b'{"text": "a", "label": "x"}\n',
                              "datasets/m/v1/_SUCCESS": b""}

    async def scenario() -> list[str]:
        poller = NotificationPoller(ingestor, queue)
        await poller.handle([notification(ingestor.store, k, i) for i, k in enumerate(sorted(ingestor.store.objects))])
        await ingestor.idle()
        after_failure = list(queue.deleted)
        [version] = ingestor.funnel.pending.values()
        version.retry_at_ms = 0  # skip the back-off
        ingestor.close_due()
        await ingestor.idle()
        return after_failure

    assert run(scenario()) == []
    assert broker.topics() == ["dataset.version-ready"] and sorted(queue.deleted) == ["r0", "r1"]


def test_garbage_is_dead_lettered_and_unsafe_keys_rejected_once(tmp_path: Path) -> None:
    broker = FakeBroker()
    ingestor, queue = make(tmp_path, broker)
    store = ingestor.store
    store.objects = {"datasets/../x.jsonl": b"{}", "manifests/m/dv-1.json": b"{}"}
    unsafe = notification(store, "datasets/../x.jsonl", 1)
    own = notification(store, "manifests/m/dv-1.json", 2)

    async def scenario() -> None:
        poller = NotificationPoller(ingestor, queue)
        await poller.handle([QueueMessage("g", "r-garbage", "{not json"), unsafe, own])
        await poller.handle([unsafe])

    run(scenario())
    assert broker.topics() == ["ingest.dead-letter", "dataset.rejected"]
    dead, rejected = broker.sent[0][2], broker.sent[1][2]
    assert dead["source_topic"] == "sqs:flywheel-s3-events" and dead["original_value"] == b"{not json"
    assert (rejected["reason"], rejected["key"]) == ("PATH_TRAVERSAL", "datasets/../x.jsonl")
    assert sorted(queue.deleted) == ["r-garbage", "r1", "r1", "r2"]


@pytest.mark.parametrize("pages", [1, 2])
def test_the_scan_alone_finds_a_version_and_persists_its_cursor(tmp_path: Path, pages: int) -> None:
    broker = FakeBroker()
    ingestor, _ = make(tmp_path, broker)
    ingestor.settings = IngestSettings(data_dir=tmp_path, quiet_period_s=3600, scan_page_size=2,
                                       scan_max_keys_per_tick=2 * pages)
    ingestor.store.objects = {f"datasets/m/v1/{n}.jsonl": b'{"text": "a", "label": "x"}\n' for n in "abc"}
    ingestor.store.objects["datasets/m/v1/_SUCCESS"] = b""
    scan = ReconciliationScan(ingestor)

    async def scenario() -> None:
        while not broker.sent:
            await scan.scan_once()
            await ingestor.idle()

    run(scenario())
    assert broker.topics() == ["dataset.version-ready"] and len(broker.sent[0][2]["objects"]) == 3
    cursor = ingestor.store.docs.get("ingest-state/scan-cursor/datasets.json")
    # One page a tick stops mid-listing and records where; a tick that reaches the end wraps to the start.
    assert cursor == ({"prefix": "datasets/", "start_after": "datasets/m/v1/a.jsonl"} if pages == 1 else None)


def test_the_app_is_wired_from_settings_without_connecting(tmp_path: Path) -> None:
    from flywheel_ingest.app import create_app

    with_queue = create_app(IngestSettings(data_dir=tmp_path, notification_queue_url="http://127.0.0.1:9/q"))
    scan_only = create_app(IngestSettings(data_dir=tmp_path / "b", web_port=6067))
    assert with_queue.producer_only and scan_only.producer_only  # no Kafka topic consumed
    # The poller, the scan and the quiet-period timer; scan-only has no poller.
    assert (len(with_queue._app_tasks), len(scan_only._app_tasks)) == (3, 2)
