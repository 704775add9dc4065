"""The data flywheel, running part: takes joined feedback from the handlers (on the event loop), and writes
the batches harvest.py makes due as dataset versions through a FeedbackStore, in a worker thread.

A version is written as its data object, then its `_SUCCESS` marker (ingest closes the version on it), each
create-only. A failed write keeps the batch, under the same name, and is retried with a back-off doubling
from RETRY_S to MAX_RETRY_S; if an earlier attempt had in fact landed, the retry finds the key taken and
goes on to the marker. A name taken on the first attempt belongs to someone else: the batch moves to the next
free name. While S3 refuses, at most `max_pending_rows` rows are kept (the oldest batches are dropped and
counted beyond); at shut-down everything held is written once, and what still fails is counted as dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from flywheel.events import now_ms
from flywheel_serving.background import BackgroundLoop
from flywheel_serving.core import Joined
from flywheel_serving.harvest import Batch, Harvest
from flywheel_serving.harvest_store import FeedbackStore, KeyTaken

log = logging.getLogger(__name__)
TICK_S = 1.0  # how often due batches are looked for (a full batch wakes the loop at once)
RETRY_S, MAX_RETRY_S = 1.0, 60.0
MAX_RENAMES = 5


class HarvestCounters:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter("flywheel_serving_harvest_rows_total", "Labelled texts kept as dataset rows.",
                            ["model"], registry=registry)
        self.versions = Counter("flywheel_serving_harvest_versions_total", "Feedback dataset versions written "
                                "(data object and _SUCCESS marker).", ["model"], registry=registry)
        self.dropped = Counter("flywheel_serving_harvest_rows_dropped_total", "Labelled texts not written, by "
                               "reason: invalid (ingest would refuse the row), columns (the model requires a "
                               "column feedback cannot fill), no_text, model_id, error, overflow (S3 refused too "
                               "long), shutdown.", ["model", "reason"], registry=registry)
        self.failures = Counter("flywheel_serving_harvest_write_failures_total", "Failed version writes "
                                "(the rows are kept and retried).", ["model"], registry=registry)
        self.pending = Gauge("flywheel_serving_harvest_pending_rows", "Rows in due versions not yet written.",
                             registry=registry)


class Harvester(BackgroundLoop):
    def __init__(self, harvest: Harvest, store: FeedbackStore, counters: HarvestCounters,
                 max_pending_rows: int = 50_000, clock: Callable[[], int] = now_ms) -> None:
        self.harvest, self.store, self.counters, self.clock = harvest, store, counters, clock
        self.max_pending_rows = max_pending_rows
        self._pending: deque[Batch] = deque()
        self._failures = 0
        self._retry_at = 0.0  # time.monotonic() before which a failed write is not tried again
        self._wake = asyncio.Event()
        self._writing: asyncio.Future[None] | None = None  # the write in its thread, awaited whole at stop

    def add(self, joined: Joined, at_ms: int) -> None:
        """From a feedback handler: never raises (the label was already counted and answered)."""
        try:
            added = self.harvest.add(joined, at_ms)
        except Exception:
            log.exception("harvest: feedback of %s not kept", joined.model, extra={"request_id": joined.request_id})
            self.counters.dropped.labels(joined.model, "error").inc(len(joined.pairs))
            return
        if added.rows:
            self.counters.rows.labels(joined.model).inc(added.rows)
        for reason, count in added.dropped.items():
            self.counters.dropped.labels(joined.model, reason).inc(count)
        if self.harvest.full():
            self._wake.set()

    async def stop(self) -> None:
        await self._cancel()
        if self._writing is not None:  # a cancelled wait does not stop the thread: let it finish first
            with contextlib.suppress(Exception):
                await self._writing
        self.collect(everything=True)
        self._retry_at = 0.0
        await asyncio.to_thread(self.write_pending)
        for batch in self._pending:
            self.counters.dropped.labels(batch.model_id, "shutdown").inc(batch.rows)
            log.error("harvest: %d rows of %s lost at shut-down (%s not written)", batch.rows, batch.model_id,
                      batch.prefix, extra={"model_id": batch.model_id})
        self._pending.clear()
        self.counters.pending.set(0)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()
            try:
                self.collect()
                if self._pending and time.monotonic() >= self._retry_at:
                    self._writing = asyncio.ensure_future(asyncio.to_thread(self.write_pending))
                    await asyncio.shield(self._writing)
            except Exception:  # harvesting must never stop; what is kept is tried again
                log.exception("harvest: writing feedback versions failed")

    def collect(self, *, everything: bool = False) -> None:
        """Move due batches to the pending queue, dropping the oldest beyond max_pending_rows."""
        self._pending.extend(self.harvest.due(self.clock(), everything=everything))
        while sum(b.rows for b in self._pending) > self.max_pending_rows and len(self._pending) > 1:
            batch = self._pending.popleft()
            self.counters.dropped.labels(batch.model_id, "overflow").inc(batch.rows)
            log.error("harvest: %d rows of %s dropped: S3 refused writes past %d pending rows", batch.rows,
                      batch.model_id, self.max_pending_rows, extra={"model_id": batch.model_id})
        self.counters.pending.set(sum(b.rows for b in self._pending))

    def write_pending(self) -> None:
        """In order; stop at the first failure (back-off), keeping it and the rest. Runs in a worker thread."""
        while self._pending:
            batch = self._pending[0]
            try:
                self.write(batch)
            except Exception as exc:
                batch.attempts += 1
                self._failures += 1
                self._retry_at = time.monotonic() + min(MAX_RETRY_S, RETRY_S * 2 ** (self._failures - 1))
                self.counters.failures.labels(batch.model_id).inc()
                log.warning("harvest: %s not written (%s: %s); %d versions kept, retried", batch.prefix,
                            type(exc).__name__, exc, len(self._pending), extra={"model_id": batch.model_id})
                return
            self._pending.popleft()
            self._failures = 0
            self.counters.versions.labels(batch.model_id).inc()
            self.counters.pending.set(sum(b.rows for b in self._pending))
            log.info("harvest: wrote %d feedback rows of %s as %s", batch.rows, batch.model_id, batch.prefix,
                     extra={"model_id": batch.model_id, "dataset_prefix": batch.prefix})

    def write(self, batch: Batch) -> None:
        renames = 0
        while not batch.data_written:
            try:
                self.store.put_new(batch.data_key, batch.body)
            except KeyTaken:
                if batch.attempts:  # an earlier attempt of ours landed before its answer was lost
                    batch.data_written = True
                    break
                if renames >= MAX_RENAMES:
                    raise
                renames += 1
                self.harvest.renamed(batch)
                continue
            batch.data_written = True
        with contextlib.suppress(KeyTaken):  # ours from an earlier attempt: the version is closed either way
            self.store.put_new(batch.marker_key, b"")
