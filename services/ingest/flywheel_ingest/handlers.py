"""The ingest loop: notifications and scan pages into the funnel, due versions closed in worker threads, events
produced, then the effect recorded in S3 and only then the SQS messages deleted. No Faust import: the app
injects `send` (which returns once the broker acknowledged the record)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from functools import partial
from typing import Any, TypeVar

from flywheel.codec import AvroCodec
from flywheel.events import ids, now_ms
from flywheel_ingest import metrics
from flywheel_ingest.closer import AlreadyDone, Outcome, Ready, Refused, VersionCloser
from flywheel_ingest.grouping import Funnel, PendingVersion, Seen
from flywheel_ingest.ids import dataset_version_id, done_key, object_subject
from flywheel_ingest.layout import ObjectSeen, Unsafe, place
from flywheel_ingest.manifest import Rejection, ready_event, rejected_event
from flywheel_ingest.settings import IngestSettings

log = logging.getLogger("flywheel_ingest")
Send = Callable[[str, bytes, bytes], Awaitable[None]]
T = TypeVar("T")
RETRY_BACKOFF_MS = 500


class Ingestor:
    def __init__(self, settings: IngestSettings, store: Any, closer: VersionCloser, send: Send, codec: AvroCodec,
                 executor: Executor, queue: Any | None = None) -> None:
        self.settings, self.store, self.closer, self.queue = settings, store, closer, queue
        self.send, self.codec, self.executor = send, codec, executor
        self.funnel = Funnel(settings.marker_name, int(settings.quiet_period_s * 1000), settings.dedup_cache_size)
        self.own_prefixes = (settings.manifest_prefix, settings.state_prefix)
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
            await self._refuse_object(seen, where.reason, where.detail, where.model_id)
            return now_done
        outcome = self.funnel.observe(seen, where, receipt)
        if outcome is not Seen.NEW:
            metrics.DUPLICATES.labels(source).inc()
        return now_done if outcome is Seen.DUPLICATE_DONE else []

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
            outcome = await self._outcome(version)
            if outcome is None:
                return
            try:
                await self._publish(outcome, version)
            except Exception:
                log.exception("publishing %s failed; will retry", version.prefix, extra={"prefix": version.prefix})
                self.funnel.retry(version, now_ms(), RETRY_BACKOFF_MS)
                return
            released = self.funnel.finish(version, outcome.covered)
            await self.delete(released)
        self.close_due()  # objects that arrived during the close may form a due version already

    async def _outcome(self, version: PendingVersion) -> Outcome | None:
        known = {key: seen.modified_ms for key, seen in version.objects.items()}
        try:
            return await self.blocking(self.closer.close, version.bucket, version.model_id, version.prefix, known)
        except Exception as exc:
            metrics.CLOSE_RETRIES.inc()
            attempts = self.funnel.retry(version, now_ms(), RETRY_BACKOFF_MS)
            log.warning("closing %s failed (attempt %d): %r", version.prefix, attempts, exc,
                        extra={"prefix": version.prefix, "attempt": attempts})
            if attempts < self.settings.max_read_attempts:
                return None
            version.closing = True
            pending = list(version.objects.values())
            subject = dataset_version_id(pending)
            return Refused(Rejection(version.bucket, version.prefix, "READ_ERROR", f"cannot read the version: {exc!r}",
                                     subject, version.model_id, subject, None, version.prefix), pending)

    async def _publish(self, outcome: Outcome, version: PendingVersion) -> None:
        if isinstance(outcome, AlreadyDone):
            log.info("%s already published", version.prefix, extra={"prefix": version.prefix})
        elif isinstance(outcome, Ready):
            await self._publish_ready(outcome, version)
        else:
            await self._publish_rejection(outcome.rejection)

    async def _publish_ready(self, ready: Ready, version: PendingVersion) -> None:
        record = ready_event(ready.manifest, ready.manifest_uri)
        model_id = record["model_id"]
        await self.send("dataset.version-ready", model_id.encode(), self.codec.encode("DatasetVersionReady", record))
        produced = now_ms()
        metrics.VERSIONS_READY.inc()
        newest = max([version.newest_ms, *(o.modified_ms for o in ready.covered)])
        metrics.DETECTION_LATENCY.observe(max(produced - newest, 0) / 1000)
        log.info("dataset version ready", extra={**ids(record), "model_id": model_id, "prefix": record["prefix"],
                                                "dataset_version_id": record["dataset_version_id"],
                                                "rows": record["row_count"], "objects": len(record["objects"])})
        await self._record_done(model_id, record["dataset_version_id"], record)

    async def _publish_rejection(self, rejection: Rejection) -> None:
        record = rejected_event(rejection)
        key = (rejection.model_id or "").encode()
        await self.send("dataset.rejected", key, self.codec.encode("DatasetRejected", record))
        metrics.VERSIONS_REJECTED.labels(rejection.reason).inc()
        log.warning("dataset rejected: %s", rejection.detail,
                    extra={**ids(record), "model_id": rejection.model_id, "key": rejection.key,
                           "reason": rejection.reason, "line": rejection.line})
        await self._record_done(rejection.model_id, rejection.subject, record)

    async def _record_done(self, model_id: str | None, subject: str, record: dict[str, Any]) -> None:
        """The durable dedup guard: written after the broker acknowledged the event."""
        doc = {"event_id": record["envelope"]["event_id"], "produced_at": now_ms(), "subject": subject}
        await self.blocking(self.store.put_json, self.settings.data_bucket,
                            done_key(self.settings.state_prefix, model_id, subject), doc)

    async def _refuse_object(self, seen: ObjectSeen, reason: str, detail: str, model_id: str | None) -> None:
        if seen.identity in self.funnel.done:
            metrics.DUPLICATES.labels("refused").inc()
            return
        subject = object_subject(seen)
        done = done_key(self.settings.state_prefix, model_id, subject)
        if not await self.blocking(self.store.exists, self.settings.data_bucket, done):
            await self._publish_rejection(Rejection(seen.bucket, seen.key, reason, detail, subject, model_id))
        self.funnel.remember(seen.identity)

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
