"""Claims with N ingest replicas (docs/decisions/0010-ingest-scale-out.md): the pure rule, the lease on a store
with S3's conditional writes, and two replicas' handlers sharing one store and one broker."""

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
from flywheel_ingest.adapters import transient_store_error
from flywheel_ingest.app import close_config
from flywheel_ingest.claims import Claim, Claims, Held, Lease, LeaseLost, verdict
from flywheel_ingest.closer import HeldElsewhere, Ready, VersionCloser
from flywheel_ingest.core import PendingVersion
from flywheel_ingest.handlers import Ingestor, NotificationPoller
from flywheel_ingest.ids import claim_key, dataset_version_id, object_subject
from flywheel_ingest.ports import Conflict, QueueMessage
from flywheel_ingest.settings import IngestSettings
from support.memory_store import MemoryStore

BUCKET = "flywheel-data"
CODEC = build_codec(FlywheelSettings())
LEASE = 10_000


class Clock:
    def __init__(self, at: int = 1_000_000) -> None:
        self.at = at

    def __call__(self) -> int:
        return self.at


def claim(owner: str = "a", expires_at: int = 2_000, **extra: Any) -> Claim:
    return Claim("dv-1", "m", owner, "ev-1", 1_000, expires_at, **extra)


# --- the pure rule -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("existing", "now", "expected"), [
    (None, 1_500, "take"),                    # unreadable or absent: taken
    (claim("me"), 1_500, "mine"),             # a retry of this replica's own close
    (claim("me"), 9_999, "mine"),             # even expired, nobody took it over
    (claim("other"), 1_999, "held"),          # another replica's live claim
    (claim("other"), 2_000, "take"),          # expired: its owner died or stalled
])
def test_verdict(existing: Claim | None, now: int, expected: str) -> None:
    assert verdict(existing, "me", now) == expected


@pytest.mark.parametrize("doc", [None, [], {}, {"subject": "dv-1"}, {**claim().to_doc(), "expires_at": "soon"},
                                 {**claim().to_doc(), "event_id": ""}, {**claim().to_doc(), "claimed_at": None},
                                 {**claim().to_doc(), "takeovers": True}])
def test_a_document_that_is_not_a_claim_reads_as_none(doc: object) -> None:
    assert Claim.from_doc(doc) is None


def test_a_claim_round_trips_and_ignores_unknown_fields() -> None:
    assert Claim.from_doc({**claim(takeovers=2).to_doc(), "later_field": 1}) == claim(takeovers=2)


# --- the lease on a store ------------------------------------------------------------------------------------

def claims_of(store: MemoryStore, owner: str, clock: Clock, ids: list[str] | None = None) -> Claims:
    fresh = iter(ids or [f"ev-{owner}-{n}" for n in range(100)])
    return Claims(store, "ingest-state/", owner, LEASE, clock=clock, new_id=lambda: next(fresh))


def test_one_replica_claims_the_other_finds_it_held_until_it_expires() -> None:
    store, clock = MemoryStore(), Clock()
    a, b = claims_of(store, "a", clock), claims_of(store, "b", clock)
    lease = a.acquire(BUCKET, "m", "dv-1")
    assert isinstance(lease, Lease) and lease.event_id == "ev-a-0"
    assert store.docs[claim_key("ingest-state/", "m", "dv-1")]["owner"] == "a"
    assert b.acquire(BUCKET, "m", "dv-1") == Held("a", clock.at + LEASE)
    clock.at += LEASE - 1
    assert isinstance(b.acquire(BUCKET, "m", "dv-1"), Held)
    clock.at += 1
    taken = b.acquire(BUCKET, "m", "dv-1")
    # Taken over with the first owner's event id: a re-publication is the same event, not a second one.
    assert isinstance(taken, Lease) and (taken.event_id, taken.claim.owner, taken.claim.takeovers) == ("ev-a-0", "b", 1)
    with pytest.raises(LeaseLost):  # the first owner, back from a stall, can neither renew nor publish
        a.renew(lease)
    with pytest.raises(LeaseLost):
        a.renew_if_due(lease)
    assert isinstance(a.acquire(BUCKET, "m", "dv-1"), Held)


def test_renewal_keeps_the_claim_and_a_retry_by_its_owner_keeps_the_event_id() -> None:
    store, clock = MemoryStore(), Clock()
    a, b = claims_of(store, "a", clock), claims_of(store, "b", clock)
    lease = a.acquire(BUCKET, "m", "dv-1")
    assert isinstance(lease, Lease)
    clock.at += LEASE // 3 - 1
    a.renew_if_due(lease)
    assert lease.claim.expires_at == 1_000_000 + LEASE  # not due yet: nothing written
    clock.at += 1
    a.renew_if_due(lease)
    assert lease.claim.expires_at == clock.at + LEASE
    clock.at += LEASE - 1  # past the first expiry, within the renewed one
    assert isinstance(b.acquire(BUCKET, "m", "dv-1"), Held)
    again = a.acquire(BUCKET, "m", "dv-1")  # e.g. the publish failed and the close is retried
    assert isinstance(again, Lease) and again.event_id == "ev-a-0" and again.claim.takeovers == 0


def test_a_claim_is_fresh_for_a_third_of_its_lease() -> None:
    store, clock = MemoryStore(), Clock()
    a = claims_of(store, "a", clock)
    lease = a.acquire(BUCKET, "m", "dv-1")
    assert isinstance(lease, Lease) and lease.created
    clock.at += LEASE // 3 - 1
    assert a.fresh(lease)  # at least 2/3 of the lease left: nobody can have taken it over
    clock.at += 1
    assert not a.fresh(lease)


def test_an_unreadable_claim_is_taken_over_with_a_new_event_id() -> None:
    store, clock = MemoryStore(), Clock()
    store.put_json(BUCKET, claim_key("ingest-state/", "m", "dv-1"), {"half": "written"})
    lease = claims_of(store, "b", clock).acquire(BUCKET, "m", "dv-1")
    assert isinstance(lease, Lease) and lease.event_id.startswith("ev-b-")


def test_the_store_honours_conditional_writes() -> None:
    store = MemoryStore()
    first = store.put_json(BUCKET, "k", {"n": 1}, if_none_match=True)
    with pytest.raises(Conflict):
        store.put_json(BUCKET, "k", {"n": 2}, if_none_match=True)
    second = store.put_json(BUCKET, "k", {"n": 3}, if_match=first)
    with pytest.raises(Conflict):
        store.put_json(BUCKET, "k", {"n": 4}, if_match=first)
    with pytest.raises(Conflict):
        store.put_json(BUCKET, "absent", {"n": 5}, if_match=second)
    assert store.get_json_tagged(BUCKET, "k") == ({"n": 3}, second)


def test_conflicts_are_transient_store_errors() -> None:
    assert transient_store_error(Conflict("k"))


# --- two replicas' handlers on one store and one broker ------------------------------------------------------

class Broker:
    """publish(topic, record), acknowledged on return; every record decoded as a consumer would see it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.encoder = TopicEncoder(CODEC)

    async def publish(self, topic: str, record: dict[str, Any]) -> None:
        out = self.encoder.outgoing(topic, record)
        self.sent.append((out.topic, CODEC.decode(out.value).record))

    def size(self, topic: str, record: dict[str, Any]) -> int:
        out = self.encoder.outgoing(topic, record)
        return len(out.value) + len(out.key or b"")


class Queue:
    name = "flywheel-s3-events"

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete(self, receipts: list[str]) -> int:
        self.deleted += receipts
        return 0


def replica(tmp_path: Path, name: str, store: MemoryStore, broker: Broker, clock: Clock) -> tuple[Ingestor, Queue]:
    settings = IngestSettings(data_dir=tmp_path / name, quiet_period_s=3600, claim_recheck_s=0.001)
    closer = VersionCloser(store, close_config(settings))
    closer.claims = claims_of(store, name, clock)
    queue = Queue()
    ingestor = Ingestor(settings, store, closer, broker.publish, ThreadPoolExecutor(2), queue,
                        event_size=broker.size, transient=transient_store_error)
    return ingestor, queue


def message(store: MemoryStore, key: str, receipt: str) -> QueueMessage:
    seen = store.seen(key)
    record = {"eventName": "ObjectCreated:Put", "eventTime": "2024-05-01T10:00:00.000Z",
              "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "size": seen.size, "eTag": seen.etag}}}
    return QueueMessage(receipt, receipt, json.dumps({"Records": [record]}))


def without_time(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "envelope": {k: v for k, v in record["envelope"].items() if k != "occurred_at"}}


def version_store() -> MemoryStore:
    store = MemoryStore()
    store.objects = {f"datasets/m/v1/part-{i}.jsonl": b'{"text": "a%d", "label": "x"}\n' % i for i in range(4)}
    store.objects["datasets/m/v1/_SUCCESS"] = b""
    return store


async def settle(*ingestors: Ingestor, rounds: int = 20) -> None:
    """Let deferred closes look again until every funnel is empty (or the rounds run out)."""
    for _ in range(rounds):
        for ingestor in ingestors:
            for version in ingestor.funnel.pending.values():
                version.retry_at_ms = 0
            ingestor.close_due()
        await asyncio.gather(*(i.idle() for i in ingestors))
        if not any(i.funnel.pending for i in ingestors):
            return
        await asyncio.sleep(0.01)


def test_two_replicas_racing_on_one_version_publish_it_once(tmp_path: Path) -> None:
    store, broker, clock = version_store(), Broker(), Clock()
    (a, qa), (b, qb) = replica(tmp_path, "a", store, broker, clock), replica(tmp_path, "b", store, broker, clock)
    keys = sorted(store.objects)

    async def scenario() -> None:
        # SQS hands each message to one consumer: the data to one replica, data and marker to the other; both
        # see the marker (one by a redelivery) and close at once.
        await asyncio.gather(
            NotificationPoller(a, qa).handle([message(store, k, f"a{i}") for i, k in enumerate(keys)]),
            NotificationPoller(b, qb).handle([message(store, k, f"b{i}") for i, k in enumerate(keys[2:])]))
        await settle(a, b)

    asyncio.run(scenario())
    assert [topic for topic, _ in broker.sent] == ["dataset.version-ready"]
    [done] = [k for k in store.docs if k.startswith("ingest-state/done/m/")]
    assert store.docs[done]["event_id"] == broker.sent[0][1]["envelope"]["event_id"]
    # Both replicas deleted what they held once the one publication was durable.
    assert len(qa.deleted) == len(keys) and len(qb.deleted) == len(keys) - 2
    assert not a.funnel.pending and not b.funnel.pending


def test_the_loser_does_nothing_while_the_claim_is_live_then_finds_the_done_record(tmp_path: Path) -> None:
    store, broker, clock = version_store(), Broker(), Clock()
    (a, _), (b, qb) = replica(tmp_path, "a", store, broker, clock), replica(tmp_path, "b", store, broker, clock)
    listing = store.list_prefix(BUCKET, "datasets/m/v1/")
    version = dataset_version_id([o for o in listing if not o.key.endswith("_SUCCESS")])
    held = a.claims.acquire(BUCKET, "m", version)  # replica a is validating the version right now
    assert isinstance(held, Lease)
    assert isinstance(b.closer.close(BUCKET, "m", "datasets/m/v1/", {}), HeldElsewhere)

    async def scenario() -> None:
        await NotificationPoller(b, qb).handle([message(store, "datasets/m/v1/_SUCCESS", "b0")])
        await b.idle()
        assert broker.sent == [] and b.funnel.pending  # held: nothing published, the message kept
        await NotificationPoller(a, Queue()).handle([message(store, k, f"a{i}") for i, k in enumerate(store.objects)])
        await settle(a, b)

    asyncio.run(scenario())
    assert [topic for topic, _ in broker.sent] == ["dataset.version-ready"]
    assert broker.sent[0][1]["envelope"]["event_id"] == held.event_id and qb.deleted == ["b0"]


def test_a_replica_dead_after_publishing_is_replaced_with_the_same_event(tmp_path: Path) -> None:
    """The winner died between the broker's ack and its done-record: after its claim expires the other replica
    publishes again, as the same event (id and content; only the envelope time is the re-publication's):
    consumers drop it by event id."""
    store, broker, clock = version_store(), Broker(), Clock()
    (a, qa), (b, qb) = replica(tmp_path, "a", store, broker, clock), replica(tmp_path, "b", store, broker, clock)

    async def dies_before_its_done_record(*_: Any) -> None:
        raise RuntimeError("killed")  # a is not used again

    a._record_done = dies_before_its_done_record  # type: ignore[method-assign]
    keys = sorted(store.objects)

    async def scenario() -> None:
        await NotificationPoller(a, qa).handle([message(store, k, f"a{i}") for i, k in enumerate(keys)])
        await a.idle()
        await NotificationPoller(b, qb).handle([message(store, k, f"b{i}") for i, k in enumerate(keys)])
        await b.idle()
        assert len(broker.sent) == 1  # a's claim is live: b waits
        clock.at += LEASE
        await settle(b)

    asyncio.run(scenario())
    assert [topic for topic, _ in broker.sent] == ["dataset.version-ready"] * 2
    first, second = (record for _, record in broker.sent)
    assert without_time(first) == without_time(second)
    [done] = [k for k in store.docs if k.startswith("ingest-state/done/m/")]
    assert store.docs[done]["event_id"] == first["envelope"]["event_id"]
    assert sorted(qb.deleted) == sorted(f"b{i}" for i in range(len(keys)))


def test_a_replica_whose_claim_was_taken_over_publishes_nothing(tmp_path: Path) -> None:
    store, broker, clock = version_store(), Broker(), Clock()
    (a, _), (b, qb) = replica(tmp_path, "a", store, broker, clock), replica(tmp_path, "b", store, broker, clock)
    result = a.closer.close(BUCKET, "m", "datasets/m/v1/", {})  # validated, manifest written ...
    assert isinstance(result, Ready) and result.lease is not None
    clock.at += LEASE  # ... then a stalls past its lease and b takes the version over

    async def scenario() -> bool:
        await NotificationPoller(b, qb).handle([message(store, "datasets/m/v1/_SUCCESS", "b0")])
        await b.idle()
        return await a._publish(result, PendingVersion(BUCKET, "m", "datasets/m/v1/"))

    assert asyncio.run(scenario()) is False  # a publishes nothing
    assert [topic for topic, _ in broker.sent] == ["dataset.version-ready"] and qb.deleted == ["b0"]
    assert broker.sent[0][1]["envelope"]["event_id"] == result.lease.event_id


def test_two_replicas_refusing_one_object_publish_one_rejection(tmp_path: Path) -> None:
    store, broker, clock = MemoryStore(), Broker(), Clock()
    store.objects = {"datasets/../x.jsonl": b"{}"}
    (a, qa), (b, qb) = replica(tmp_path, "a", store, broker, clock), replica(tmp_path, "b", store, broker, clock)
    seen = store.seen("datasets/../x.jsonl")
    other = claims_of(store, "c", clock).acquire(BUCKET, None, object_subject(seen))  # a third holds it

    async def scenario() -> None:
        await NotificationPoller(a, qa).handle([message(store, "datasets/../x.jsonl", "a0")])
        assert broker.sent == [] and qa.deleted == []  # held elsewhere: the message is kept (it comes back)
        clock.at += LEASE
        await asyncio.gather(NotificationPoller(a, qa).handle([message(store, "datasets/../x.jsonl", "a1")]),
                             NotificationPoller(b, qb).handle([message(store, "datasets/../x.jsonl", "b0")]))

    asyncio.run(scenario())
    [rejection] = [r for t, r in broker.sent if t == "dataset.rejected"]
    assert isinstance(other, Lease) and rejection["envelope"]["event_id"] == other.event_id
    assert rejection["reason"] == "PATH_TRAVERSAL"


def test_a_claim_taken_over_while_validating_ends_the_close_without_a_manifest(tmp_path: Path) -> None:
    clock = Clock()

    class Stalling(MemoryStore):
        """Replica a stalls past its lease on its first read; replica b takes the version over meanwhile."""

        def chunks(self, bucket: str, key: str, chunk_bytes: int) -> Any:
            if not self.reads:
                clock.at += LEASE
                taken = claims_of(self, "b", clock).acquire(BUCKET, "m", version)
                assert isinstance(taken, Lease) and taken.claim.takeovers == 1
            return super().chunks(bucket, key, chunk_bytes)

    store = Stalling()
    store.objects = version_store().objects
    version = dataset_version_id([o for o in store.list_prefix(BUCKET, "datasets/m/v1/")
                                  if not o.key.endswith("_SUCCESS")])
    a, _ = replica(tmp_path, "a", store, Broker(), clock)
    result = a.closer.close(BUCKET, "m", "datasets/m/v1/", {})
    assert isinstance(result, HeldElsewhere) and result.lost
    assert not any(k.startswith("manifests/") for k in store.docs)  # the new owner writes it


def test_a_claim_that_is_not_json_is_taken_over() -> None:
    store, clock = MemoryStore(), Clock()
    store.docs[claim_key("ingest-state/", "m", "dv-1")] = ValueError("not JSON")  # type: ignore[assignment]
    lease = claims_of(store, "b", clock).acquire(BUCKET, "m", "dv-1")
    assert isinstance(lease, Lease) and lease.event_id.startswith("ev-b-") and not lease.created
