"""The manifest: the durable result of validating a version, written to S3 before its event is published
(the events built from it are in `events`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flywheel_ingest.layout import ObjectSeen
from flywheel_ingest.topics import SERVICE
from flywheel_ingest.validation import Stats


@dataclass(frozen=True)
class Checked:
    """A data object that passed validation."""

    seen: ObjectSeen
    fmt: str
    stats: Stats


def build_manifest(*, bucket: str, model_id: str, prefix: str, dataset_version_id: str, checked: list[Checked],
                   content_hash: str, first_object_at: int, created_at: int, marker: str | None) -> dict[str, Any]:
    labels: dict[str, int] = {}
    for item in checked:
        for label, count in item.stats.labels.items():
            labels[label] = labels.get(label, 0) + count
    return {
        "model_id": model_id,
        "dataset_version_id": dataset_version_id,
        "bucket": bucket,
        "prefix": prefix,
        # Each object's "version_id" is S3's object version (the DatasetVersionReady schema's field name).
        "objects": [{"key": c.seen.key, "etag": c.seen.etag, "size_bytes": c.seen.size, "rows": c.stats.rows,
                     "format": c.fmt, "version_id": c.seen.object_version} for c in checked],
        "row_count": sum(c.stats.rows for c in checked),
        "columns": sorted(set().union(*(c.stats.columns for c in checked))),
        "label_counts": dict(sorted(labels.items())),
        # How the objects were read (the shared dataset reader's rules): the trainer reads them the same way.
        "reader": checked[0].stats.rules.to_dict() if checked else None,
        "content_hash": content_hash,
        "first_object_at": first_object_at,
        "created_at": created_at,
        # Lineage beyond the agreed keys: what closed the version, and who wrote this.
        "closed_by": {"marker": marker} if marker else {"quiet_period": True},
        "producer": SERVICE,
    }


# What a recorded manifest must hold to be published again as it is (ready_event and the trainer read these).
MANIFEST_FIELDS = ("model_id", "dataset_version_id", "bucket", "prefix", "objects", "row_count", "content_hash",
                   "columns", "label_counts", "first_object_at", "reader")
OBJECT_FIELDS = ("key", "etag", "size_bytes", "rows")


def reusable(doc: object, *, bucket: str, model_id: str, dataset_version_id: str) -> bool:
    """Whether a manifest found in S3 is a complete one of this very version. Anything else (written by an
    older release without the reader's rules, cut short, edited by hand) is rebuilt by validating again:
    the manifest is derived data, so rebuilding loses nothing."""
    if not isinstance(doc, dict) or any(name not in doc for name in MANIFEST_FIELDS):
        return False
    objects = doc["objects"]
    if not isinstance(objects, list) or not objects:
        return False
    if any(not isinstance(o, dict) or any(name not in o for name in OBJECT_FIELDS) for o in objects):
        return False
    return (doc["bucket"], doc["model_id"], doc["dataset_version_id"]) == (bucket, model_id, dataset_version_id)
