"""The ingest service as a process on Tansu + moto: valid data, duplicates, scan overlap, every bad file."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel_dev.harness.ingest import (
    IngestEvents,
    jsonl,
    metric,
    put_version,
    s3_event,
    start_ingest,
    under,
)
from flywheel_dev.platform import ServiceProcess

BUCKET = "flywheel-data"
MAX_BYTES = 64 * 1024
MAX_EVENT_BYTES = 16_384  # the smallest allowed: a version of ~200 objects is too large to announce
QUIET = 2.5  # seconds: only versions without marker wait for it; "exactly one" checks wait past it


@pytest.fixture(scope="module")
def env(stack: Any) -> dict[str, str]:
    return stack.env()


@pytest.fixture(scope="module")
def s3(stack: Any) -> Any:
    return stack.client("s3")


@pytest.fixture(scope="module")
def sqs(stack: Any) -> Any:
    return stack.client("sqs")


@pytest.fixture(scope="module")
def ingest(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    proc = start_ingest(env, tmp_path_factory.mktemp("ingest"), scan_interval_s="1", quiet_period_s=str(QUIET),
                        max_object_bytes=str(MAX_BYTES), dataset_prefixes='["datasets/", "archive/"]',
                        max_event_bytes=str(MAX_EVENT_BYTES))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def reader(stack: Any, ingest: ServiceProcess) -> Iterator[IngestEvents]:
    found = IngestEvents(stack)
    yield found
    found.close()


def fresh(root: str = "datasets") -> str:
    return f"{root}/support-intent/{uuid.uuid4().hex[:10]}/"


def only_one(reader: IngestEvents, prefix: str, topic: str = "dataset.version-ready") -> dict[str, Any]:
    """Wait for the event, then long enough for a duplicate to show (scans, quiet periods) and count."""
    reader.wait_for(under(prefix, topic), timeout=30)
    reader.linger(QUIET + 1.5)
    found = reader.matching(under(prefix, topic))
    assert len(found) == 1, found
    return found[0]


def test_a_valid_version_yields_one_event_and_its_manifest(s3: Any, reader: IngestEvents) -> None:
    prefix = fresh()
    put_version(s3, BUCKET, prefix, {"a.jsonl": jsonl(8), "b.jsonl": jsonl(8)})
    event = only_one(reader, prefix)
    assert (event["model_id"], event["row_count"], len(event["objects"])) == ("support-intent", 16, 2)
    assert event["envelope"]["correlation_id"] == f"s3://{BUCKET}/{prefix}"
    assert event["manifest_uri"] == f"s3://{BUCKET}/manifests/support-intent/{event['dataset_version_id']}.json"
    manifest = __import__("json").loads(s3.get_object(
        Bucket=BUCKET, Key=event["manifest_uri"].split(BUCKET + "/", 1)[1])["Body"].read())
    assert {"model_id", "dataset_version_id", "bucket", "prefix", "objects", "row_count", "columns", "label_counts",
            "content_hash", "first_object_at", "created_at"} <= set(manifest)
    assert manifest["label_counts"] == event["label_counts"] == {"billing": 4, "other": 4, "refund": 4, "shipping": 4}
    assert manifest["first_object_at"] <= manifest["created_at"]


def test_duplicate_notifications_and_an_overlapping_scan_give_one_version(s3: Any, sqs: Any, env: dict[str, str],
                                                                         reader: IngestEvents,
                                                                         ingest: ServiceProcess) -> None:
    prefix = fresh()
    before = metric(ingest.url, "flywheel_ingest_duplicates_dropped_total")
    put_version(s3, BUCKET, prefix, {"a.jsonl": jsonl(3)})
    s3.put_object(Bucket=BUCKET, Key=prefix + "_SUCCESS", Body=b"")  # the marker twice
    head = s3.head_object(Bucket=BUCKET, Key=prefix + "a.jsonl")
    for _ in range(3):  # SQS at-least-once: the same notification again
        sqs.send_message(QueueUrl=env["FLYWHEEL_NOTIFICATION_QUEUE_URL"],
                         MessageBody=s3_event(BUCKET, prefix + "a.jsonl", head["ETag"].strip('"'), 3))
    event = only_one(reader, prefix)
    assert event["row_count"] == 3
    assert metric(ingest.url, "flywheel_ingest_duplicates_dropped_total") - before >= 3


def test_the_scan_finds_what_no_notification_announced(s3: Any, reader: IngestEvents) -> None:
    prefix = fresh("archive")  # the local stack wires notifications for datasets/ only
    put_version(s3, BUCKET, prefix, {"a.csv": b"text,label\nhello,greeting\n"})
    assert only_one(reader, prefix)["row_count"] == 1


def test_a_version_without_marker_closes_after_the_quiet_period(s3: Any, reader: IngestEvents) -> None:
    prefix = fresh()
    put_version(s3, BUCKET, prefix, {"a.jsonl": jsonl(2)}, marker=None)
    assert only_one(reader, prefix)["row_count"] == 2


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


BAD_FILES = {
    "EMPTY_FILE": ("a.jsonl", b"", None),
    "ENCODING_ERROR": ("a.jsonl", b'{"text": "a", "label": "x"}\n{"text": "\xff", "label": "x"}\n', 2),
    "MISSING_COLUMNS": ("a.csv", b"\xef\xbb\xbftext,category\r\nhi,x\r\n", 1),
    "MALFORMED_ROW": ("a.csv", b'text,label\r\n"ok, fine",x\r\n"unclosed,y\r\n', 3),
    "UNSUPPORTED_FORMAT": ("a.txt", b"hello", None),
    "TOO_LARGE": ("a.jsonl", jsonl(MAX_BYTES // 30), None),
    "PATH_TRAVERSAL": ("../../escape.jsonl", jsonl(1), None),
}


CASES = [*BAD_FILES, "NO_DATA", "MISSING_COLUMNS-parquet"]


def bad_upload(reason: str) -> tuple[str, str, dict[str, bytes], int | None]:
    """(expected reason, offending name, files of the version, expected line) for one case."""
    if reason == "NO_DATA":
        return reason, "", {}, None
    if reason.endswith("-parquet"):
        return "MISSING_COLUMNS", "a.parquet", {"a.parquet": parquet_bytes(pa.table({"text": ["a"],
                                                                                    "category": ["x"]}))}, None
    name, body, line = BAD_FILES[reason]
    return reason, name, {"ok.jsonl": jsonl(2), name: body}, line


@pytest.fixture(scope="module")
def bad_versions(s3: Any, reader: IngestEvents) -> dict[str, str]:
    """Every bad case uploaded at once (one wait for all), each in its own version: case -> prefix."""
    prefixes = {case: fresh() for case in CASES}
    for case, prefix in prefixes.items():
        put_version(s3, BUCKET, prefix, bad_upload(case)[2])
    for prefix in prefixes.values():
        reader.wait_for(under(prefix, "dataset.rejected"), timeout=30)
    reader.linger(QUIET + 1.5)  # room for a duplicate to show
    return prefixes


@pytest.mark.parametrize("case", CASES)
def test_each_kind_of_bad_file_is_rejected_naming_the_cause(bad_versions: dict[str, str], reader: IngestEvents,
                                                            case: str) -> None:
    prefix = bad_versions[case]
    reason, name, _, line = bad_upload(case)
    rejected = reader.matching(under(prefix, "dataset.rejected"))
    assert [(r["reason"], r["line"], r["key"]) for r in rejected] == [(reason, line, prefix + name)]
    assert rejected[0]["detail"] and rejected[0]["model_id"] == "support-intent"
    assert reader.matching(under(prefix)) == []


def test_keys_outside_the_prefixes_and_garbage_messages(sqs: Any, env: dict[str, str], reader: IngestEvents) -> None:
    key, garbage = f"uploads/{uuid.uuid4().hex}.jsonl", f"not an event {uuid.uuid4()}"
    queue = env["FLYWHEEL_NOTIFICATION_QUEUE_URL"]
    sqs.send_message(QueueUrl=queue, MessageBody=s3_event(BUCKET, key, "abc", 10))
    sqs.send_message(QueueUrl=queue, MessageBody=s3_event(BUCKET, key, "abc", 10))
    sqs.send_message(QueueUrl=queue, MessageBody=garbage)
    rejected = only_one(reader, key, "dataset.rejected")
    assert (rejected["reason"], rejected["model_id"]) == ("OUTSIDE_PREFIX", None)
    dead = reader.wait_for(lambda t, r: t == "ingest.dead-letter" and r["original_value"] == garbage.encode())
    assert dead and dead[0]["consumer"] == "ingest"


def test_a_version_too_large_to_announce_is_rejected_once(s3: Any, reader: IngestEvents,
                                                           ingest: ServiceProcess) -> None:
    prefix = fresh()
    put_version(s3, BUCKET, prefix, {f"p-{n:03d}.jsonl": b'{"text": "m%d", "label": "x"}\n' % n for n in range(220)})
    rejected = only_one(reader, prefix, "dataset.rejected")
    assert (rejected["reason"], rejected["key"]) == ("VERSION_TOO_LARGE", prefix)
    assert "220 objects" in rejected["detail"] and f"{MAX_EVENT_BYTES:,}-byte limit" in rejected["detail"]
    assert reader.matching(under(prefix)) == []  # never announced, and not retried: one rejection
    assert metric(ingest.url, "flywheel_ingest_unpublishable_total", topic="dataset.version-ready") >= 1


def test_poison_sqs_bodies_are_dead_lettered_and_the_service_goes_on(s3: Any, sqs: Any, env: dict[str, str],
                                                                     reader: IngestEvents,
                                                                     ingest: ServiceProcess) -> None:
    """Each body once in ingest.dead-letter; the unit tests show each message is deleted after it."""
    tag = uuid.uuid4().hex
    bodies = {
        "deep": f'{{"tag": "{tag}", "x": ' + "[" * 50_000 + "]" * 50_000 + "}",  # RecursionError before
        "key-not-a-string": json.dumps({"source": "aws.s3", "detail-type": "Object Created", "tag": tag,
                                        "time": "2024-05-01T10:00:00Z",
                                        "detail": {"bucket": {"name": BUCKET}, "object": {"key": 5, "size": 1}}}),
        "size-infinite": s3_event(BUCKET, f"datasets/m/{tag}/a.jsonl", "e", 1).replace('"size": 1',
                                                                                      '"size": Infinity'),
    }
    for body in bodies.values():
        sqs.send_message(QueueUrl=env["FLYWHEEL_NOTIFICATION_QUEUE_URL"], MessageBody=body)
    dead = reader.wait_for(lambda t, r: t == "ingest.dead-letter" and tag.encode() in (r["original_value"] or b""),
                           count=len(bodies))
    # A dead letter keeps the body up to half the event limit (the deep one is cut, saying so).
    assert sorted(d["original_value"] for d in dead) == sorted(b.encode()[:MAX_EVENT_BYTES // 2]
                                                               for b in bodies.values())
    assert all(d["error_type"] == "BadNotification" and d["reason"] for d in dead)
    assert sum("body cut to its first 8,192 of 100," in d["reason"] for d in dead) == 1
    prefix = fresh()  # the poller goes on: the next version flows as before
    put_version(s3, BUCKET, prefix, {"a.jsonl": jsonl(2)})
    assert reader.wait_for(under(prefix), timeout=30) and ingest.alive()


def test_metrics_are_served(ingest: ServiceProcess) -> None:
    assert metric(ingest.url, "flywheel_ingest_objects_seen_total", source="sqs") > 0
    assert metric(ingest.url, "flywheel_ingest_objects_seen_total", source="scan") > 0
    assert metric(ingest.url, "flywheel_ingest_bytes_validated_total", format="jsonl") > 0
    assert metric(ingest.url, "flywheel_ingest_versions_ready_total") >= 3
    assert metric(ingest.url, "flywheel_ingest_versions_rejected_total", reason="TOO_LARGE") >= 1
    assert metric(ingest.url, "flywheel_ingest_detection_latency_seconds_count") >= 3


def test_the_log_is_structured(ingest: ServiceProcess) -> None:
    lines = [__import__("json").loads(line) for line in Path(ingest.log_path).read_text().splitlines()
             if line.startswith("{")]
    ready = [line for line in lines if line.get("msg") == "dataset version ready"]
    assert ready and all(line["event_id"] and line["correlation_id"].startswith("s3://") for line in ready)
