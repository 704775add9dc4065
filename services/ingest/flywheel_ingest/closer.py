"""Closing a version: list it, claim it, refuse what must not be downloaded, validate the rest in key order,
write the manifest. Blocking (runs in a worker thread); talks to S3 only through the ObjectStore port.

With N replicas only the holder of the version's claim (flywheel_ingest.claims) goes past the claim; the
manifest is written create-once, so two closes of one version publish one manifest."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.events import now_ms
from flywheel_ingest.claims import Claims, Held, Lease, LeaseLost
from flywheel_ingest.events import Rejection
from flywheel_ingest.ids import dataset_version_id, done_key, manifest_key
from flywheel_ingest.layout import ObjectSeen, Place, data_format, place
from flywheel_ingest.manifest import Checked, build_manifest, reusable
from flywheel_ingest.parquet_check import validate_parquet
from flywheel_ingest.ports import Conflict, ObjectStore
from flywheel_ingest.validation import Invalid, Rules, Stats, validate_csv, validate_jsonl

log = logging.getLogger("flywheel_ingest")


@dataclass(frozen=True)
class CloseConfig:
    prefixes: tuple[str, ...]
    manifest_prefix: str
    state_prefix: str
    marker_name: str
    max_object_bytes: int
    chunk_bytes: int
    rules_for: Callable[[str], Rules]
    spool_dir: Path
    lease_ms: int = 60_000  # a claim not renewed for this long may be taken over by another replica
    owner: str = field(default_factory=lambda: replica_id())


def replica_id(configured: str | None = None) -> str:
    """This process's name in claims: the configured one (the pod name) plus a per-process suffix, so that a
    restarted process never mistakes its predecessor's live claim for its own."""
    return f"{configured or socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Ready:
    manifest: dict[str, Any]
    manifest_uri: str
    covered: list[ObjectSeen]
    lease: Lease | None = None  # the version's claim, held by this replica


@dataclass(frozen=True)
class Refused:
    rejection: Rejection
    covered: list[ObjectSeen]
    lease: Lease | None = None  # None: the handler claims the subject before publishing


@dataclass(frozen=True)
class AlreadyDone:
    covered: list[ObjectSeen]


@dataclass(frozen=True)
class HeldElsewhere:
    """Another replica holds a live claim on the version: it publishes; this one looks again later."""

    held: Held
    covered: list[ObjectSeen]
    lost: bool = False  # this replica held the claim and lost it while validating (it expired under it)


CloseResult = Ready | Refused | AlreadyDone | HeldElsewhere  # what closing a version tells the handlers
Meter = Callable[[str, int], None]  # (format, bytes validated)


@dataclass
class VersionCloser:
    store: ObjectStore
    cfg: CloseConfig
    meter: Meter = lambda fmt, n: None
    claims: Claims = field(init=False)

    def __post_init__(self) -> None:
        self.claims = Claims(self.store, self.cfg.state_prefix, self.cfg.owner, self.cfg.lease_ms)

    def close(self, bucket: str, model_id: str, prefix: str, known_ms: dict[str, int]) -> CloseResult:
        listing = self.store.list_prefix(bucket, prefix)
        data = [o for o in listing if not _control(o, self.cfg)]
        version = dataset_version_id(data)
        # Every empty version hashes alike: its prefix tells them apart.
        subject = version if data else f"empty-{dataset_version_id([ObjectSeen(bucket, prefix, '', 0, 0)])}"
        done = done_key(self.cfg.state_prefix, model_id, subject)
        if self.store.exists(bucket, done):
            return AlreadyDone(listing)
        claimed = self.claims.acquire(bucket, model_id, subject)
        if isinstance(claimed, Held):
            return HeldElsewhere(claimed, listing)
        # A claim taken over (or our own, retried): its previous owner may have finished after our first look.
        # A claim just created had no owner before, and nobody writes a done-record without holding the claim.
        if not claimed.created and self.store.exists(bucket, done):
            return AlreadyDone(listing)
        try:
            return self._claimed(bucket, model_id, prefix, known_ms, listing, data, version, subject, claimed)
        except LeaseLost:  # taken over while validating: the new owner publishes
            return HeldElsewhere(Held("another replica", 0), listing, lost=True)

    def _claimed(self, bucket: str, model_id: str, prefix: str, known_ms: dict[str, int], listing: list[ObjectSeen],
                 data: list[ObjectSeen], version: str, subject: str, lease: Lease) -> CloseResult:
        def refuse(key: str, reason: str, detail: str, line: int | None = None) -> Refused:
            return Refused(Rejection(bucket, key, reason, detail, subject, model_id, version if data else None,
                                     line, prefix), listing, lease)

        if not data:
            return refuse(prefix, "NO_DATA", f"{prefix} holds no data objects ({', '.join(_names(listing))})")
        for seen in data:
            if (problem := self._refusal(seen)) is not None:
                return refuse(seen.key, *problem)
        key = manifest_key(self.cfg.manifest_prefix, model_id, version)
        uri = f"s3://{bucket}/{key}"
        existing, etag = self._recorded(bucket, key, model_id, version)
        if existing is not None:
            return Ready(existing, uri, listing, lease)  # validated before a crash; publish what was recorded
        try:
            checked, content_hash = self._validate_all(bucket, sorted(data, key=lambda o: o.key), model_id, lease)
        except _ObjectInvalid as exc:
            return refuse(exc.key, exc.invalid.reason, exc.invalid.detail, exc.invalid.line)
        marker = next((o.key for o in listing if o.key == prefix + self.cfg.marker_name), None)
        manifest = build_manifest(
            bucket=bucket, model_id=model_id, prefix=prefix, dataset_version_id=version, checked=checked,
            content_hash=content_hash, created_at=now_ms(), marker=marker,
            first_object_at=min(known_ms.get(o.key, o.modified_ms) for o in data))
        try:  # create-once, or replace exactly the unusable one read above
            self.store.put_json(bucket, key, manifest, if_none_match=etag is None, if_match=etag)
        except Conflict:  # another close of this version wrote first (a claim taken over under a slow owner)
            written, _ = self._recorded(bucket, key, model_id, version)
            if written is None:
                raise  # transient: the next attempt reads it again
            return Ready(written, uri, listing, lease)
        return Ready(manifest, uri, listing, lease)

    def _recorded(self, bucket: str, key: str, model_id: str,
                  version: str) -> tuple[dict[str, Any] | None, str | None]:
        """The manifest recorded by an earlier close when it is complete (None: validate again), and the ETag
        of whatever document is there (None: nothing is). One that is not JSON reads as {}: rebuilt and replaced
        like any unusable manifest."""
        found = self.store.get_json_tagged(bucket, key)
        if found is None:
            return None, None
        doc, etag = found
        if not reusable(doc, bucket=bucket, model_id=model_id, dataset_version_id=version):
            log.warning("recorded manifest %s is incomplete or not this version's; validating again", key,
                        extra={"manifest": key, "model_id": model_id, "dataset_version_id": version})
            return None, etag
        return doc, etag

    def _refusal(self, seen: ObjectSeen) -> tuple[str, str] | None:
        """Checks made on the listing alone: a refused object is never downloaded."""
        found = place(seen.key, self.cfg.prefixes)
        if not isinstance(found, Place):
            return found.reason, found.detail
        if data_format(seen.key) is None:
            return "UNSUPPORTED_FORMAT", f"{found.name}: expected .jsonl, .ndjson, .csv or .parquet"
        if seen.size > self.cfg.max_object_bytes:
            return "TOO_LARGE", f"{seen.size} bytes is over the {self.cfg.max_object_bytes}-byte limit"
        if seen.size == 0:
            return "EMPTY_FILE", "the object is empty (0 bytes)"
        return None

    def _validate_all(self, bucket: str, data: list[ObjectSeen], model_id: str,
                      lease: Lease) -> tuple[list[Checked], str]:
        digest = hashlib.sha256()  # over every object's bytes in key order, fed while validating
        rules = self.cfg.rules_for(model_id)
        checked = []
        for seen in data:
            fmt = data_format(seen.key) or ""
            chunks = self._metered(self.store.chunks(bucket, seen.key, self.cfg.chunk_bytes), digest, fmt, lease)
            try:
                stats = self._validate_one(fmt, chunks, rules)
            except Invalid as exc:
                raise _ObjectInvalid(seen.key, exc) from None
            checked.append(Checked(seen, fmt, stats))
        return checked, digest.hexdigest()

    def _validate_one(self, fmt: str, chunks: Iterable[bytes], rules: Rules) -> Stats:
        if fmt == "jsonl":
            return validate_jsonl(chunks, rules)
        if fmt == "csv":
            return validate_csv(chunks, rules)
        self.cfg.spool_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.cfg.spool_dir, suffix=".parquet") as spool:
            for chunk in chunks:
                spool.write(chunk)
            spool.flush()
            return validate_parquet(Path(spool.name), rules)

    def _metered(self, chunks: Iterator[bytes], digest: Any, fmt: str, lease: Lease) -> Iterator[bytes]:
        for chunk in chunks:
            digest.update(chunk)
            self.meter(fmt, len(chunk))
            self.claims.renew_if_due(lease)  # a long validation keeps its claim; a lost one ends it here
            yield chunk


class _ObjectInvalid(Exception):
    def __init__(self, key: str, invalid: Invalid) -> None:
        super().__init__(key)
        self.key, self.invalid = key, invalid


def _control(seen: ObjectSeen, cfg: CloseConfig) -> bool:
    found = place(seen.key, cfg.prefixes)
    return isinstance(found, Place) and found.is_control


def _names(listing: list[ObjectSeen]) -> list[str]:
    return [o.key.rsplit("/", 1)[-1] for o in listing][:5] or ["nothing"]
