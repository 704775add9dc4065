"""kill -9 the ingest worker mid-version and restart it: exactly one version, nothing lost."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from flywheel_dev.harness.ingest import IngestEvents, jsonl, metric, put_version, start_ingest, under

BUCKET = "flywheel-data"
# Unacknowledged notifications come back after 2 s; quiet-period closing is kept out of the way.
SETTINGS = {"sqs_visibility_timeout_s": "2", "scan_interval_s": "2", "quiet_period_s": "600"}


def wait_until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def queue_depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                                   "ApproximateNumberOfMessagesNotVisible"])
    return sum(int(v) for v in attrs["Attributes"].values())


def test_kill_9_mid_version_then_restart_gives_exactly_one_version(stack: Any, stack_env: dict[str, str],
                                                                  tmp_path: Path) -> None:
    s3, sqs = stack.client("s3"), stack.client("sqs")
    reader = IngestEvents(stack)
    half = f"datasets/support-intent/crash-{uuid.uuid4().hex[:8]}/"
    closing = f"datasets/support-intent/crash-{uuid.uuid4().hex[:8]}/"
    worker = start_ingest(stack_env, tmp_path, **SETTINGS)
    try:
        seen_before = metric(worker.url, "flywheel_ingest_objects_seen_total", source="sqs")
        put_version(s3, BUCKET, half, {f"part-{i}.jsonl": jsonl(4) for i in range(3)}, marker=None)
        wait_until(lambda: metric(worker.url, "flywheel_ingest_objects_seen_total", source="sqs") >= seen_before + 3)
        put_version(s3, BUCKET, closing, {"a.jsonl": jsonl(2), "b.jsonl": jsonl(2)})
        worker.kill()  # SIGKILL, most likely while `closing` is being validated or published
        # While the worker is down the first version gets the rest of its files and its marker.
        put_version(s3, BUCKET, half, {f"part-{i}.jsonl": jsonl(4) for i in range(3, 5)})
        worker = start_ingest(stack_env, tmp_path, **SETTINGS)

        reader.wait_for(under(half), timeout=60)
        reader.wait_for(under(closing), timeout=60)
        reader.linger(5)  # two scan intervals and a redelivery: room for any duplicate to show
        [event] = reader.matching(under(half))
        assert sorted(o["key"].rsplit("/", 1)[1] for o in event["objects"]) == [f"part-{i}.jsonl" for i in range(5)]
        assert event["row_count"] == 20
        # A kill between the broker's ack and the done-record can repeat an event; never with other content.
        repeats = reader.matching(under(closing))
        assert {(r["dataset_version_id"], r["content_hash"], r["row_count"]) for r in repeats} == {
            (repeats[0]["dataset_version_id"], repeats[0]["content_hash"], 4)}
        assert reader.matching(under(half, "dataset.rejected")) == []
        wait_until(lambda: queue_depth(sqs, stack_env["FLYWHEEL_NOTIFICATION_QUEUE_URL"]) == 0)
    finally:
        worker.stop()
        reader.close()

