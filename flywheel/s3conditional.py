"""Conditional JSON documents in S3: read with the ETag, write only if nobody wrote in between.

The one helper for optimistic concurrency on a JSON document (the stage store, flywheel/lifecycle.py; the
orchestrator's per-model state, docs/decisions/0009-orchestrator-scale-out.md). It imports no I/O library:
the S3 client is passed in and its errors are matched by their code, so pure cores may use it. Blocking
calls: use from a worker thread.
"""

from __future__ import annotations

import json
from typing import Any

MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError (or anything with its `response`), else None."""
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


# 412 PreconditionFailed: the ETag moved (or the key exists, for IfNoneMatch); 409 ConditionalRequestConflict:
# S3's answer while a concurrent conditional write to the key is in flight. Both mean "another writer won".
PRECONDITION_FAILED = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})


def is_precondition_failure(exc: BaseException) -> bool:
    return error_code(exc) in PRECONDITION_FAILED


def get_json_etag(s3: Any, bucket: str, key: str) -> tuple[Any | None, str | None]:
    """The JSON document at bucket/key and its ETag, or (None, None) when there is none (other errors raise).

    The ETag is what a conditional write of the next version names (`put_json_if`)."""
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except Exception as exc:  # ClientError, matched by code: fakes in tests raise look-alikes
        if error_code(exc) in MISSING:
            return None, None
        raise
    with obj["Body"] as body:
        return json.loads(body.read()), obj["ETag"]


def put_json_if(s3: Any, bucket: str, key: str, doc: Any, etag: str | None, *, indent: int | None = None) -> str | None:
    """Optimistic write: replace the version whose ETag is `etag` (`IfMatch`), or create the document when
    `etag` is None (`IfNoneMatch: *`). The new ETag, or None when another writer got there first."""
    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        answer = s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc, indent=indent).encode(),
                               ContentType="application/json", **condition)
    except Exception as exc:
        if is_precondition_failure(exc):
            return None
        raise
    return answer.get("ETag") or "*"
