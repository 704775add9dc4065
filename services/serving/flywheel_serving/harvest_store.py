"""Where harvested feedback goes: the `FeedbackStore` port and its S3 adapter. Every write is create-only
(`If-None-Match: *`), so a key is never overwritten, whoever else writes under the dataset prefix."""

from __future__ import annotations

from typing import Any, Protocol

from botocore.exceptions import ClientError

from flywheel.s3conditional import is_precondition_failure


class KeyTaken(Exception):
    """The key already exists (HTTP 412 on a create-only put)."""


class FeedbackStore(Protocol):
    def put_new(self, key: str, body: bytes) -> None:
        """Create `key` with `body`; KeyTaken when it exists; any other exception: the outcome is unknown."""


class S3FeedbackStore:
    """FeedbackStore on one bucket (the data bucket ingest watches). IAM: s3:PutObject on
    <bucket>/<dataset prefix>*/feedback-* only (deploy/iam/flywheel-serving.json)."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3, self.bucket = s3, bucket

    def put_new(self, key: str, body: bytes) -> None:
        content_type = "application/x-ndjson" if key.endswith(".jsonl") else "application/octet-stream"
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*", ContentType=content_type)
        except ClientError as exc:
            if is_precondition_failure(exc):
                raise KeyTaken(key) from None
            raise
