"""Closing a version: list it, refuse what must not be downloaded, validate the rest in key order, write the
manifest. Blocking (runs in a worker thread); talks to S3 only through the ObjectStore port."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel.events import now_ms
from flywheel_ingest.events import Rejection
from flywheel_ingest.ids import dataset_version_id, done_key, manifest_key
from flywheel_ingest.layout import ObjectSeen, Place, data_format, place
from flywheel_ingest.manifest import Checked, build_manifest, reusable
from flywheel_ingest.parquet_check import validate_parquet
from flywheel_ingest.ports import ObjectStore
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


@dataclass(frozen=True)
class Ready:
    manifest: dict[str, Any]
    manifest_uri: str
    covered: list[ObjectSeen]


@dataclass(frozen=True)
class Refused:
    rejection: Rejection
    covered: list[ObjectSeen]


@dataclass(frozen=True)
class AlreadyDone:
    covered: list[ObjectSeen]


CloseResult = Ready | Refused | AlreadyDone  # what closing a version tells the handlers
Meter = Callable[[str, int], None]  # (format, bytes validated)


@dataclass
class VersionCloser:
    store: ObjectStore
    cfg: CloseConfig
    meter: Meter = lambda fmt, n: None

    def close(self, bucket: str, model_id: str, prefix: str, known_ms: dict[str, int]) -> CloseResult:
        listing = self.store.list_prefix(bucket, prefix)
        data = [o for o in listing if not _control(o, self.cfg)]
        version = dataset_version_id(data)
        # Every empty version hashes alike: its prefix tells them apart.
        subject = version if data else f"empty-{dataset_version_id([ObjectSeen(bucket, prefix, '', 0, 0)])}"
        if self.store.exists(bucket, done_key(self.cfg.state_prefix, model_id, subject)):
            return AlreadyDone(listing)

        def refuse(key: str, reason: str, detail: str, line: int | None = None) -> Refused:
            return Refused(Rejection(bucket, key, reason, detail, subject, model_id, version if data else None,
                                     line, prefix), listing)

        if not data:
            return refuse(prefix, "NO_DATA", f"{prefix} holds no data objects ({', '.join(_names(listing))})")
        for seen in data:
            if (problem := self._refusal(seen)) is not None:
                return refuse(seen.key, *problem)
        key = manifest_key(self.cfg.manifest_prefix, model_id, version)
        uri = f"s3://{bucket}/{key}"
        if (existing := self._recorded(bucket, key, model_id, version)) is not None:
            return Ready(existing, uri, listing)  # validated before a crash; publish what was recorded
        try:
            checked, content_hash = self._validate_all(bucket, sorted(data, key=lambda o: o.key), model_id)
        except _ObjectInvalid as exc:
            return refuse(exc.key, exc.invalid.reason, exc.invalid.detail, exc.invalid.line)
        marker = next((o.key for o in listing if o.key == prefix + self.cfg.marker_name), None)
        manifest = build_manifest(
            bucket=bucket, model_id=model_id, prefix=prefix, dataset_version_id=version, checked=checked,
            content_hash=content_hash, created_at=now_ms(), marker=marker,
            first_object_at=min(known_ms.get(o.key, o.modified_ms) for o in data))
        self.store.put_json(bucket, key, manifest)
        return Ready(manifest, uri, listing)

    def _recorded(self, bucket: str, key: str, model_id: str, version: str) -> dict[str, Any] | None:
        """The manifest recorded by an earlier close, when it is complete; None means validate (again)."""
        try:
            doc = self.store.get_json(bucket, key)
        except ValueError:  # not JSON at all: rebuilt below like any unusable manifest
            doc = {}
        if doc is None:
            return None
        if not reusable(doc, bucket=bucket, model_id=model_id, dataset_version_id=version):
            log.warning("recorded manifest %s is incomplete or not this version's; validating again", key,
                        extra={"manifest": key, "model_id": model_id, "dataset_version_id": version})
            return None
        return doc

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

    def _validate_all(self, bucket: str, data: list[ObjectSeen], model_id: str) -> tuple[list[Checked], str]:
        digest = hashlib.sha256()  # over every object's bytes in key order, fed while validating
        rules = self.cfg.rules_for(model_id)
        checked = []
        for seen in data:
            fmt = data_format(seen.key) or ""
            chunks = self._metered(self.store.chunks(bucket, seen.key, self.cfg.chunk_bytes), digest, fmt)
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

    def _metered(self, chunks: Iterator[bytes], digest: Any, fmt: str) -> Iterator[bytes]:
        for chunk in chunks:
            digest.update(chunk)
            self.meter(fmt, len(chunk))
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
