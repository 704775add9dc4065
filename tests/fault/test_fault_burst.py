"""1,000 small objects and a marker in one prefix at once: one dataset version with every object and row, one
training run, every service alive.

On the local stand-in moto answers an SQS receive in about a second once 1,000 messages wait, so working
through the backlog takes far longer than the 10 s visibility timeout set here: ingest must keep the messages
it holds for the open version invisible, or they come back ahead of the marker's again and again. The
reconciliation scan is pushed out of the way (once an hour) so the notifications alone must close the version.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

from conftest import assert_one_run_per_trigger

BUCKET = "flywheel-data"
OBJECTS, ROWS_EACH = 1000, 3
PLATFORM_ENV = {"FLYWHEEL_SCAN_INTERVAL_S": "3600", "FLYWHEEL_SQS_VISIBILITY_TIMEOUT_S": "10"}


def part(i: int) -> bytes:
    labels = ("billing", "shipping", "refund", "other")
    return "".join(
        json.dumps({"text": f"burst {i}-{r}", "label": labels[(i + r) % 4]}) + "\n" for r in range(ROWS_EACH)
    ).encode()


def test_thousand_object_burst_in_one_prefix_gives_one_version_and_one_run(running) -> None:
    model = f"fault-burst-{uuid.uuid4().hex[:6]}"
    prefix = f"datasets/{model}/v1/"
    keys = [f"{prefix}part-{i:04d}.jsonl" for i in range(OBJECTS)]
    s3 = running.s3()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=BUCKET, Key=keys[i], Body=part(i)), range(OBJECTS)))
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}_SUCCESS", Body=b"")

    [ready] = running.timeline.wait_for(
        "DatasetVersionReady", lambda s: s.get("prefix") == prefix, timeout=240
    )
    assert sorted(o["key"] for o in ready.get("objects")) == keys
    assert ready.get("row_count") == OBJECTS * ROWS_EACH
    # The whole chain on it: one run that read every object (the stub trainer counts the rows it was given).
    [registered] = running.timeline.wait_for(
        "ModelVersionRegistered", lambda s: s.get("model_id") == model, timeout=240
    )
    assert registered.get("dataset_version_id") == ready.get("dataset_version_id")
    metrics = json.loads(
        s3.get_object(
            Bucket="flywheel-artifacts",
            Key=registered.get("artifact_uri")
            .split("flywheel-artifacts/", 1)[1]
            .replace("model.tar.gz", "metrics.json"),
        )["Body"].read()
    )
    assert metrics["rows"] == OBJECTS * ROWS_EACH
    assert len(running.timeline.matching("DatasetVersionReady", lambda s: s.get("prefix") == prefix)) == 1
    assert running.timeline.matching("DatasetRejected", lambda s: s.get("model_id") == model) == []
    assert_one_run_per_trigger(running, lambda s: s.get("model_id") == model)
    done = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"ingest-state/done/{model}/").get("Contents", [])
    assert len(done) == 1  # ingest's durable record of the one publication


def test_every_service_alive_at_the_end(running) -> None:
    assert running.dead_services() == []
