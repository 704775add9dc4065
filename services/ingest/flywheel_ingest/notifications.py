"""SQS message bodies -> the objects they announce. S3 direct, S3 via SNS and S3 via EventBridge shapes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from flywheel_ingest.ids import clean_etag
from flywheel_ingest.layout import ObjectSeen


class BadNotification(ValueError):
    """The body is not an S3 event notification this service understands."""


def parse_body(body: str) -> list[ObjectSeen]:
    """Objects created, per the message; [] for test events and removals. Raises BadNotification."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, TypeError) as exc:
        raise BadNotification(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadNotification("body is not a JSON object")
    try:
        return _parse(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadNotification(f"malformed S3 event: {exc!r}") from None


def _parse(doc: dict[str, Any]) -> list[ObjectSeen]:
    if doc.get("Event") == "s3:TestEvent":
        return []
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        return parse_body(doc["Message"])  # S3 -> SNS -> SQS fan-out
    if "Records" in doc:
        return [_from_record(r) for r in doc["Records"] if str(r["eventName"]).startswith("ObjectCreated")]
    if doc.get("source") == "aws.s3" and "detail" in doc:
        return [_from_eventbridge(doc)] if doc.get("detail-type") == "Object Created" else []
    raise BadNotification("not an S3 event notification")


def _from_record(record: dict[str, Any]) -> ObjectSeen:
    s3 = record["s3"]
    obj = s3["object"]
    return ObjectSeen(bucket=s3["bucket"]["name"], key=unquote_plus(obj["key"]),
                      etag=clean_etag(obj.get("eTag") or obj.get("etag") or ""), size=int(obj.get("size", 0)),
                      modified_ms=iso_ms(record["eventTime"]), object_version=obj.get("versionId") or None)


def _from_eventbridge(doc: dict[str, Any]) -> ObjectSeen:
    detail = doc["detail"]
    obj = detail["object"]
    # EventBridge keys are not URL-encoded, unlike direct notifications.
    return ObjectSeen(bucket=detail["bucket"]["name"], key=obj["key"], etag=clean_etag(obj.get("etag", "")),
                      size=int(obj.get("size", 0)), modified_ms=iso_ms(doc["time"]),
                      object_version=obj.get("version-id") or None)


def iso_ms(text: str) -> int:
    """'2024-05-01T10:00:00.123Z' -> epoch milliseconds."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
