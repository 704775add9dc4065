"""Claims: which replica announces a subject (a dataset version id, or one refused object), with N replicas
on one bucket and queue (docs/decisions/0010-ingest-scale-out.md).

Before it publishes anything about a subject, a replica claims it: a small JSON document at
`<state prefix>claims/<model>/<subject>.json`, created with a conditional put (`IfNoneMatch: *`), naming the
owner, an expiry, and the event id that the announcement will carry. Only the owner of a live claim
validates, writes the manifest and publishes. Another replica that finds a live claim does nothing and looks
again later (by then the done-record usually exists); one that finds an expired claim (its owner died or
stalled) takes it over with a conditional replace (`IfMatch` on the ETag it read), keeping the event id, so
a re-publication after the first owner died between the broker's ack and its done-record is the same event,
not a second one. The owner renews the claim (same conditional replace) every third of the lease while it
validates, and before it publishes when a third has passed since: it publishes with at least two thirds of
its lease left, and a replica that lost its claim never publishes.

`verdict` is the pure rule; `Claims` applies it through the ObjectStore port (blocking: worker threads).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from flywheel.events import now_ms
from flywheel_ingest.ids import claim_key
from flywheel_ingest.ports import Conflict, ObjectStore

Verdict = Literal["mine", "take", "held"]
_ATTEMPTS = 5  # conditional writes lost in a row before giving up for this close (retried later)


@dataclass(frozen=True)
class Claim:
    """The claim document."""

    subject: str
    model_id: str | None
    owner: str
    event_id: str  # the announcement's envelope event_id: the same whoever publishes it
    claimed_at: int  # ms, when the claim was first created
    expires_at: int  # ms, the writer's clock; renewed every third of the lease
    takeovers: int = 0

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: object) -> Claim | None:
        """None for a document that is not a claim (cut short, edited by hand): it is taken over."""
        if not isinstance(doc, dict):
            return None
        try:
            claim = cls(**{name: doc[name] for name in cls.__dataclass_fields__ if name in doc})
        except TypeError:
            return None
        ok = (isinstance(claim.owner, str) and isinstance(claim.event_id, str) and claim.event_id
              and all(isinstance(v, int) and not isinstance(v, bool)
                      for v in (claim.claimed_at, claim.expires_at, claim.takeovers)))
        return claim if ok else None


@dataclass(frozen=True)
class Held:
    """Another replica holds a live claim on the subject until `expires_at` (ms)."""

    owner: str
    expires_at: int


class LeaseLost(Exception):
    """The claim was taken over (it expired under this replica): stop, publish nothing."""


@dataclass
class Lease:
    """A claim this replica holds; `etag` is the claim document's, for the next conditional replace."""

    bucket: str
    key: str
    claim: Claim
    etag: str
    renewed_ms: int
    created: bool = False  # the claim document was created by this acquisition (nobody held it before)

    @property
    def event_id(self) -> str:
        return self.claim.event_id


def verdict(existing: Claim | None, me: str, now: int) -> Verdict:
    """What a replica may do with a subject whose claim document is `existing`: `mine` (its own claim, e.g.
    a retry after a failed publish: renew it), `take` (expired or unreadable: take it over, keeping its event
    id), or `held` (another replica's live claim: do nothing)."""
    if existing is None:
        return "take"
    if existing.owner == me:
        return "mine"
    return "take" if existing.expires_at <= now else "held"


class Claims:
    """Acquire and renew claims in the data bucket. `clock` gives ms; `new_id` a fresh event id."""

    def __init__(self, store: ObjectStore, state_prefix: str, owner: str, lease_ms: int,
                 clock: Callable[[], int] = now_ms, new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        self.store, self.state_prefix, self.owner, self.lease_ms = store, state_prefix, owner, lease_ms
        self.clock, self.new_id = clock, new_id

    def acquire(self, bucket: str, model_id: str | None, subject: str) -> Lease | Held:
        key = claim_key(self.state_prefix, model_id, subject)
        for _ in range(_ATTEMPTS):
            now = self.clock()
            fresh = Claim(subject, model_id, self.owner, self.new_id(), now, now + self.lease_ms)
            try:
                etag = self.store.put_json(bucket, key, fresh.to_doc(), if_none_match=True)
                return Lease(bucket, key, fresh, etag, now, created=True)
            except Conflict:
                pass
            found = self.store.get_json_tagged(bucket, key)
            if found is None:
                continue  # removed between our write and our read: try to create it again
            doc, etag = found
            existing = Claim.from_doc(doc)
            decided = verdict(existing, self.owner, now)
            if decided == "held" and existing is not None:
                return Held(existing.owner, existing.expires_at)
            if existing is None:
                taken = fresh
            else:
                taken = replace(existing, owner=self.owner, expires_at=now + self.lease_ms,
                                takeovers=existing.takeovers + (decided == "take"))
            try:
                return Lease(bucket, key, taken, self.store.put_json(bucket, key, taken.to_doc(), if_match=etag), now)
            except Conflict:
                continue  # another replica took it over first: read again
        raise Conflict(f"{key}: claim contended {_ATTEMPTS} times in a row")

    def renew(self, lease: Lease) -> None:
        """Push the expiry out by a lease; raises LeaseLost when another replica took the claim over."""
        now = self.clock()
        renewed = replace(lease.claim, expires_at=now + self.lease_ms)
        try:
            lease.etag = self.store.put_json(lease.bucket, lease.key, renewed.to_doc(), if_match=lease.etag)
        except Conflict:
            raise LeaseLost(f"{lease.key}: claim taken over by another replica") from None
        lease.claim, lease.renewed_ms = renewed, now

    def fresh(self, lease: Lease) -> bool:
        """Whether at least two thirds of the lease are left (on this replica's clock): nobody can have taken
        the claim over, so publishing needs no S3 call first."""
        return self.clock() - lease.renewed_ms < self.lease_ms // 3

    def renew_if_due(self, lease: Lease) -> None:
        """Renew when a third of the lease has passed since the last renewal (long validations, and right
        before publishing); raises LeaseLost when the claim was taken over."""
        if not self.fresh(lease):
            self.renew(lease)
