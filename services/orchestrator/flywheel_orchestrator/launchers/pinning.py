"""Reading exactly the pinned objects of a dataset version: each read is conditional on the manifest's ETag
(S3 If-Match) and names the manifest's S3 version when the bucket is versioned, and what comes back is
compared with the pin as well. An object overwritten, deleted or added after the version was published
never reaches a run: an added one is not listed, a changed one fails the run with ChannelChanged."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from flywheel_orchestrator.launchers.base import ChannelChanged, Pin

_CHANGED = {"PreconditionFailed": "a different ETag", "412": "a different ETag", "NoSuchKey": "deleted",
            "404": "deleted", "NoSuchVersion": "that version is gone", "InvalidArgument": "not readable"}


def _quoted(etag: str) -> str:
    return etag if etag.startswith('"') else f'"{etag}"'


def _unquoted(etag: str) -> str:
    return etag.strip('"')


def _changed(pin: Pin, exc: ClientError) -> ChannelChanged | None:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return ChannelChanged(pin, _CHANGED[code]) if code in _CHANGED else None


def download(s3: Any, bucket: str, pin: Pin, path: Path, chunk_bytes: int = 1024 * 1024) -> None:
    """GetObject If-Match the pinned ETag (and its version), streamed to `path`."""
    kwargs: dict[str, Any] = pin.source(bucket)
    if pin.etag:
        kwargs["IfMatch"] = _quoted(pin.etag)
    try:
        response = s3.get_object(**kwargs)
    except ClientError as exc:
        raise _changed(pin, exc) or exc from None
    found = _unquoted(response.get("ETag", ""))
    if pin.etag and found != _unquoted(pin.etag):
        response["Body"].close()
        raise ChannelChanged(pin, f"ETag {found}")
    with path.open("wb") as fh:
        shutil.copyfileobj(response["Body"], fh, chunk_bytes)


def copy(s3: Any, bucket: str, pin: Pin, to_bucket: str, to_key: str) -> None:
    """CopyObject with CopySourceIfMatch the pinned ETag (and its version): a server-side snapshot. A
    single-part ETag (an MD5) is kept by the copy, so it is compared too; a multipart one ("-N") is not."""
    kwargs: dict[str, Any] = {"Bucket": to_bucket, "Key": to_key, "CopySource": pin.source(bucket)}
    if pin.etag:
        kwargs["CopySourceIfMatch"] = _quoted(pin.etag)
    try:
        response = s3.copy_object(**kwargs)
    except ClientError as exc:
        raise _changed(pin, exc) or exc from None
    found = _unquoted(response.get("CopyObjectResult", {}).get("ETag", ""))
    if pin.etag and "-" not in pin.etag and found != _unquoted(pin.etag):
        s3.delete_object(Bucket=to_bucket, Key=to_key)
        raise ChannelChanged(pin, f"ETag {found}")
