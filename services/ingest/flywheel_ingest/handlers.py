"""The ingest handlers: notifications and scan pages into the funnel (the core), due versions closed in worker
threads, events published under the subject's claim, then the effect recorded in S3 and only then the SQS
messages deleted. With N replicas a subject another replica holds is looked at again later
(docs/decisions/0010-ingest-scale-out.md).

`Ingestor` drives the funnel and the closes; `NotificationPoller` and `ReconciliationScan` are the two
detection paths the app runs as Faust tasks (both only feed the funnel; neither decides anything). No Faust
import: the app injects `publish` (a `ports.Publish`, which returns once the broker acknowledged the record).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from typing import Any, TypeVar

from flywheel.events import ids, now_ms
from flywheel_ingest import metrics
from flywheel_ingest.claims import Held, Lease, LeaseLost
from flywheel_ingest.closer import AlreadyDone, CloseResult, HeldElsewhere, Ready, Refused, VersionCloser
from flywheel_ingest.core import Funnel, Observed, PendingVersion
from flywheel_ingest.events import (
    DEAD_LETTER_TOPIC,
    READY_TOPIC,
    REJECTED_TOPIC,
    Rejection,
    notification_dead_letter,
    ready_event,
    rejected_event,
    rejection_dead_letter,
    version_too_large,
    version_unpublishable,
)
from flywheel_ingest.ids import cursor_key, dataset_version_id, done_key, object_subject
from flywheel_ingest.layout import ObjectSeen, Unsafe, place
from flywheel_ingest.notifications import BadNotification, parse_body
from flywheel_ingest.ports import (
    Conflict,
    EventSize,
    IsTransient,
    NotificationQueue,
    ObjectStore,
    Publish,
    QueueMessage,
    Unpublishable,
)
from flywheel_ingest.settings import IngestSettings

log = logging.getLogger("flywheel_ingest")
T = TypeVar("T")
TICK_S = 0.5  # quiet-period closes and retries; marker closes do not wait for it
ERROR_PAUSE_S = 1.0


class Ingestor:
    """`publish` raises Unpublishable for a record no retry can help; `event_size` measures a record as the
    producer would send it; `transient` tells a store error worth retrying from a permanent one."""

    def __init__(self, settings: IngestSettings, store: ObjectStore, closer: VersionCloser, publish: Publish,
                 executor: Executor, queue: NotificationQueue | None = None, *, event_size: EventSize,
                 transient: IsTransient) -> None:
        self.settings, self.store, self.closer, self.queue = settings, store, closer, queue
        self.publish, self.executor, self.event_size, self.transient = publish, executor, event_size, transient
        self.funnel = Funnel(settings.marker_name, int(settings.quiet_period_s * 1000), settings.dedup_cache_size,
                             backoff_ms=int(settings.retry_backoff_s * 1000),
                             max_backoff_ms=int(settings.retry_max_backoff_s * 1000))
        self.own_prefixes = (settings.manifest_prefix, settings.state_prefix)
        self.claims = closer.claims
        self._refusing: set[str] = set()  # refused objects in flight here (the poller and the scan race too)
        self._slots = asyncio.Semaphore(settings.close_workers)
        self._tasks: set[asyncio.Task[None]] = set()

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """boto3 and validation run in worker threads so the event loop (heartbeats, web) never stalls."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args))

    async def observe(self, seen: ObjectSeen, source: str, receipt: str | None = None) -> list[str]:
        """Feed one reported object into the funnel; returns receipts whose effect is already durable."""
        metrics.OBJECTS_SEEN.labels(source).inc()
        now_done = [receipt] if receipt else []
        if seen.key.startswith(self.own_prefixes):
            return now_done  # our own manifests and state, under a bucket-wide notification rule
        where = place(seen.key, self.settings.dataset_prefixes)
        if isinstance(where, Unsafe) and where.within is not None:
            where = where.within  # its version will be rejected naming it; it is never downloaded
        if isinstance(where, Unsafe):
            handled = await self._refuse_object(seen, where.reason, where.detail, where.model_id)
            return now_done if handled else []
        observed = self.funnel.observe(seen, where, receipt)
        if observed is not Observed.NEW:
            metrics.DUPLICATES.labels(source).inc()
        return now_done if observed is Observed.DUPLICATE_DONE else []

    def close_due(self) -> None:
        for version in self.funnel.due(now_ms()):
            task = asyncio.ensure_future(self._close(version))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait for the closes in flight (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _close(self, version: PendingVersion) -> None:
        async with self._slots:
            result = await self._close_result(version)
            if result is None:
                return
            try:
                announced = await self._publish(result, version)
            except Exception as exc:  # the broker away or slow: transient, retried without limit
                metrics.CLOSE_RETRIES.labels("publish").inc()
                self.funnel.retry(version, now_ms())
                log.warning("publishing %s failed (attempt %d); will retry: %r", version.prefix, version.attempts,
                            exc, extra={"prefix": version.prefix, "attempt": version.attempts})
                return
            if not announced:  # another replica's: its done-record, or its expired claim, shows up on a later look
                self.funnel.defer(version, now_ms() + int(self.settings.claim_recheck_s * 1000))
                return
            released = self.funnel.finish(version, result.covered)
            await self.delete(released)
        self.close_due()  # objects that arrived during the close may form a due version already

    async def _close_result(self, version: PendingVersion) -> CloseResult | None:
        known = {key: seen.modified_ms for key, seen in version.objects.items()}
        try:
            return await self.blocking(self.closer.close, version.bucket, version.model_id, version.prefix, known)
        except Exception as exc:
            transient = self.transient(exc)
            metrics.CLOSE_RETRIES.labels("transient" if transient else "permanent").inc()
            failures = self.funnel.retry(version, now_ms(), permanent=not transient)
            log.warning("closing %s failed (%s, attempt %d): %r", version.prefix,
                        "transient" if transient else f"permanent {failures}/{self.settings.max_read_attempts}",
                        version.attempts, exc, extra={"prefix": version.prefix, "attempt": version.attempts})
            if transient or failures < self.settings.max_read_attempts:
                return None  # a transient error is never recorded as final
            version.closing = True
            pending = list(version.objects.values())
            subject = dataset_version_id(pending)
            return Refused(Rejection(version.bucket, version.prefix, "READ_ERROR", f"cannot read the version: {exc!r}",
                                     subject, version.model_id, subject, None, version.prefix), pending)

    async def _publish(self, result: CloseResult, version: PendingVersion) -> bool:
        """Announce the result; False when another replica holds the version's claim (nothing published)."""
        if isinstance(result, AlreadyDone):
            log.info("%s already published", version.prefix, extra={"prefix": version.prefix})
            return True
        if isinstance(result, HeldElsewhere):
            if result.lost:
                metrics.CLAIMS.labels("lost").inc()
                log.warning("claim on %s taken over while validating; the new owner publishes", version.prefix,
                            extra={"prefix": version.prefix})
            else:
                self._held(version.prefix, result.held)
            return False
        if isinstance(result, Ready):
            return await self._publish_ready(result, version)
        return await self._publish_rejection(result.rejection, result.lease)

    async def _publish_ready(self, ready: Ready, version: PendingVersion) -> bool:
        lease = ready.lease
        if lease is None:
            raise RuntimeError(f"{version.prefix}: a ready version without its claim")  # the closer always claims
        record = ready_event(ready.manifest, ready.manifest_uri)
        model_id = record["model_id"]
        size, limit = self.event_size(READY_TOPIC, record), self.settings.max_event_bytes
        if size > limit:  # the producer would refuse it on every retry: refused by design instead
            metrics.UNPUBLISHABLE.labels(READY_TOPIC).inc()
            return await self._publish_rejection(version_too_large(ready.manifest, size, limit), lease)
        try:
            if (announced := await self._announce(READY_TOPIC, record, lease)) is None:
                return False
            record = announced
        except Unpublishable as exc:  # e.g. a broker whose message.max.bytes is under our limit
            metrics.UNPUBLISHABLE.labels(READY_TOPIC).inc()
            return await self._publish_rejection(version_unpublishable(ready.manifest, exc, exc.too_large), lease)
        produced = now_ms()
        metrics.VERSIONS_READY.inc()
        newest = max([version.newest_ms, *(o.modified_ms for o in ready.covered)])
        metrics.DETECTION_LATENCY.observe(max(produced - newest, 0) / 1000)
        log.info("dataset version ready", extra={**ids(record), "model_id": model_id, "prefix": record["prefix"],
                                                "dataset_version_id": record["dataset_version_id"],
                                                "rows": record["row_count"], "objects": len(record["objects"])})
        await self._record_done(model_id, record["dataset_version_id"], record)
        return True

    async def _publish_rejection(self, rejection: Rejection, lease: Lease | None) -> bool:
        """Publish a rejection under the subject's claim (claimed here when the closer did not); False when
        another replica holds it. True also when it turns out to be done already."""
        if lease is None:
            claimed = await self._claim(rejection.model_id, rejection.subject)
            if not isinstance(claimed, Lease):
                return claimed
            lease = claimed
        record = rejected_event(rejection)
        try:
            if (announced := await self._announce(REJECTED_TOPIC, record, lease)) is None:
                return False
            record = announced
        except Unpublishable as exc:  # never seen: rejections are small; but it must not be retried forever
            metrics.UNPUBLISHABLE.labels(REJECTED_TOPIC).inc()
            record = stamped(rejection_dead_letter(rejection, exc), lease)
            await self.publish(DEAD_LETTER_TOPIC, record)
            log.error("rejection of %s unpublishable, dead-lettered: %s", rejection.key, exc,
                      extra={**ids(record), "model_id": rejection.model_id, "reason": rejection.reason})
            await self._record_done(rejection.model_id, rejection.subject, record)
            return True
        metrics.VERSIONS_REJECTED.labels(rejection.reason).inc()
        log.warning("dataset rejected: %s", rejection.detail,
                    extra={**ids(record), "model_id": rejection.model_id, "key": rejection.key,
                           "reason": rejection.reason, "line": rejection.line})
        await self._record_done(rejection.model_id, rejection.subject, record)
        return True

    async def _claim(self, model_id: str | None, subject: str) -> Lease | bool:
        """The subject's claim; False when another replica holds it, True when it is done already."""
        claimed = await self.blocking(self.claims.acquire, self.settings.data_bucket, model_id, subject)
        if isinstance(claimed, Held):
            self._held(subject, claimed)
            return False
        if await self.blocking(self.store.exists, self.settings.data_bucket,
                               done_key(self.settings.state_prefix, model_id, subject)):
            return True
        return claimed

    async def _announce(self, topic: str, record: dict[str, Any], lease: Lease) -> dict[str, Any] | None:
        """Publish `record` as the claim's event (its event id) while the claim is surely ours, and return it as
        published; None, publishing nothing, when another replica took the claim over meanwhile."""
        try:
            if not self.claims.fresh(lease):  # a long close: renew first (at least 2/3 of the lease left)
                await self.blocking(self.claims.renew, lease)
        except LeaseLost:
            metrics.CLAIMS.labels("lost").inc()
            log.warning("claim on %s taken over by another replica; not publishing", lease.claim.subject,
                        extra={"subject": lease.claim.subject, "event_id": lease.event_id})
            return None
        if lease.claim.takeovers:
            metrics.CLAIMS.labels("taken_over").inc()
            log.info("announcing %s under a claim taken over from an expired owner", lease.claim.subject,
                     extra={"subject": lease.claim.subject, "event_id": lease.event_id,
                            "takeovers": lease.claim.takeovers})
        record = stamped(record, lease)
        await self.publish(topic, record)
        return record

    def _held(self, subject: str, held: Held) -> None:
        metrics.CLAIMS.labels("held").inc()
        log.info("%s is claimed by %s; looking again later", subject, held.owner,
                 extra={"subject": subject, "owner": held.owner, "expires_at": held.expires_at})

    async def _record_done(self, model_id: str | None, subject: str, record: dict[str, Any]) -> None:
        """The durable dedup guard: written once (create-once), after the broker acknowledged the event."""
        doc = {"event_id": record["envelope"]["event_id"], "produced_at": now_ms(), "subject": subject,
               "replica": self.claims.owner}
        try:
            await self.blocking(partial(self.store.put_json, self.settings.data_bucket,
                                        done_key(self.settings.state_prefix, model_id, subject), doc,
                                        if_none_match=True))
        except Conflict:  # a replica that took the claim over wrote it: the same event id, nothing to add
            log.info("done-record of %s exists already", subject, extra={"subject": subject, **ids(record)})

    async def _refuse_object(self, seen: ObjectSeen, reason: str, detail: str, model_id: str | None) -> bool:
        """Reject one object; False when another replica holds its claim (its message is kept, so it comes
        back after the visibility timeout, and the scan lists the object again)."""
        if seen.identity in self.funnel.done:
            metrics.DUPLICATES.labels("refused").inc()
            return True
        subject = object_subject(seen)
        if subject in self._refusing:  # this replica is announcing it right now
            return False
        self._refusing.add(subject)
        try:
            done = done_key(self.settings.state_prefix, model_id, subject)
            if not await self.blocking(self.store.exists, self.settings.data_bucket, done):
                rejection = Rejection(seen.bucket, seen.key, reason, detail, subject, model_id)
                if not await self._publish_rejection(rejection, None):
                    return False
        finally:
            self._refusing.discard(subject)
        self.funnel.remember(seen.identity)
        return True

    async def delete(self, receipts: list[str]) -> None:
        """Delete notifications whose effect is durable (a scan-only deployment has no queue)."""
        if self.queue is None or not receipts:
            return
        try:
            stale = await self.blocking(self.queue.delete, receipts)
        except Exception as exc:  # they come back after the visibility timeout and are dropped as done
            log.warning("deleting %d notifications failed: %r", len(receipts), exc)
            return
        if stale:
            log.info("%d receipts were stale (redelivered meanwhile)", stale)


def stamped(record: dict[str, Any], lease: Lease) -> dict[str, Any]:
    """The record as the claim's event: whichever replica publishes it, the same event id."""
    return {**record, "envelope": {**record["envelope"], "event_id": lease.event_id}}


class NotificationPoller:
    """The fast path: S3 notifications from SQS, long-polled in a worker thread."""

    def __init__(self, ingestor: Ingestor, queue: NotificationQueue) -> None:
        self.ingestor, self.queue = ingestor, queue
        self.extended_at = time.monotonic()

    async def run(self) -> None:
        while True:
            try:
                messages = await self.ingestor.blocking(self.queue.receive)
                await self.handle(messages)
                await self.keep_held_invisible()
            except asyncio.CancelledError:
                raise
            except Exception:  # SQS or broker trouble: keep polling, the messages come back
                log.exception("notification poll failed")
                await asyncio.sleep(ERROR_PAUSE_S)

    async def handle(self, messages: list[QueueMessage]) -> None:
        durable: list[str] = []
        for message in messages:
            try:
                reported = parse_body(message.body)
            except Exception as exc:  # BadNotification; anything else would be a parser bug, same treatment
                if not isinstance(exc, BadNotification):
                    log.error("parsing SQS message %s raised %r", message.message_id, exc)
                await self._dead_letter(message, exc)
                durable.append(message.receipt)
                continue
            if not reported:
                durable.append(message.receipt)  # s3:TestEvent, removals
            for seen in reported:
                durable += await self.ingestor.observe(seen, "sqs", message.receipt)
        self.ingestor.close_due()
        await self.ingestor.delete(durable)

    async def keep_held_invisible(self) -> None:
        """A long backlog can outlast the visibility timeout of messages held for an open version; without
        this they would come back ahead of the marker's message again and again."""
        if time.monotonic() - self.extended_at < self.queue.visibility_s / 2:
            return
        self.extended_at = time.monotonic()
        held = self.ingestor.funnel.held_receipts()
        if held:
            stale = await self.ingestor.blocking(self.queue.extend, held)
            log.info("kept %d held notifications invisible (%d stale)", len(held) - stale, stale)

    async def _dead_letter(self, message: QueueMessage, error: Exception) -> None:
        # Half the event limit for the body: the dead letter always fits a Kafka record.
        record = notification_dead_letter(self.queue.name, message.message_id, message.body, error,
                                          self.ingestor.settings.max_event_bytes // 2)
        try:
            await self.ingestor.publish(DEAD_LETTER_TOPIC, record)  # acknowledged: the message is deleted next
        except Unpublishable as exc:  # cannot happen with the body cut; never retried forever either way
            metrics.UNPUBLISHABLE.labels(DEAD_LETTER_TOPIC).inc()
            log.error("dead letter of SQS message %s unpublishable, message dropped: %s (body %r)",
                      message.message_id, exc, message.body[:2000], extra={"error_type": type(error).__name__})
            return
        metrics.DEAD_LETTERED.inc()
        log.warning("dead-lettered SQS message %s: %s", message.message_id, error,
                    extra={**ids(record), "error_type": type(error).__name__})


class ReconciliationScan:
    """ListObjectsV2 from a cursor persisted in S3, a bounded number of keys a tick; at the end of the listing
    the cursor wraps to the start, so every key is revisited once a pass and a restart resumes mid-pass."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.settings = ingestor.settings
        self.cursors: dict[str, str] = {}

    async def run(self) -> None:
        while True:
            try:
                await self.scan_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciliation scan failed")
            await asyncio.sleep(self.settings.scan_interval_s)

    async def scan_once(self) -> int:
        seen = 0
        for prefix in self.settings.dataset_prefixes:
            seen += await self._scan_prefix(prefix)
        self.ingestor.close_due()
        return seen

    async def _scan_prefix(self, prefix: str) -> int:
        cursor = await self._cursor(prefix)
        budget, seen, started = self.settings.scan_max_keys_per_tick, 0, cursor
        while budget > 0:
            page, more = await self.ingestor.blocking(
                self.ingestor.store.list_page, self.settings.data_bucket, prefix, cursor,
                min(self.settings.scan_page_size, budget))
            for item in page:
                await self.ingestor.observe(item, "scan")
            seen, budget = seen + len(page), budget - len(page)
            cursor = page[-1].key if more and page else ""
            if not more:
                break
        if cursor != started:
            await self._save(prefix, cursor)
        return seen

    async def _cursor(self, prefix: str) -> str:
        if prefix not in self.cursors:
            doc = await self.ingestor.blocking(self.ingestor.store.get_json, self.settings.data_bucket,
                                               cursor_key(self.settings.state_prefix, prefix))
            self.cursors[prefix] = (doc or {}).get("start_after", "")
        return self.cursors[prefix]

    async def _save(self, prefix: str, cursor: str) -> None:
        await self.ingestor.blocking(self.ingestor.store.put_json, self.settings.data_bucket,
                                     cursor_key(self.settings.state_prefix, prefix),
                                     {"prefix": prefix, "start_after": cursor})
        self.cursors[prefix] = cursor


def register(app: Any, ingestor: Ingestor) -> None:
    """Ingest's Faust side: the SQS poller and the reconciliation scan as tasks, due closes on a timer."""
    if ingestor.queue is not None:
        app.task(NotificationPoller(ingestor, ingestor.queue).run)
    app.task(ReconciliationScan(ingestor).run)

    @app.timer(TICK_S)
    async def close_quiet_versions() -> None:
        ingestor.close_due()
