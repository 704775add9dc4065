"""Pure builders of the records ingest publishes, and the catalogue topics they go to.

DatasetVersionReady is built from the manifest (so a re-publication after a crash says exactly the same),
DatasetRejected from a `Rejection`, and DeadLetter from an SQS message that is not an S3 event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flywheel.catalogue import dead_letter_topic, topic_for_event
from flywheel.deadletter import SourceRecord, dead_letter
from flywheel.events import envelope
from flywheel_ingest.ids import correlation_id
from flywheel_ingest.topics import SERVICE

READY_TOPIC = topic_for_event("DatasetVersionReady")
REJECTED_TOPIC = topic_for_event("DatasetRejected")
DEAD_LETTER_TOPIC = dead_letter_topic(SERVICE).name


def ready_event(manifest: dict[str, Any], manifest_uri: str) -> dict[str, Any]:
    """DatasetVersionReady from a manifest, so a re-publication after a crash says exactly the same."""
    # `version_id` in the event and the manifest is the schema's name for S3's object version.
    objects = [{"key": o["key"], "etag": o["etag"], "size_bytes": o["size_bytes"],
                "version_id": o.get("version_id"), "rows": o["rows"]} for o in manifest["objects"]]
    return {
        "envelope": envelope(SERVICE, correlation_id(manifest["bucket"], manifest["prefix"])),
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
    dataset_version_id: str | None = None
    line: int | None = None
    chain: str | None = None  # the correlation prefix or key; defaults to `key`


def rejected_event(rejection: Rejection) -> dict[str, Any]:
    return {
        "envelope": envelope(SERVICE, correlation_id(rejection.bucket, rejection.chain or rejection.key)),
        "model_id": rejection.model_id,
        "dataset_version_id": rejection.dataset_version_id,
        "bucket": rejection.bucket,
        "key": rejection.key,
        "reason": rejection.reason,
        "detail": rejection.detail[:2000],
        "line": rejection.line,
    }


def notification_dead_letter(queue_name: str, message_id: str, body: str, error: BaseException) -> dict[str, Any]:
    """DeadLetter for an SQS message that is not an S3 event: source `sqs:<queue name>`, the body as value."""
    source = SourceRecord(f"sqs:{queue_name}", 0, -1, message_id.encode(), body.encode())
    return dead_letter(source, error, SERVICE)
