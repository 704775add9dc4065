"""Two ingest replicas on one bucket and one notification queue; a 200-object burst (20 versions of 9 data
objects and a marker, from 8 concurrent writers) and one replica killed -9 in the middle of it.

What must hold (docs/decisions/0010-ingest-scale-out.md): every object in exactly one published version, no
version announced under two event ids (a repeat of the same event is allowed only when a replica died between
the broker's ack and its done-record, and must say the same), nothing rejected, nothing lost: the queue drains,
and the survivor stays healthy. The killed replica's messages come back after the visibility timeout and its
claims expire after their lease; the reconciliation scan runs on both, so it races too.

Only ingest runs here (no orchestrator or monitor): what is tested is ingest's publication, read from the topics.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from flywheel_dev.harness.ingest import IngestEvents, metric, start_ingest
from flywheel_dev.localstack import LocalStack

BUCKET = "flywheel-data"
VERSIONS, DATA_EACH = 20, 9  # 20 x (9 data objects + a marker) = 200 objects
SETTINGS = {
    "sqs_visibility_timeout_s": "4",  # the killed replica's messages come back after 4 s
    "scan_interval_s": "3",
    "quiet_period_s": "600",  # versions close on their marker
    "claim_lease_s": "4",  # the killed replica's claims expire after 4 s
    "claim_recheck_s": "0.5",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(log_dir=tmp_path_factory.mktemp("ingest-replicas")) as running:
        yield running


def body(version: int, n: int) -> bytes:
    labels = ("billing", "shipping", "refund", "other")
    return "".join(json.dumps({"text": f"v{version} part {n} row {r}", "label": labels[(n + r) % 4]}) + "\n"
                   for r in range(3)).encode()


def content(record: dict[str, Any]) -> dict[str, Any]:
    """The record but its envelope time (a re-publication's is its own)."""
    return {**record, "envelope": {k: v for k, v in record["envelope"].items() if k != "occurred_at"}}


def queue_depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                                   "ApproximateNumberOfMessagesNotVisible"])
    return sum(int(v) for v in attrs["Attributes"].values())


def wait_until(check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f}s"
        time.sleep(0.2)


class Burst:
    """20 versions of 9 data objects and a marker (200 objects) under one new model, and what ingest made of them."""

    def __init__(self, stack: LocalStack) -> None:
        self.s3, self.sqs, self.queue_url = stack.client("s3"), stack.client("sqs"), stack.env()[
            "FLYWHEEL_NOTIFICATION_QUEUE_URL"]
        self.model = f"replicas-{uuid.uuid4().hex[:6]}"
        self.prefixes = [f"datasets/{self.model}/v{i:02d}/" for i in range(VERSIONS)]
        self.data_keys = {p: [f"{p}part-{n}.jsonl" for n in range(DATA_EACH)] for p in self.prefixes}
        self.written = threading.Semaphore(0)  # one release per object written
        self.reader = IngestEvents(stack)

    def write(self, i: int, pause_s: float = 0.0) -> None:
        prefix = self.prefixes[i]
        for n, key in enumerate(self.data_keys[prefix]):
            self.s3.put_object(Bucket=BUCKET, Key=key, Body=body(i, n))
            self.written.release()
            time.sleep(pause_s)
        self.s3.put_object(Bucket=BUCKET, Key=f"{prefix}_SUCCESS", Body=b"")  # after its data, as producers do
        self.written.release()

    def wait_written(self, objects: int) -> None:
        for _ in range(objects):
            assert self.written.acquire(timeout=60)

    def done_by(self) -> Counter[str]:
        """Done-records per replica name (`ingest-a-<pid>-<suffix>` -> `a`)."""
        done = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"ingest-state/done/{self.model}/").get("Contents", [])
        return Counter(json.loads(self.s3.get_object(Bucket=BUCKET, Key=d["Key"])["Body"].read())["replica"]
                       .split("-")[1] for d in done)

    def ready(self) -> list[dict[str, Any]]:
        return [r for r in self.reader.matching(lambda t, r: t == "dataset.version-ready")
                if r["model_id"] == self.model]

    def assert_published_once(self) -> str:
        """Every object in exactly one published version, no version under two event ids, nothing rejected,
        nothing left on the queue; returns a summary for the test's output."""
        wait_until(lambda: {r["prefix"] for r in self.ready()} == set(self.prefixes), "every version published", 60)
        wait_until(lambda: queue_depth(self.sqs, self.queue_url) == 0, "the queue drained", 30)
        self.reader.linger(3)  # a scan interval: room for a late duplicate to show
        records = self.ready()
        by_event: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            by_event[record["envelope"]["event_id"]].append(record)
        by_version: dict[str, set[str]] = defaultdict(set)
        for event_id, same in by_event.items():
            assert all(content(r) == content(same[0]) for r in same), f"event {event_id} with other content"
            by_version[same[0]["dataset_version_id"]].add(event_id)
        # No version announced twice: one event id per dataset version, one version per prefix.
        assert all(len(ids) == 1 for ids in by_version.values()), by_version
        assert len(by_version) == VERSIONS
        # Every object in exactly one published version, with all of its rows.
        versions = [same[0] for same in by_event.values()]
        placed = [o["key"] for v in versions for o in v["objects"]]
        assert sorted(placed) == sorted(k for keys in self.data_keys.values() for k in keys)
        assert all(v["row_count"] == DATA_EACH * 3 for v in versions)
        assert self.reader.matching(lambda t, r: t == "dataset.rejected" and r.get("model_id") == self.model) == []
        by_replica = self.done_by()
        assert sum(by_replica.values()) == VERSIONS  # one done-record per version
        return (f"{len(records)} DatasetVersionReady records for {VERSIONS} versions "
                f"({len(records) - len(by_event)} repeats of one event); done-records by replica {dict(by_replica)}")


def claim_outcomes(proc: Any) -> dict[str, float]:
    return {o: metric(proc.url, "flywheel_ingest_claims_total", outcome=o) for o in ("held", "taken_over", "lost")}


def test_burst_with_one_of_two_replicas_killed_publishes_every_object_once(stack: LocalStack,
                                                                          tmp_path: Path) -> None:
    env, burst = stack.env(), Burst(stack)
    doomed = start_ingest(env, tmp_path / "a", replica_id="ingest-a", **SETTINGS)
    survivor = start_ingest(env, tmp_path / "b", replica_id="ingest-b", **SETTINGS)
    try:
        with ThreadPoolExecutor(8) as pool:
            # The first half of the burst, until both replicas have announced versions side by side ...
            list(pool.map(burst.write, range(VERSIONS // 2)))
            wait_until(lambda: burst.done_by()["a"] >= 1, "replica a announcing versions too", 30)
            # ... then the second half, and replica a killed in the middle of it.
            writes = [pool.submit(burst.write, i) for i in range(VERSIONS // 2, VERSIONS)]
            burst.wait_written(VERSIONS * (DATA_EACH + 1) // 4)
            doomed.kill()  # SIGKILL: what it held (messages, claims, a close under way) is left behind
            for future in writes:
                future.result()
        assert not doomed.alive()
        summary = burst.assert_published_once()
        assert survivor.alive() and survivor.healthy()
        print(f"{summary}; survivor's claims: {claim_outcomes(survivor)}")
    finally:
        doomed.kill()
        survivor.stop()
        burst.reader.close()


def test_burst_through_a_rolling_kill_and_restart_of_both_replicas(stack: LocalStack, tmp_path: Path) -> None:
    """Each replica in turn killed -9 in the middle of the burst and started again at once (a new process
    under the same name must not take its predecessor's live claims for its own)."""
    env, burst = stack.env(), Burst(stack)
    replicas = {name: start_ingest(env, tmp_path / name, replica_id=f"ingest-{name}", **SETTINGS)
                for name in ("a", "b")}
    try:
        with ThreadPoolExecutor(8) as pool:
            # Paced (about 9 s in all) so that both restarts fall inside the burst.
            writes = [pool.submit(burst.write, i, 0.3) for i in range(VERSIONS)]
            for name in ("a", "b"):  # a killed a third of the way in, b at two thirds
                burst.wait_written(VERSIONS * (DATA_EACH + 1) // 3)
                replicas[name].kill()
                replicas[name] = start_ingest(env, tmp_path / f"{name}-again", replica_id=f"ingest-{name}",
                                              **SETTINGS)
            for future in writes:
                future.result()
        summary = burst.assert_published_once()
        assert all(p.alive() and p.healthy() for p in replicas.values())
        print(f"{summary}; claims after the restarts: "
              f"{ {n: claim_outcomes(p) for n, p in replicas.items()} }")
    finally:
        for proc in replicas.values():
            proc.kill()
        burst.reader.close()
