"""Per-model rule state in S3, fenced by ETag: what lets two monitor workers share models safely.

One JSON document per model, `s3://<artifact bucket>/monitor/models/<model_id>/rules.json`: the registered
version (and its drift reference), the versions it replaced, each rule's hysteresis ("breaching") and
cooldown (last request), and an outbox of RetrainRequested records claimed but not yet acknowledged by the
broker. A worker loads a model's document the first time it touches the model after a partition
assignment, and writes it on every transition (a rule fires or recovers, a new version) with `IfMatch` on
the ETag it read or wrote last, so a worker that another one replaced cannot claim a breach: its write
fails, it adopts the other's state and decides again. Windows are not here: they are a cache
(docs/decisions/0015-monitor-scale-out.md).

Blocking boto3 calls: `ModelStates` runs them in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from flywheel.s3conditional import get_json_etag, put_json_if
from flywheel_monitor.core import MonitorCore

log = logging.getLogger("monitor")

STATE_PREFIX = "monitor/models/"


def state_key(model_id: str) -> str:
    return f"{STATE_PREFIX}{model_id}/rules.json"


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class S3RuleStates:
    """The documents themselves (blocking)."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3, self.bucket = s3, bucket

    def load(self, model_id: str) -> tuple[dict[str, Any] | None, str | None]:
        return get_json_etag(self.s3, self.bucket, state_key(model_id))

    def save(self, model_id: str, doc: dict[str, Any], etag: str | None) -> str | None:
        """The new ETag, or None when another worker wrote since `etag` (or created the document first)."""
        return put_json_if(self.s3, self.bucket, state_key(model_id), doc, etag)


class Fenced(RuntimeError):
    """Another worker wrote the model's state since this one read it: this worker's decision is void."""


Publish = Callable[[dict[str, Any]], Awaitable[None]]


class ModelStates:
    """Loads, saves and fences the models' durable state around the core (MonitorHandlers calls it)."""

    def __init__(
        self,
        store: S3RuleStates,
        core: MonitorCore,
        worker: str | None = None,
        run: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self.store, self.core = store, core
        self.worker = worker or worker_id()
        self._run = run or asyncio.to_thread
        self._etags: dict[str, str | None] = {}  # models loaded since the last assignment -> ETag held

    def forget(self) -> None:
        """A rebalance: every model is loaded again from S3 on its next event (another worker may have
        decided for it meanwhile)."""
        self._etags.clear()

    def loaded(self, model_id: str) -> bool:
        return model_id in self._etags

    async def load(self, model_id: str, publish: Publish) -> None:
        """Adopt the model's document (if any), then finish its outbox: requests claimed by a worker that
        died (or was replaced) before the broker acknowledged them go out now, with their own event ids."""
        doc, etag = await self._run(self.store.load, model_id)
        if doc is None:
            # known from the event log but no document yet: the first save creates it
            if model_id in self.core.models:
                self._etags[model_id] = None
            return  # an unknown model is not remembered: producers choose model ids
        self._etags[model_id] = etag
        self.core.install(doc)
        pending = doc.get("pending") or []
        if pending:
            log.info(
                "sending %d retrain request(s) claimed before a restart or takeover",
                len(pending),
                extra={"model_id": model_id, "event_id": pending[0]["envelope"]["event_id"]},
            )
            for record in pending:
                await publish(record)
            await self.save(model_id)

    async def save(self, model_id: str, pending: list[dict[str, Any]] | None = None) -> None:
        """Write the core's state of the model (and the requests about to be sent); Fenced when another worker
        wrote first: its state is adopted, and the caller sends nothing."""
        doc = self.core.snapshot(model_id)
        if doc is None:
            return
        doc.update(pending=pending or [], owner=self.worker)
        etag = await self._run(self.store.save, model_id, doc, self._etags.get(model_id))
        if etag is None:
            theirs, their_etag = await self._run(self.store.load, model_id)
            self._etags[model_id] = their_etag
            if theirs is not None:
                self.core.install(theirs)
            raise Fenced(f"model {model_id}: another worker wrote its rule state first")
        self._etags[model_id] = etag
