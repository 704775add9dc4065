"""The ports on AWS and Kafka: the S3 object store and the SQS notification queue (boto3, blocking: call from
threads), which store errors are transient, and the acknowledged publish on the service's FaustPublisher."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from aiokafka import errors as kafka_errors
from botocore.exceptions import ClientError, IncompleteReadError
from botocore.retries.standard import RetryContext, ThrottledRetryableChecker, TransientRetryableChecker

from flywheel import s3json
from flywheel.errors import CodecError
from flywheel.faust_app import FaustPublisher
from flywheel.s3conditional import error_code, is_precondition_failure
from flywheel_ingest.ids import clean_etag
from flywheel_ingest.layout import ObjectSeen
from flywheel_ingest.ports import Conflict, QueueMessage, Unpublishable

# botocore's own classes of retryable errors (its standard retry mode): throttling codes (SlowDown, ...),
# transient codes (RequestTimeout, ...), HTTP 500/502/503/504, connection errors and read timeouts.
_THROTTLED, _TRANSIENT = ThrottledRetryableChecker(), TransientRetryableChecker()
# An object listed and then gone (or replaced) before its read: the version changed under the close, and the
# next attempt re-lists it. Not a defect of the data.
_CHANGED_UNDER_US = {"NoSuchKey", "PreconditionFailed"}
# What the producer or the broker refuses for good, whatever the retries: the record itself is the problem.
_TOO_LARGE = (kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordListTooLargeError,
              kafka_errors.RecordTooLargeError)
_RECORD_REFUSED = (*_TOO_LARGE, kafka_errors.CorruptRecordException, kafka_errors.InvalidMessageError,
                   kafka_errors.InvalidTimestampError)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps (`raise ... from`), at most 8 deep; an error merely raised while another
    was handled is not its cause."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__


def transient_store_error(exc: BaseException) -> bool:
    """Whether an S3 error is worth retrying as it is (botocore's retryable classes, Python's own connection
    and timeout errors, a streamed body cut short, an object replaced under the close, a conditional write
    another replica won: the next attempt re-reads); anything else (access denied, no such bucket, a bug) is
    permanent."""
    for cause in _causes(exc):
        if isinstance(cause, TimeoutError | ConnectionError | IncompleteReadError | Conflict):
            return True
        if isinstance(cause, ClientError):
            error = cause.response.get("Error", {})
            status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            context = RetryContext(1, parsed_response=cause.response, http_response=SimpleNamespace(status_code=status))
            if error.get("Code") in _CHANGED_UNDER_US:
                return True
        else:
            context = RetryContext(1, caught_exception=cause)
        if _THROTTLED.is_retryable(context) or _TRANSIENT.is_retryable(context):
            return True
    return False


def permanent_publish_error(exc: BaseException) -> bool:
    """Whether a publish failed for good: the record does not fit its schema or is too large for the producer
    or the broker. Everything else (the broker away, a timeout, a leader election, even an authorization
    error an operator can fix) is transient and retried."""
    return any(isinstance(c, (*_RECORD_REFUSED, CodecError, ValueError, TypeError)) for c in _causes(exc))


class AckedPublish:
    """The Publish and EventSize ports on the service's FaustPublisher: `publish` returns once the broker
    acknowledged the record and raises Unpublishable when no retry can help; `size` is the record's encoded
    size (key + framed value) as the producer would send it."""

    def __init__(self, publisher: FaustPublisher) -> None:
        self.publisher = publisher

    async def publish(self, topic: str, record: dict[str, Any]) -> None:
        try:
            await self.publisher.publish(topic, record, acked=True)
        except Exception as exc:
            if permanent_publish_error(exc):
                too_large = any(isinstance(c, _TOO_LARGE) for c in _causes(exc))
                raise Unpublishable(f"{topic}: {type(exc).__name__}: {exc}", too_large=too_large) from exc
            raise

    def size(self, topic: str, record: dict[str, Any]) -> int:
        out = self.publisher.encoder.outgoing(topic, record)
        return len(out.value) + len(out.key or b"")


def _listed(bucket: str, item: dict[str, Any]) -> ObjectSeen:
    return ObjectSeen(bucket, item["Key"], clean_etag(item["ETag"]), int(item["Size"]),
                      int(item["LastModified"].timestamp() * 1000))


class S3Store:
    """The ObjectStore port on an S3 client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def list_prefix(self, bucket: str, prefix: str) -> list[ObjectSeen]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [_listed(bucket, item) for page in pages for item in page.get("Contents", [])]

    def list_page(self, bucket: str, prefix: str, start_after: str, max_keys: int) -> tuple[list[ObjectSeen], bool]:
        """One ListObjectsV2 page after `start_after`; the flag says whether more follow."""
        kwargs = {"StartAfter": start_after} if start_after else {}
        page = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=max_keys, **kwargs)
        return [_listed(bucket, item) for item in page.get("Contents", [])], bool(page.get("IsTruncated"))

    def chunks(self, bucket: str, key: str, chunk_bytes: int) -> Iterator[bytes]:
        body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            yield from body.iter_chunks(chunk_bytes)
        finally:
            body.close()  # a rejected object is not read to its end

    def get_json(self, bucket: str, key: str) -> dict[str, Any] | None:
        return s3json.get_json(self.client, bucket, key)

    def get_json_tagged(self, bucket: str, key: str) -> tuple[dict[str, Any], str] | None:
        try:
            obj = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if s3json.is_missing(exc):
                return None
            raise
        with obj["Body"] as body:
            try:
                doc = json.loads(body.read())
            except ValueError:  # cut short or not JSON: replaced like any unusable document
                doc = {}
        return (doc if isinstance(doc, dict) else {}), obj["ETag"]

    def put_json(self, bucket: str, key: str, doc: dict[str, Any], *, if_none_match: bool = False,
                 if_match: str | None = None) -> str:
        """Manifests stay readable in the console (indented). A lost condition is a Conflict: S3 answers 412
        PreconditionFailed, 409 ConditionalRequestConflict while a concurrent conditional write is in flight,
        and NoSuchKey for `if_match` on a key deleted meanwhile."""
        condition = {"IfNoneMatch": "*"} if if_none_match else {"IfMatch": if_match} if if_match else {}
        try:
            reply = self.client.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc, indent=1).encode(),
                                           ContentType="application/json", **condition)
        except ClientError as exc:
            # A conditional write of ingest's own documents lost to another replica's (docs/decisions/0010).
            if condition and (is_precondition_failure(exc) or (if_match and s3json.is_missing(exc))):
                raise Conflict(f"{key}: {error_code(exc)}") from exc
            raise
        return str(reply.get("ETag", ""))

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if s3json.is_missing(exc):
                return False
            raise
        return True


class SqsQueue:
    """The NotificationQueue port on SQS: S3 event notifications, received with a short long-poll so a new object is seen within milliseconds."""

    def __init__(self, client: Any, url: str, wait_s: int, visibility_s: int, max_messages: int) -> None:
        self.client, self.url = client, url
        self.wait_s, self.visibility_s, self.max_messages = wait_s, visibility_s, max_messages

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def receive(self) -> list[QueueMessage]:
        reply = self.client.receive_message(QueueUrl=self.url, MaxNumberOfMessages=self.max_messages,
                                            WaitTimeSeconds=self.wait_s, VisibilityTimeout=self.visibility_s)
        return [QueueMessage(m["MessageId"], m["ReceiptHandle"], m["Body"]) for m in reply.get("Messages", [])]

    def extend(self, receipts: list[str]) -> int:
        """Keep held messages invisible for another timeout; returns how many SQS refused (stale receipts)."""
        failed, receipts = 0, list(dict.fromkeys(receipts))
        for start in range(0, len(receipts), 10):
            batch = [{"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": self.visibility_s}
                     for i, r in enumerate(receipts[start:start + 10])]
            reply = self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=batch)
            failed += len(reply.get("Failed", []))
        return failed

    def delete(self, receipts: list[str]) -> int:
        """Delete in batches of ten; returns how many SQS refused (stale receipts after a redelivery)."""
        failed, receipts = 0, list(dict.fromkeys(receipts))
        for start in range(0, len(receipts), 10):
            batch = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts[start:start + 10])]
            failed += len(self.client.delete_message_batch(QueueUrl=self.url, Entries=batch).get("Failed", []))
        return failed
