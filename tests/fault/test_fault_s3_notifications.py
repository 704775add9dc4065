"""Real S3 notification bodies delivered twice and in reverse order (marker first), again after publication,
and garbage on the queue: one dataset version, one training run, garbage dead-lettered, every service alive."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from conftest import assert_one_run_per_trigger, jsonl

BUCKET = "flywheel-data"
# Versions here must close from the notifications under test, not from a scan tick; the start-up scan still runs.
PLATFORM_ENV = {"FLYWHEEL_SCAN_INTERVAL_S": "600"}


def notifications_to(running, queue_url: str) -> None:
    """Point the data bucket's ObjectCreated notifications for datasets/ at `queue_url`."""
    sqs, s3 = running.sqs(), running.s3()
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "datasets/"}]}},
                }
            ]
        },
    )


def capture_bodies(running, write: Any, expected: int) -> list[str]:
    """Run `write` with notifications going to a side queue; return the real bodies S3 sent, in arrival order."""
    sqs = running.sqs()
    capture = sqs.create_queue(QueueName=f"fault-capture-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    notifications_to(running, capture)
    try:
        write()
        bodies: list[str] = []
        deadline = time.monotonic() + 30
        while len(bodies) < expected and time.monotonic() < deadline:
            for msg in sqs.receive_message(QueueUrl=capture, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            ):
                sqs.delete_message(QueueUrl=capture, ReceiptHandle=msg["ReceiptHandle"])
                if "Records" in json.loads(msg["Body"]):  # not the s3:TestEvent of the configuration change
                    bodies.append(msg["Body"])
        assert len(bodies) == expected
        return bodies
    finally:
        notifications_to(running, running.stack.queue_url)


def queue_drained(running) -> bool:
    attrs = running.sqs().get_queue_attributes(
        QueueUrl=running.stack.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attrs.values()) == 0


def wait_drained(running, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not queue_drained(running):
        assert time.monotonic() < deadline, "ingest left notifications in the queue"
        time.sleep(0.3)


def ready_for(running, prefix: str) -> list:
    return running.timeline.matching("DatasetVersionReady", lambda s: s.get("prefix") == prefix)


def test_duplicate_and_reordered_notifications_give_one_version_and_one_run(running) -> None:
    model = f"fault-dup-{uuid.uuid4().hex[:6]}"
    prefix = f"datasets/{model}/v1/"
    parts = {f"{prefix}part-{i:04d}.jsonl": jsonl(5, i) for i in range(4)}
    s3 = running.s3()

    def write() -> None:
        for key, body in parts.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}_SUCCESS", Body=b"")

    bodies = capture_bodies(running, write, expected=len(parts) + 1)
    # The marker's notification first, then the data in reverse order, every one of them twice.
    shuffled = [b for body in reversed(bodies) for b in (body, body)]
    sqs = running.sqs()
    for body in shuffled:
        sqs.send_message(QueueUrl=running.stack.queue_url, MessageBody=body)
    [ready] = running.timeline.wait_for(
        "DatasetVersionReady", lambda s: s.get("prefix") == prefix, timeout=60
    )
    assert sorted(o["key"] for o in ready.get("objects")) == sorted(parts)
    assert ready.get("row_count") == 20
    running.timeline.wait_for("TrainingRunStarted", lambda s: s.get("model_id") == model, timeout=60)
    # The same bodies again, after the version was published: acknowledged, nothing new.
    for body in shuffled:
        sqs.send_message(QueueUrl=running.stack.queue_url, MessageBody=body)
    wait_drained(running)
    running.timeline.wait_for("ModelVersionRegistered", lambda s: s.get("model_id") == model, timeout=120)
    assert len(ready_for(running, prefix)) == 1
    assert running.timeline.matching("DatasetRejected", lambda s: s.get("model_id") == model) == []
    [started] = assert_one_run_per_trigger(running, lambda s: s.get("model_id") == model)
    assert started.get("dataset_version_id") == ready.get("dataset_version_id")


def test_garbage_notification_is_dead_lettered_with_reason(running) -> None:
    sqs = running.sqs()
    marker = f"not an S3 event {uuid.uuid4().hex}"
    sent = sqs.send_message(QueueUrl=running.stack.queue_url, MessageBody=marker)["MessageId"]
    [letter] = running.timeline.wait_for(
        "DeadLetter", lambda s: s.get("original_value") == marker.encode(), timeout=60
    )
    assert letter.topic == "ingest.dead-letter"
    assert letter.get("source_topic").startswith("sqs:") and letter.get("original_key") == sent.encode()
    assert "JSON" in letter.get("reason")
    wait_drained(running)


def test_every_service_alive_at_the_end(running) -> None:
    assert running.dead_services() == []
