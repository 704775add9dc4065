"""JSON documents in S3: the one helper for manifests, done-records, job status and registrations.

Blocking boto3 calls: services call these from worker threads, never on the event loop.
"""

from __future__ import annotations

import json
import tarfile
from io import BytesIO
from typing import Any

from botocore.exceptions import ClientError

from flywheel.s3conditional import MISSING


def is_missing(exc: ClientError) -> bool:
    """Whether an S3 error means "no such object" (GetObject and HeadObject spell it differently)."""
    return exc.response.get("Error", {}).get("Code") in MISSING


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def get_json(s3: Any, bucket: str, key: str) -> Any | None:
    """The JSON document at bucket/key, or None when there is no such object (other errors raise)."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise
    with body:
        return json.loads(body.read())


def put_json(s3: Any, bucket: str, key: str, doc: Any, *, if_none_match: bool = False, indent: int | None = None) -> None:
    """Write `doc` as JSON; `if_none_match` makes it a conditional create (PreconditionFailed if it exists)."""
    extra = {"IfNoneMatch": "*"} if if_none_match else {}
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc, indent=indent).encode(),
                  ContentType="application/json", **extra)


def read_json_uri(s3: Any, uri: str) -> Any:
    """A JSON object at an s3:// URI, or metrics.json inside a tar.gz (SageMaker's output.tar.gz)."""
    bucket, key = split_uri(uri)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if not key.endswith(".tar.gz"):
        return json.loads(body)
    with tarfile.open(fileobj=BytesIO(body), mode="r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("metrics.json"))
        return json.loads(tar.extractfile(member).read())
