"""Two ingest replicas on one bucket, against the S3 API of the local stack (moto, real conditional writes):
racing on the same objects gives one version each, announced once (docs/decisions/0010-ingest-scale-out.md)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from flywheel.bootstrap import build_codec
from flywheel.publish import TopicEncoder
from flywheel.settings import FlywheelSettings
from flywheel_dev.harness.ingest import jsonl, put_version
from flywheel_ingest.adapters import S3Store, transient_store_error
from flywheel_ingest.app import close_config
from flywheel_ingest.closer import VersionCloser
from flywheel_ingest.handlers import Ingestor, ReconciliationScan
from flywheel_ingest.ports import Conflict
from flywheel_ingest.settings import IngestSettings

BUCKET = "flywheel-data"
CODEC = build_codec(FlywheelSettings())


class Broker:
    """The acknowledged publish both replicas share (the broker is not what is tested here)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.encoder = TopicEncoder(CODEC)
        self.lock = threading.Lock()

    async def publish(self, topic: str, record: dict[str, Any]) -> None:
        out = self.encoder.outgoing(topic, record)
        with self.lock:
            self.sent.append((out.topic, CODEC.decode(out.value).record))

    def size(self, topic: str, record: dict[str, Any]) -> int:
        out = self.encoder.outgoing(topic, record)
        return len(out.value) + len(out.key or b"")


class Lockstep(S3Store):
    """Both replicas pass the done-record check of a version before either claims it: the race is certain."""

    barriers: dict[str, threading.Barrier] = {}
    guard = threading.Lock()

    def exists(self, bucket: str, key: str) -> bool:
        found = super().exists(bucket, key)
        if "/done/" in key:
            with self.guard:
                barrier = self.barriers.setdefault(key, threading.Barrier(2, timeout=20))
            if not barrier.broken:
                with contextlib.suppress(threading.BrokenBarrierError):
                    barrier.wait()
                barrier.abort()  # later looks (the loser's second check) pass straight through
        return found


def held() -> float:
    return REGISTRY.get_sample_value("flywheel_ingest_claims_total", {"outcome": "held"}) or 0.0


def replica(stack: Any, tmp_path: Path, name: str, space: str, broker: Broker, store_class: type = S3Store,
            **overrides: Any) -> Ingestor:
    settings = IngestSettings(data_dir=tmp_path / name, dataset_prefixes=(f"{space}/",),
                              state_prefix=f"{space}-state/", manifest_prefix=f"{space}-manifests/",
                              quiet_period_s=3600, claim_recheck_s=0.05, replica_id=name, **overrides)
    store = store_class(stack.client("s3"))
    return Ingestor(settings, store, VersionCloser(store, close_config(settings)), broker.publish,
                    ThreadPoolExecutor(4), None, event_size=broker.size, transient=transient_store_error)


async def until_settled(*replicas: Ingestor, timeout: float = 60.0) -> None:
    """Scan with every replica until no funnel holds a version (deferred looks come due on their own)."""
    deadline = time.monotonic() + timeout
    scans = [ReconciliationScan(r) for r in replicas]
    await asyncio.gather(*(s.scan_once() for s in scans))
    while any(r.funnel.pending for r in replicas):
        assert time.monotonic() < deadline, "versions still pending"
        await asyncio.sleep(0.05)
        for r in replicas:
            r.close_due()
        await asyncio.gather(*(r.idle() for r in replicas))


def test_two_replicas_racing_on_the_same_objects_announce_each_version_once(stack: Any, tmp_path: Path) -> None:
    s3, space, broker = stack.client("s3"), f"replicas-{uuid.uuid4().hex[:8]}", Broker()
    prefixes = [f"{space}/m{i % 2}/v{i}/" for i in range(6)]
    for i, prefix in enumerate(prefixes):
        put_version(s3, BUCKET, prefix, {f"part-{n}.jsonl": jsonl(3 + i + n) for n in range(3)})
    a = replica(stack, tmp_path, "a", space, broker, Lockstep)
    b = replica(stack, tmp_path, "b", space, broker, Lockstep)
    held_before = held()

    asyncio.run(until_settled(a, b))

    assert held() - held_before >= len(prefixes)  # every version was raced for, and one replica stood back
    ready = [r for t, r in broker.sent if t == "dataset.version-ready"]
    assert sorted(r["prefix"] for r in ready) == sorted(prefixes)  # each version once, none lost
    assert [t for t, _ in broker.sent].count("dataset.rejected") == 0
    for record in ready:
        version = record["dataset_version_id"]
        done = s3.get_object(Bucket=BUCKET, Key=f"{space}-state/done/{record['model_id']}/{version}.json")
        assert record["envelope"]["event_id"] in done["Body"].read().decode()
        claim = s3.get_object(Bucket=BUCKET, Key=f"{space}-state/claims/{record['model_id']}/{version}.json")
        assert record["envelope"]["event_id"] in claim["Body"].read().decode()
    manifests = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{space}-manifests/").get("KeyCount")
    assert manifests == len(prefixes)


def test_a_replica_dead_after_its_publish_is_replaced_by_the_same_event(stack: Any, tmp_path: Path) -> None:
    """The winner dies between the broker's ack and its done-record; once its claim expires (1 s here) the other
    replica announces the version again as the very same event, and records it done."""
    s3, space, broker = stack.client("s3"), f"replicas-{uuid.uuid4().hex[:8]}", Broker()
    prefix = f"{space}/m/v1/"
    put_version(s3, BUCKET, prefix, {"a.jsonl": jsonl(4), "b.jsonl": jsonl(5)})
    a = replica(stack, tmp_path, "a", space, broker, claim_lease_s=1)
    b = replica(stack, tmp_path, "b", space, broker, claim_lease_s=1)

    async def dies(*_: Any) -> None:
        raise RuntimeError("killed before its done-record")

    a._record_done = dies  # type: ignore[method-assign]

    async def scenario() -> float:
        await ReconciliationScan(a).scan_once()
        await a.idle()
        assert len(broker.sent) == 1
        started = time.monotonic()
        await until_settled(b)
        return time.monotonic() - started

    waited = asyncio.run(scenario())
    assert waited >= 0.5  # b waited for a's claim to expire
    first, second = (r for _, r in broker.sent)
    same = {**second, "envelope": {**second["envelope"], "occurred_at": first["envelope"]["occurred_at"]}}
    assert first == same  # the same event id and content: consumers drop the repeat by event id
    version = first["dataset_version_id"]
    done = s3.get_object(Bucket=BUCKET, Key=f"{space}-state/done/m/{version}.json")["Body"].read().decode()
    assert first["envelope"]["event_id"] in done


def test_the_s3_store_maps_lost_conditions_to_conflict(stack: Any) -> None:
    store, key = S3Store(stack.client("s3")), f"replicas-{uuid.uuid4().hex[:8]}-state/doc.json"
    first = store.put_json(BUCKET, key, {"n": 1}, if_none_match=True)
    with pytest.raises(Conflict):
        store.put_json(BUCKET, key, {"n": 2}, if_none_match=True)
    second = store.put_json(BUCKET, key, {"n": 3}, if_match=first)
    with pytest.raises(Conflict):
        store.put_json(BUCKET, key, {"n": 4}, if_match=first)
    with pytest.raises(Conflict):  # replaced conditionally after it was deleted
        store.put_json(BUCKET, key + ".absent", {"n": 5}, if_match=second)
    assert store.get_json_tagged(BUCKET, key) == ({"n": 3}, second)
    assert store.get_json_tagged(BUCKET, key + ".absent") is None
    assert store.put_json(BUCKET, key, {"n": 6})  # unconditional, as before


def test_a_document_that_is_not_json_reads_as_empty_and_is_replaced_conditionally(stack: Any) -> None:
    s3, key = stack.client("s3"), f"replicas-{uuid.uuid4().hex[:8]}-state/cut.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"subject": "dv-')
    store = S3Store(s3)
    found = store.get_json_tagged(BUCKET, key)
    assert found is not None and found[0] == {}
    store.put_json(BUCKET, key, {"n": 1}, if_match=found[1])
    assert store.get_json(BUCKET, key) == {"n": 1}
