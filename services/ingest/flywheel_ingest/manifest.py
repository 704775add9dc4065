"""The manifest (the durable result of validating a version) and the events built from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flywheel.events import envelope
from flywheel_ingest.ids import correlation_id
from flywheel_ingest.layout import ObjectSeen
from flywheel_ingest.validation import Stats

PRODUCER = "ingest"


@dataclass(frozen=True)
class Checked:
    """A data object that passed validation."""

    seen: ObjectSeen
    fmt: str
    stats: Stats


def build_manifest(*, bucket: str, model_id: str, prefix: str, version_id: str, checked: list[Checked],
                   content_hash: str, first_object_at: int, created_at: int, marker: str | None) -> dict[str, Any]:
    labels: dict[str, int] = {}
    for item in checked:
        for label, count in item.stats.labels.items():
            labels[label] = labels.get(label, 0) + count
    return {
        "model_id": model_id,
        "dataset_version_id": version_id,
        "bucket": bucket,
        "prefix": prefix,
        "objects": [{"key": c.seen.key, "etag": c.seen.etag, "size_bytes": c.seen.size, "rows": c.stats.rows,
                     "format": c.fmt, "version_id": c.seen.version_id} for c in checked],
        "row_count": sum(c.stats.rows for c in checked),
        "columns": sorted(set().union(*(c.stats.columns for c in checked))),
        "label_counts": dict(sorted(labels.items())),
        "content_hash": content_hash,
        "first_object_at": first_object_at,
        "created_at": created_at,
        # Lineage beyond the agreed keys: what closed the version, and who wrote this.
        "closed_by": {"marker": marker} if marker else {"quiet_period": True},
        "producer": PRODUCER,
    }


def ready_event(manifest: dict[str, Any], manifest_uri: str) -> dict[str, Any]:
    """DatasetVersionReady from a manifest, so a re-publication after a crash says exactly the same."""
    objects = [{"key": o["key"], "etag": o["etag"], "size_bytes": o["size_bytes"],
                "version_id": o.get("version_id"), "rows": o["rows"]} for o in manifest["objects"]]
    return {
        "envelope": envelope(PRODUCER, correlation_id(manifest["bucket"], manifest["prefix"])),
        "model_id": manifest["model_id"],
        "dataset_version_id": manifest["dataset_version_id"],
        "bucket": manifest["bucket"],
        "prefix": manifest["prefix"],
        "manifest_uri": manifest_uri,
        "objects": objects,
        "row_count": manifest["row_count"],
        "content_hash": manifest["content_hash"],
        "columns": manifest["columns"],
        "label_counts": manifest["label_counts"],
        "first_object_at": manifest["first_object_at"],
    }


@dataclass(frozen=True)
class Rejection:
    """Why a version (or a single refused object) is rejected; `subject` keys its done-record."""

    bucket: str
    key: str
    reason: str
    detail: str
    subject: str
    model_id: str | None = None
    version_id: str | None = None
    line: int | None = None
    chain: str | None = None  # the correlation prefix or key; defaults to `key`


def rejected_event(rejection: Rejection) -> dict[str, Any]:
    return {
        "envelope": envelope(PRODUCER, correlation_id(rejection.bucket, rejection.chain or rejection.key)),
        "model_id": rejection.model_id,
        "dataset_version_id": rejection.version_id,
        "bucket": rejection.bucket,
        "key": rejection.key,
        "reason": rejection.reason,
        "detail": rejection.detail[:2000],
        "line": rejection.line,
    }
