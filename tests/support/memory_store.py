"""An in-memory S3 object store for unit tests: ingest's `ObjectStore` port, no boto3."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Iterator
from typing import Any

from flywheel_ingest.layout import ObjectSeen
from flywheel_ingest.ports import Conflict

BUCKET = "flywheel-data"


class MemoryStore:
    """Objects (bytes) and JSON documents by key; one bucket's worth, whatever bucket is named.

    `split` cuts every read into pieces of that many bytes (exercising streaming validation across chunk
    boundaries); without it a read honours the caller's chunk size. `reads` lists the keys read, in order.
    JSON documents carry ETags and honour conditional writes as S3 does (IfNoneMatch / IfMatch -> Conflict),
    atomically across threads, so that two replicas can share one store.
    """

    def __init__(self, split: int | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.docs: dict[str, dict[str, Any]] = {}
        self.reads: list[str] = []
        self.split = split
        self.etags: dict[str, str] = {}
        self._versions = itertools.count(1)
        self._lock = threading.Lock()

    def put(self, key: str, body: bytes) -> None:
        self.objects[key] = body

    def seen(self, key: str, bucket: str = BUCKET) -> ObjectSeen:
        """The object as a listing reports it (ETag: MD5 of the body)."""
        body = self.objects[key]
        return ObjectSeen(bucket, key, hashlib.md5(body).hexdigest(), len(body), 1_000)

    def list_prefix(self, bucket: str, prefix: str) -> list[ObjectSeen]:
        return [self.seen(k, bucket) for k in sorted(self.objects) if k.startswith(prefix)]

    def list_page(self, bucket: str, prefix: str, start_after: str, max_keys: int) -> tuple[list[ObjectSeen], bool]:
        keys = [k for k in sorted(self.objects) if k.startswith(prefix) and k > start_after]
        return [self.seen(k, bucket) for k in keys[:max_keys]], len(keys) > max_keys

    def chunks(self, bucket: str, key: str, chunk_bytes: int) -> Iterator[bytes]:
        self.reads.append(key)
        body, size = self.objects[key], self.split or chunk_bytes
        yield from (body[i:i + size] for i in range(0, len(body), size))

    def get_json(self, bucket: str, key: str) -> dict[str, Any] | None:
        doc = self.docs.get(key)
        if isinstance(doc, Exception):  # a stored object that is not JSON: get_json raises, as S3's does
            raise doc
        return doc

    def get_json_tagged(self, bucket: str, key: str) -> tuple[dict[str, Any], str] | None:
        with self._lock:
            if key not in self.docs:
                return None
            doc = self.docs[key]  # a stored Exception stands for a body that is not JSON: it reads as {}
            return (doc if isinstance(doc, dict) else {}), self.etags.setdefault(key, f'"e{next(self._versions)}"')

    def put_json(self, bucket: str, key: str, doc: dict[str, Any], *, if_none_match: bool = False,
                 if_match: str | None = None) -> str:
        with self._lock:
            if if_none_match and key in self.docs:
                raise Conflict(f"{key} exists")
            if if_match is not None and (key not in self.docs or self.etags.get(key) != if_match):
                raise Conflict(f"{key} changed")
            self.docs[key] = doc
            self.etags[key] = etag = f'"e{next(self._versions)}"'
            return etag

    def exists(self, bucket: str, key: str) -> bool:
        return key in self.docs
