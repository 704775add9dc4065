"""The ingest handlers with fakes at their edges: S3 store, SQS queue and the broker's acknowledged publish."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from prometheus_client import REGISTRY

from flywheel.bootstrap import build_codec
from flywheel.publish import TopicEncoder
from flywheel.settings import FlywheelSettings
from flywheel_ingest import handlers
from flywheel_ingest.adapters import transient_store_error
from flywheel_ingest.app import close_config
from flywheel_ingest.closer import VersionCloser
from flywheel_ingest.events import ready_event, version_too_large
from flywheel_ingest.handlers import Ingestor, NotificationPoller, ReconciliationScan
from flywheel_ingest.ports import QueueMessage, Unpublishable
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

    def size(self, topic: str, record: dict[str, Any]) -> int:
        out = self.encoder.outgoing(topic, record)
        return len(out.value) + len(out.key or b"")

    def topics(self) -> list[str]:
        return [t for t, _, _ in self.sent]


def notification(store: MemoryStore, key: str, n: int) -> QueueMessage:
    seen = store.seen(key)
    record = {"eventName": "ObjectCreated:Put", "eventTime": "2024-05-01T10:00:00.000Z",
              "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "size": seen.size, "eTag": seen.etag}}}
    return QueueMessage(f"m{n}", f"r{n}", json.dumps({"Records": [record]}))


def make(tmp_path: Path, broker: FakeBroker, store: MemoryStore | None = None,
         **settings: Any) -> tuple[Ingestor, FakeQueue]:
    config = IngestSettings(data_dir=tmp_path, quiet_period_s=3600, **settings)
    store, queue = store or MemoryStore(), FakeQueue()
    closer = VersionCloser(store, close_config(config))
    return Ingestor(config, store, closer, broker.publish, ThreadPoolExecutor(2), queue, event_size=broker.size,
                    transient=transient_store_error), queue


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
    from flywheel.faust_app import make_app
    from flywheel_ingest.app import create_app

    with_queue = create_app(IngestSettings(data_dir=tmp_path, notification_queue_url="http://127.0.0.1:9/q"))
    scan_only = create_app(IngestSettings(data_dir=tmp_path / "b", web_port=6067))
    assert with_queue.producer_only and scan_only.producer_only  # no Kafka topic consumed
    # Beyond every service's own tasks (health): the poller, the scan and the quiet-period timer; scan-only
    # has no poller.
    base = len(make_app("ingest-wiring-base", IngestSettings(data_dir=tmp_path / "c", web_port=6068))._app_tasks)
    assert (len(with_queue._app_tasks) - base, len(scan_only._app_tasks) - base) == (3, 2)


# --- poison pills: oversized events, transient reads, bodies that are not S3 events ------------------------

PRODUCER_LIMIT = 1_048_576  # aiokafka's max_request_size: the producer refuses a record over it


class RefusingBroker(FakeBroker):
    """A broker edge that refuses for good records over `limit` (or any on the `refuse` topics), as the Publish
    port reports it."""

    def __init__(self, limit: int = PRODUCER_LIMIT, refuse: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.limit, self.refuse, self.refused = limit, refuse, 0

    async def publish(self, topic: str, record: dict[str, Any]) -> None:
        if topic in self.refuse:
            self.refused += 1
            raise Unpublishable(f"{topic}: InvalidEvent: the record does not fit the schema")
        if self.size(topic, record) > self.limit:
            self.refused += 1
            raise Unpublishable(f"{topic}: MessageSizeTooLargeError: over {self.limit} bytes", too_large=True)
        await super().publish(topic, record)


def many_objects(store: MemoryStore, count: int, prefix: str = "datasets/m/v1/") -> list[QueueMessage]:
    for n in range(count):
        store.objects[f"{prefix}part-{n:05d}.jsonl"] = b'{"text": "a%d", "label": "x"}\n' % n
    store.objects[prefix + "_SUCCESS"] = b""
    return [notification(store, key, n) for n, key in enumerate(sorted(store.objects))]


def settle(ingestor: Ingestor, poller: NotificationPoller, messages: list[QueueMessage], rounds: int = 20) -> Any:
    """Handle the messages, then run due closes (skipping the back-off) until nothing is pending."""

    async def scenario() -> None:
        await poller.handle(messages)
        await ingestor.idle()
        for _ in range(rounds):
            if not ingestor.funnel.pending:
                return
            for version in ingestor.funnel.pending.values():
                version.retry_at_ms = 0
            ingestor.close_due()
            await ingestor.idle()

    return run(scenario())


def test_a_version_too_large_to_announce_is_rejected_once_instead_of_retried_forever(tmp_path: Path) -> None:
    broker = RefusingBroker()
    ingestor, queue = make(tmp_path, broker, max_event_bytes=16_384)
    messages = many_objects(ingestor.store, 300)
    settle(ingestor, NotificationPoller(ingestor, queue), messages)
    assert broker.topics() == ["dataset.rejected"]
    rejected = broker.sent[0][2]
    assert rejected["reason"] == "VERSION_TOO_LARGE" and rejected["key"] == "datasets/m/v1/"
    assert "300 objects" in rejected["detail"] and "16,384-byte limit" in rejected["detail"]
    assert "(about 240 of them would fit)" in rejected["detail"]
    assert "consolidate" in rejected["detail"] and rejected["dataset_version_id"].startswith("dv-")
    done = f"ingest-state/done/m/{rejected['dataset_version_id']}.json"
    assert done in ingestor.store.docs  # recorded like any rejection: never closed again
    assert sorted(queue.deleted) == sorted(m.receipt for m in messages) and not ingestor.funnel.pending
    run(ReconciliationScan(ingestor).scan_once())  # the scan lists it again: already done
    run(ingestor.idle())
    assert broker.topics() == ["dataset.rejected"]


def test_the_default_limit_refuses_a_version_the_producer_would_refuse() -> None:
    manifest = {"model_id": "support-intent", "dataset_version_id": "dv-" + "0" * 24, "bucket": BUCKET,
                "prefix": "datasets/support-intent/2024-05-01/", "row_count": 10_000, "columns": ["label", "text"],
                "label_counts": {"billing": 10_000}, "content_hash": "0" * 64, "first_object_at": 1,
                "objects": [{"key": f"datasets/support-intent/2024-05-01/part-{n:05d}.jsonl", "etag": "e" * 32,
                             "size_bytes": 4_096, "rows": 1, "version_id": None} for n in range(12_000)]}
    size = FakeBroker().size("dataset.version-ready", ready_event(manifest, "s3://b/manifests/x.json"))
    assert IngestSettings().max_event_bytes < PRODUCER_LIMIT < size  # ~89 bytes an object: 12,000 is too many
    assert "about 10,1" in version_too_large(manifest, size, IngestSettings().max_event_bytes).detail


def test_a_ready_event_the_broker_refuses_for_good_becomes_a_rejection(tmp_path: Path) -> None:
    broker = RefusingBroker(limit=2_000)  # a broker whose message.max.bytes is under FLYWHEEL_MAX_EVENT_BYTES
    ingestor, queue = make(tmp_path, broker)
    settle(ingestor, NotificationPoller(ingestor, queue), many_objects(ingestor.store, 50))
    assert broker.topics() == ["dataset.rejected"] and broker.refused == 1
    assert broker.sent[0][2]["reason"] == "VERSION_TOO_LARGE" and "refused" in broker.sent[0][2]["detail"]
    assert not ingestor.funnel.pending


def test_a_rejection_the_broker_refuses_for_good_is_dead_lettered(tmp_path: Path) -> None:
    broker = RefusingBroker(refuse=("dataset.rejected",))
    ingestor, queue = make(tmp_path, broker)
    ingestor.store.objects = {"datasets/m/v1/notes.txt": b"x" * 10, "datasets/m/v1/_SUCCESS": b""}
    settle(ingestor, NotificationPoller(ingestor, queue),
           [notification(ingestor.store, k, i) for i, k in enumerate(sorted(ingestor.store.objects))])
    assert broker.topics() == ["ingest.dead-letter"]
    dead = broker.sent[0][2]
    assert dead["source_topic"] == f"s3:{BUCKET}" and dead["reason"].startswith("UNSUPPORTED_FORMAT: ")
    assert dead["error_type"] == "Unpublishable" and not ingestor.funnel.pending


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


TRANSIENT_ERRORS = [
    client_error("SlowDown", 503), client_error("InternalError", 500), client_error("RequestTimeout", 400),
    client_error("ServiceUnavailable", 503), client_error("ThrottlingException", 400),
    ReadTimeoutError(endpoint_url="http://s3"), EndpointConnectionError(endpoint_url="http://s3"),
    ConnectTimeoutError(endpoint_url="http://s3"), IncompleteReadError(actual_bytes=1, expected_bytes=2),
    ResponseStreamingError(error="connection reset"), ConnectionResetError("reset by peer"),
    client_error("NoSuchKey", 404),  # deleted between the listing and the read: the next attempt re-lists
]
PERMANENT_ERRORS = [client_error("AccessDenied", 403), client_error("NoSuchBucket", 404), KeyError("bug")]


class FlakyStore(MemoryStore):
    """The S3 edge failing the first `failures` object reads with `error`."""

    def __init__(self, error: BaseException, failures: int) -> None:
        super().__init__()
        self.error, self.failures = error, failures

    def chunks(self, bucket: str, key: str, chunk_bytes: int) -> Any:
        if self.failures:
            self.failures -= 1
            raise self.error
        return super().chunks(bucket, key, chunk_bytes)


@pytest.mark.parametrize("error", TRANSIENT_ERRORS, ids=lambda e: type(e).__name__ + str(getattr(e, "response", "")))
def test_transient_read_errors_are_retried_past_the_attempt_limit_and_never_recorded(
        tmp_path: Path, error: BaseException) -> None:
    broker = FakeBroker()
    store = FlakyStore(error, failures=7)  # well past FLYWHEEL_MAX_READ_ATTEMPTS=3
    ingestor, queue = make(tmp_path, broker, store, max_read_attempts=3)
    messages = many_objects(store, 1)
    before = metric_value("transient")
    settle(ingestor, NotificationPoller(ingestor, queue), messages)
    assert broker.topics() == ["dataset.version-ready"] and store.failures == 0
    assert metric_value("transient") - before == 7
    assert sorted(queue.deleted) == ["r0", "r1"]


@pytest.mark.parametrize("error", PERMANENT_ERRORS, ids=repr)
def test_permanent_read_errors_reject_the_version_after_the_attempt_limit(tmp_path: Path,
                                                                           error: BaseException) -> None:
    broker = FakeBroker()
    store = FlakyStore(error, failures=100)
    ingestor, queue = make(tmp_path, broker, store, max_read_attempts=3)
    settle(ingestor, NotificationPoller(ingestor, queue), many_objects(store, 1))
    assert broker.topics() == ["dataset.rejected"] and store.failures == 97
    assert broker.sent[0][2]["reason"] == "READ_ERROR" and not ingestor.funnel.pending


def test_a_transient_error_after_permanent_ones_does_not_tip_the_version_into_a_rejection(tmp_path: Path) -> None:
    class Mixed(MemoryStore):
        errors = [client_error("AccessDenied", 403), client_error("AccessDenied", 403)] + [
            client_error("SlowDown", 503)] * 5

        def chunks(self, bucket: str, key: str, chunk_bytes: int) -> Any:
            if self.errors:
                raise self.errors.pop(0)
            return super().chunks(bucket, key, chunk_bytes)

    broker = FakeBroker()
    ingestor, queue = make(tmp_path, broker, Mixed(), max_read_attempts=3)
    settle(ingestor, NotificationPoller(ingestor, queue), many_objects(ingestor.store, 1))
    assert broker.topics() == ["dataset.version-ready"]


def metric_value(cause: str) -> float:
    return REGISTRY.get_sample_value("flywheel_ingest_close_retries_total", {"cause": cause}) or 0.0


def eventbridge(key: Any, size: Any = 5) -> str:
    return json.dumps({"source": "aws.s3", "detail-type": "Object Created", "time": "2024-05-01T10:00:00Z",
                       "detail": {"bucket": {"name": BUCKET}, "object": {"key": key, "size": size, "etag": "e"}}})


BAD_BODIES = {
    "deep-array": "[" * 100_000 + "]" * 100_000,
    "deep-object": '{"a":' * 50_000 + "1" + "}" * 50_000,
    "deep-sns": json.dumps({"Type": "Notification", "Message": "[" * 5_000}),
    "sns-in-sns": json.dumps({"Type": "Notification", "Message": json.dumps(
        {"Type": "Notification", "Message": json.dumps({"Records": []})})}),
    "key-not-a-string": eventbridge(5),
    "key-a-list": eventbridge(["datasets/m/v1/a.jsonl"]),
    "size-infinite": eventbridge("datasets/m/v1/a.jsonl", float("inf")),
    "size-negative": eventbridge("datasets/m/v1/a.jsonl", -1),
    "lone-surrogate-key": eventbridge("datasets/m/v1/\ud800.jsonl"),
    "binary": "\x00\xff\xfe garbage",
    "records-a-dict": json.dumps({"Records": {"eventName": "ObjectCreated:Put"}}),
}


def test_bodies_that_are_not_s3_events_are_dead_lettered_and_deleted_and_the_poller_goes_on(tmp_path: Path) -> None:
    broker = RefusingBroker()
    ingestor, queue = make(tmp_path, broker)
    ingestor.store.objects = {"datasets/m/v1/a.jsonl": b'{"text": "a", "label": "x"}\n',
                              "datasets/m/v1/_SUCCESS": b""}
    bad = [QueueMessage(name, f"r-{name}", body) for name, body in BAD_BODIES.items()]
    huge = QueueMessage("huge", "r-huge", "x" * 1_000_000)  # an SQS body of 1 MB: its dead letter must fit
    good = [notification(ingestor.store, k, i) for i, k in enumerate(sorted(ingestor.store.objects))]

    async def scenario() -> None:
        poller = NotificationPoller(ingestor, queue)
        await poller.handle([*bad[:5], good[0], *bad[5:], huge, good[1]])
        await ingestor.idle()

    run(scenario())
    dead = [record for topic, _, record in broker.sent if topic == "ingest.dead-letter"]
    assert [d["original_key"] for d in dead] == [*(n.encode() for n in BAD_BODIES), b"huge"]
    assert all(d["error_type"] == "BadNotification" and d["reason"] for d in dead)
    assert dead[0]["original_value"] == BAD_BODIES["deep-array"].encode() and "deep" in dead[0]["reason"]
    assert len(dead[-1]["original_value"]) == 450_000 and "cut to its first 450,000 of 1,000,000" in dead[-1]["reason"]
    assert broker.topics()[-1] == "dataset.version-ready"  # the good messages around them went through
    assert sorted(queue.deleted) == sorted([m.receipt for m in bad] + ["r-huge", "r0", "r1"])


def test_a_parser_bug_still_dead_letters_the_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = FakeBroker()
    ingestor, queue = make(tmp_path, broker)

    def broken(body: str) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(handlers, "parse_body", broken)
    run(NotificationPoller(ingestor, queue).handle([QueueMessage("m", "r-m", "{}")]))
    assert broker.topics() == ["ingest.dead-letter"] and broker.sent[0][2]["error_type"] == "RecursionError"
    assert queue.deleted == ["r-m"]
