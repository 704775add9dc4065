"""SQS message bodies -> the objects they announce. S3 direct, S3 via SNS and S3 via EventBridge shapes.

`parse_body` is total: whatever the body (not JSON, binary, nested thousands of levels deep, the wrong types
in the right places), it returns the objects announced or raises `BadNotification`, never anything else, so
the poller can dead-letter the message and delete it. Every field it returns has the type `ObjectSeen`
promises (keys are valid UTF-8 strings, sizes non-negative integers).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from flywheel_ingest.ids import clean_etag
from flywheel_ingest.layout import ObjectSeen

# SQS bodies are at most 1 MiB; anything larger did not come from SQS and is refused before decoding.
MAX_BODY_CHARS = 1024 * 1024
# JSON nesting the decoder accepts: S3 notifications nest 5 levels (6 under SNS); json.loads would otherwise
# recurse up to the interpreter's limit and raise RecursionError.
MAX_DEPTH = 32
# SNS wraps the S3 event once; a Message holding another envelope is not an S3 notification.
MAX_ENVELOPES = 1
# A string, or an unterminated one running to the end (possessive: linear, each quote scanned once).
_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"[\[{][\]}]")


class BadNotification(ValueError):
    """The body is not an S3 event notification this service understands (the only error parse_body raises)."""


def parse_body(body: str | bytes) -> list[ObjectSeen]:
    """Objects created, per the message; [] for test events and removals. Raises BadNotification only."""
    return _parse_text(body, envelopes=0)


def _parse_text(body: Any, envelopes: int) -> list[ObjectSeen]:
    doc = _decode(body)
    if not isinstance(doc, dict):
        raise BadNotification(f"body is a JSON {type(doc).__name__}, not an object")
    try:
        return _parse(doc, envelopes)
    except BadNotification:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, OSError, IndexError) as exc:
        raise BadNotification(f"malformed S3 event: {exc!r}"[:500]) from None


def _decode(body: Any) -> Any:
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadNotification(f"body is not UTF-8: {exc}") from None
    if not isinstance(body, str):
        raise BadNotification(f"body is a {type(body).__name__}, not text")
    if len(body) > MAX_BODY_CHARS:
        raise BadNotification(f"body is {len(body)} characters, over the {MAX_BODY_CHARS} an SQS message holds")
    if too_deep(body):
        raise BadNotification(f"body nests JSON more than {MAX_DEPTH} levels deep (or its brackets do not pair up)")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise BadNotification(f"body is not JSON: {exc}"[:500]) from None


def too_deep(text: str) -> bool:
    """Whether a JSON text nests `[`/`{` more than MAX_DEPTH levels (or its brackets do not pair up), brackets
    inside strings ignored. No recursion and no Python loop per character: each pass strips the innermost
    pairs with C-speed string operations, at most MAX_DEPTH + 1 passes."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(MAX_DEPTH):
        inner = _INNERMOST.sub("", brackets)
        if not inner or inner == brackets:  # all paired within the depth, or a pair that never closes
            return bool(inner)
        brackets = inner
    return True


def _parse(doc: dict[str, Any], envelopes: int) -> list[ObjectSeen]:
    if doc.get("Event") == "s3:TestEvent":
        return []
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        if envelopes >= MAX_ENVELOPES:
            raise BadNotification("an SNS notification wrapped in another: not an S3 event notification")
        return _parse_text(doc["Message"], envelopes + 1)  # S3 -> SNS -> SQS fan-out
    if "Records" in doc:
        records = doc["Records"]
        if not isinstance(records, list):
            raise BadNotification("Records is not a list")
        return [_from_record(_dict(r, "record")) for r in records
                if _text(_dict(r, "record")["eventName"], "eventName").startswith("ObjectCreated")]
    if doc.get("source") == "aws.s3" and "detail" in doc:
        return [_from_eventbridge(doc)] if doc.get("detail-type") == "Object Created" else []
    raise BadNotification("not an S3 event notification")


def _from_record(record: dict[str, Any]) -> ObjectSeen:
    s3 = _dict(record["s3"], "s3")
    obj = _dict(s3["object"], "s3.object")
    return ObjectSeen(bucket=_text(_dict(s3["bucket"], "s3.bucket")["name"], "bucket"),
                      key=_key(unquote_plus(_text(obj["key"], "key"))),
                      etag=clean_etag(_text(obj.get("eTag") or obj.get("etag") or "", "eTag")),
                      size=_size(obj.get("size", 0)), modified_ms=iso_ms(_text(record["eventTime"], "eventTime")),
                      object_version=_optional_text(obj.get("versionId"), "versionId"))


def _from_eventbridge(doc: dict[str, Any]) -> ObjectSeen:
    detail = _dict(doc["detail"], "detail")
    obj = _dict(detail["object"], "detail.object")
    # EventBridge keys are not URL-encoded, unlike direct notifications.
    return ObjectSeen(bucket=_text(_dict(detail["bucket"], "detail.bucket")["name"], "bucket"),
                      key=_key(_text(obj["key"], "key")), etag=clean_etag(_text(obj.get("etag", ""), "etag")),
                      size=_size(obj.get("size", 0)), modified_ms=iso_ms(_text(doc["time"], "time")),
                      object_version=_optional_text(obj.get("version-id"), "version-id"))


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadNotification(f"{what} is a {type(value).__name__}, not an object")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadNotification(f"{what} is a {type(value).__name__}, not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadNotification(f"{what} is not valid Unicode (a lone surrogate)") from None
    return value


def _optional_text(value: Any, what: str) -> str | None:
    return _text(value, what) if value else None


def _key(key: str) -> str:
    _text(key, "key")  # URL-decoding can produce what the raw text did not hold
    if not key:
        raise BadNotification("the object key is empty")
    return key


def _size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadNotification(f"size is a {type(value).__name__}, not an integer")
    size = int(value)
    if size < 0:
        raise BadNotification(f"size {size} is negative")
    return size


def iso_ms(text: str) -> int:
    """'2024-05-01T10:00:00.123Z' -> epoch milliseconds."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
