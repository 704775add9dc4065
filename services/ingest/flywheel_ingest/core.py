"""The pure decision core: the funnel both detection paths feed. Dedup by (bucket, key, S3 object version or
ETag), grouping into dataset versions, and the rule that closes a version (its marker, or a quiet period).

No I/O: the handlers feed it what notifications and listings report and act on what it decides. Pure helpers
beside it: `layout` (key checks), `ids` (deterministic ids), `validation` and `parquet_check` (data checks),
`notifications` (SQS bodies -> objects)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from flywheel_ingest.layout import ObjectSeen, Place

Identity = tuple[str, str, str]


class Observed(Enum):
    """What the funnel made of one reported object."""

    NEW = "new"
    DUPLICATE_PENDING = "duplicate_pending"  # already waiting in an open version
    DUPLICATE_DONE = "duplicate_done"  # its version is published: the notification can be deleted


@dataclass
class PendingVersion:
    bucket: str
    model_id: str
    prefix: str
    objects: dict[str, ObjectSeen] = field(default_factory=dict)
    receipts: dict[str, list[str]] = field(default_factory=dict)  # key -> SQS receipt handles
    marker_seen: bool = False
    newest_ms: int = 0
    closing: bool = False
    attempts: int = 0  # failed closes in a row, transient or not: drives the back-off
    failures: int = 0  # permanent failures among them: only these can end in a READ_ERROR rejection
    retry_at_ms: int = 0

    def closable(self, now_ms: int, quiet_ms: int) -> bool:
        if self.closing or now_ms < self.retry_at_ms:
            return False
        return self.marker_seen or now_ms - self.newest_ms >= quiet_ms


def retry_delay_ms(attempt: int, backoff_ms: int, max_backoff_ms: int) -> int:
    """backoff_ms, 2x, 4x, ... for attempts 1, 2, 3, ..., capped at max_backoff_ms."""
    return min(backoff_ms * 2 ** min(attempt - 1, 30), max_backoff_ms)


class Remembered:
    """A bounded set of handled identities (least recently added forgotten first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Identity, None] = OrderedDict()

    def add(self, identity: Identity) -> None:
        self._items[identity] = None
        self._items.move_to_end(identity)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __contains__(self, identity: object) -> bool:
        return identity in self._items


class Funnel:
    """Pure state: which objects are pending in which version, which are done. Not thread-safe by design:
    only the event loop touches it."""

    def __init__(self, marker_name: str, quiet_ms: int, remember: int = 100_000, *, backoff_ms: int = 500,
                 max_backoff_ms: int = 60_000) -> None:
        self.marker_name = marker_name
        self.quiet_ms = quiet_ms
        self.backoff_ms, self.max_backoff_ms = backoff_ms, max_backoff_ms
        self.done = Remembered(remember)
        self.pending: dict[tuple[str, str], PendingVersion] = {}

    def observe(self, seen: ObjectSeen, where: Place, receipt: str | None = None) -> Observed:
        if seen.identity in self.done:
            return Observed.DUPLICATE_DONE
        version = self._version(seen.bucket, where)
        if receipt is not None:
            version.receipts.setdefault(seen.key, []).append(receipt)
        known = version.objects.get(seen.key)
        if known is not None and known.identity == seen.identity:
            return Observed.DUPLICATE_PENDING
        version.objects[seen.key] = seen  # new key, or the same key overwritten with other content
        version.newest_ms = max(version.newest_ms, seen.modified_ms)
        version.marker_seen |= where.name == self.marker_name
        return Observed.NEW

    def _version(self, bucket: str, where: Place) -> PendingVersion:
        slot = (bucket, where.prefix)
        if slot not in self.pending:
            self.pending[slot] = PendingVersion(bucket, where.model_id, where.prefix)
        return self.pending[slot]

    def held_receipts(self) -> list[str]:
        """SQS receipts of objects in versions not closed yet: their messages must stay invisible."""
        return [r for v in self.pending.values() for rs in v.receipts.values() for r in rs]

    def due(self, now_ms: int) -> list[PendingVersion]:
        """Versions ready to close; they are marked closing until finish() or retry()."""
        ready = [v for v in self.pending.values() if v.closable(now_ms, self.quiet_ms)]
        for version in ready:
            version.closing = True
        return ready

    def finish(self, version: PendingVersion, covered: Iterable[ObjectSeen]) -> list[str]:
        """The version's effect is durable for `covered` (what the close listed); returns the receipts that
        may now be deleted. Objects seen meanwhile and not covered stay pending as a new version."""
        released: list[str] = []
        for seen in covered:
            self.done.add(seen.identity)
            pending = version.objects.get(seen.key)
            if pending is not None and pending.identity == seen.identity:
                del version.objects[seen.key]
                released += version.receipts.pop(seen.key, [])
        version.closing, version.attempts, version.failures, version.marker_seen = False, 0, 0, False
        if not version.objects:
            released += [r for rs in version.receipts.values() for r in rs]
            del self.pending[(version.bucket, version.prefix)]
        else:
            version.marker_seen = version.prefix + self.marker_name in version.objects
        return released

    def retry(self, version: PendingVersion, now_ms: int, *, permanent: bool = False) -> int:
        """A failed close: try again after a capped exponential back-off (backoff_ms, doubling per attempt, at
        most max_backoff_ms). Returns the permanent failures so far: a transient failure (throttling, 5xx, a
        timeout, a broker away) never counts toward giving up, however often it repeats."""
        version.closing = False
        version.attempts += 1
        version.failures += permanent
        version.retry_at_ms = now_ms + retry_delay_ms(version.attempts, self.backoff_ms, self.max_backoff_ms)
        return version.failures

    def defer(self, version: PendingVersion, at_ms: int) -> None:
        """Look at the version again at `at_ms`: another replica holds its claim. Not a failure: neither the
        back-off nor the count of permanent failures grows."""
        version.closing = False
        version.retry_at_ms = at_ms

    def remember(self, identity: Identity) -> None:
        """Record a handled identity that belongs to no version (a refused object)."""
        self.done.add(identity)
