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


def version_too_large(manifest: dict[str, Any], size: int, limit: int) -> Rejection:
    """The version's DatasetVersionReady would be over the event size limit: refused, telling the user how to fix
    it, instead of a publish the producer refuses again and again."""
    objects = len(manifest["objects"])
    detail = (f"the version is too large to announce: its DatasetVersionReady would be {size:,} bytes, over the "
              f"{limit:,}-byte limit (FLYWHEEL_MAX_EVENT_BYTES; Kafka refuses records over ~1 MB). It lists "
              f"{objects:,} objects (about {limit * objects // max(size, 1):,} of them would fit) and "
              f"{len(manifest['label_counts']):,} distinct labels; consolidate the files into fewer, larger "
              "objects and upload them as a new version")
    return _version_rejection(manifest, "VERSION_TOO_LARGE", detail)


def version_unpublishable(manifest: dict[str, Any], error: BaseException, too_large: bool) -> Rejection:
    """The producer or the broker refused the version's DatasetVersionReady for good."""
    detail = f"the broker refused the version's DatasetVersionReady for good: {error}"
    if too_large:
        detail += (f" ({len(manifest['objects']):,} objects, {len(manifest['label_counts']):,} labels; consolidate "
                   "the files into fewer, larger objects and upload them as a new version)")
    return _version_rejection(manifest, "VERSION_TOO_LARGE" if too_large else "UNKNOWN", detail)


def _version_rejection(manifest: dict[str, Any], reason: str, detail: str) -> Rejection:
    version = manifest["dataset_version_id"]
    return Rejection(manifest["bucket"], manifest["prefix"], reason, detail, version, manifest["model_id"], version,
                     None, manifest["prefix"])


def rejection_dead_letter(rejection: Rejection, error: BaseException) -> dict[str, Any]:
    """DeadLetter for a rejection the broker refused for good: source `s3:<bucket>`, the S3 key as the key, why
    the data was rejected and why that could not be published as the reason."""
    record = dead_letter(SourceRecord(f"s3:{rejection.bucket}", 0, -1, _utf8(rejection.key), None), error, SERVICE)
    record["reason"] = f"{rejection.reason}: {rejection.detail[:2000]} (DatasetRejected unpublishable: {error})"
    return record


def notification_dead_letter(queue_name: str, message_id: str, body: str, error: BaseException,
                             max_body_bytes: int = 512 * 1024) -> dict[str, Any]:
    """DeadLetter for an SQS message that is not an S3 event: source `sqs:<queue name>`, the body as value (cut
    to `max_body_bytes`, saying so in the reason, so that the dead letter itself fits a Kafka record)."""
    value = _utf8(body)
    record = dead_letter(SourceRecord(f"sqs:{queue_name}", 0, -1, _utf8(message_id), value[:max_body_bytes]),
                         error, SERVICE)
    if len(value) > max_body_bytes:
        record["reason"] += f" (body cut to its first {max_body_bytes:,} of {len(value):,} bytes)"
    return record


def _utf8(text: str) -> bytes:
    """SQS and S3 text as bytes; lone surrogates (never valid UTF-8) are kept rather than crashing."""
    return text.encode("utf-8", "surrogatepass")
