"""Deterministic ids: the same S3 objects always give the same ids, so a redelivery after a crash is a no-op."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from flywheel_ingest.layout import ObjectSeen


def dataset_version_id(objects: Iterable[ObjectSeen]) -> str:
    """Hash of the sorted (key, ETag) pairs of a version's data objects."""
    digest = hashlib.sha256()
    for key, etag in sorted((o.key, o.etag) for o in objects):
        digest.update(f"{key}\t{etag}\n".encode())
    return f"dv-{digest.hexdigest()[:24]}"


def object_subject(seen: ObjectSeen) -> str:
    """Id of a single refused object (no version can be formed around it)."""
    raw = "\t".join(seen.identity).encode()
    return f"obj-{hashlib.sha256(raw).hexdigest()[:24]}"


def correlation_id(bucket: str, key_or_prefix: str) -> str:
    """What started the chain: the version's prefix (or the refused object) as an s3:// URI."""
    return f"s3://{bucket}/{key_or_prefix}"


def manifest_key(manifest_prefix: str, model_id: str, version: str) -> str:
    """Where the manifest of dataset version `version` (a dataset_version_id) is written."""
    return f"{manifest_prefix}{model_id}/{version}.json"


def done_key(state_prefix: str, model_id: str | None, subject: str) -> str:
    """Written after the event is acknowledged: its existence means "this subject is handled"."""
    return f"{state_prefix}done/{model_id or '_'}/{subject}.json"


def claim_key(state_prefix: str, model_id: str | None, subject: str) -> str:
    """Which replica announces `subject` (flywheel_ingest.claims): created once, taken over only when expired."""
    return f"{state_prefix}claims/{model_id or '_'}/{subject}.json"


def cursor_key(state_prefix: str, dataset_prefix: str) -> str:
    return f"{state_prefix}scan-cursor/{dataset_prefix.strip('/').replace('/', '.')}.json"


def clean_etag(etag: str) -> str:
    """S3 quotes ETags in API responses and not in notifications; the contract stores them bare."""
    return etag.strip('"')
