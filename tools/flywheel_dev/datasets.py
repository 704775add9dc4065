"""Put a dataset version in S3: the one helper for the demo, the tests and the benchmarks.

`upload_dataset` writes the JSONL parts under `datasets/<model_id>/<version>/` and, by default, the
`_SUCCESS` marker that closes the version for the ingest service. `put_dataset` is for runs without
ingest: it writes the parts and the manifest ingest would have written, with the dataset version id
computed by ingest's own function, so both paths name a version the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flywheel.events import now_ms
from flywheel.s3json import put_json
from flywheel_ingest import ids
from flywheel_ingest.layout import ObjectSeen

MARKER = "_SUCCESS"
MANIFEST_PREFIX = "manifests/"


def jsonl(examples: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in examples).encode()


def split(examples: Sequence[dict[str, Any]], parts: int) -> list[list[dict[str, Any]]]:
    """`examples` dealt round-robin into `parts` lists (every part gets a mix of labels)."""
    return [list(examples[part::parts]) for part in range(parts)]


@dataclass(frozen=True)
class Uploaded:
    bucket: str
    prefix: str
    objects: list[dict[str, Any]]  # key, etag, size_bytes, rows, format: the manifest's object entries


def upload_dataset(s3: Any, bucket: str, model_id: str, version: str,
                   parts: Iterable[bytes | Sequence[dict[str, Any]]], *, close: bool = True) -> Uploaded:
    """Each part (JSONL bytes, or examples) as `part-NNNN.jsonl`; then the `_SUCCESS` marker if `close`."""
    prefix = f"datasets/{model_id}/{version}/"
    objects = []
    for i, part in enumerate(parts):
        body = part if isinstance(part, bytes) else jsonl(part)
        key = f"{prefix}part-{i:04d}.jsonl"
        etag = s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
        objects.append({"key": key, "etag": etag, "size_bytes": len(body), "rows": body.count(b"\n"),
                        "format": "jsonl"})
    if close:
        s3.put_object(Bucket=bucket, Key=f"{prefix}{MARKER}", Body=b"")
    return Uploaded(bucket, prefix, objects)


def put_dataset(s3: Any, bucket: str, model_id: str, version: str, examples: Sequence[dict[str, Any]],
                parts: int = 1) -> tuple[str, dict[str, Any]]:
    """The data and its manifest, as ingest would have written them (no marker); (manifest_uri, manifest)."""
    bodies = [jsonl(part) for part in split(examples, parts)]
    uploaded = upload_dataset(s3, bucket, model_id, version, bodies, close=False)
    at = now_ms()
    version_id = ids.dataset_version_id(
        ObjectSeen(bucket=bucket, key=o["key"], etag=o["etag"], size=o["size_bytes"], modified_ms=at)
        for o in uploaded.objects)
    labels: dict[str, int] = {}
    for e in examples:
        labels[e["label"]] = labels.get(e["label"], 0) + 1
    manifest = {"model_id": model_id, "dataset_version_id": version_id, "bucket": bucket,
                "prefix": uploaded.prefix, "objects": uploaded.objects, "row_count": len(examples),
                "columns": ["text", "label"], "label_counts": labels, "content_hash": hashlib.sha256(b"".join(bodies)).hexdigest(),
                "first_object_at": at, "created_at": at}
    key = ids.manifest_key(MANIFEST_PREFIX, model_id, version_id)
    put_json(s3, bucket, key, manifest)
    return f"s3://{bucket}/{key}", manifest
