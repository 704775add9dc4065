"""The two detection paths: S3 notifications from SQS (fast) and a reconciliation scan (catches what the
notifications missed). Both only feed the Ingestor's funnel; neither decides anything."""

from __future__ import annotations

import asyncio
import logging
import time

from flywheel.deadletter import SourceRecord, dead_letter
from flywheel.events import ids
from flywheel_ingest import metrics
from flywheel_ingest.adapters import QueueMessage, SqsQueue
from flywheel_ingest.ids import cursor_key
from flywheel_ingest.notifications import BadNotification, parse_body
from flywheel_ingest.runtime import Ingestor

log = logging.getLogger("flywheel_ingest")
ERROR_PAUSE_S = 1.0


class NotificationPoller:
    def __init__(self, ingestor: Ingestor, queue: SqsQueue) -> None:
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
            except BadNotification as exc:
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
        source = SourceRecord(f"sqs:{self.queue.name}", 0, -1, message.message_id.encode(), message.body.encode())
        record = dead_letter(source, error, "ingest")
        encoded = self.ingestor.codec.encode("DeadLetter", record)
        await self.ingestor.send("ingest.dead-letter", source.topic.encode(), encoded)
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
