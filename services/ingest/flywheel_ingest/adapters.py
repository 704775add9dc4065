"""The ports on AWS: the S3 object store and the SQS notification queue (boto3, blocking: call from threads)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from flywheel import s3json
from flywheel_ingest.ids import clean_etag
from flywheel_ingest.layout import ObjectSeen
from flywheel_ingest.ports import QueueMessage


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

    def put_json(self, bucket: str, key: str, doc: dict[str, Any]) -> None:
        s3json.put_json(self.client, bucket, key, doc, indent=1)  # manifests stay readable in the console

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
