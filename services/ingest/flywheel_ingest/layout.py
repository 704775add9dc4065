"""The dataset layout, `<prefix><model_id>/<version>/<file>`, and the key checks made before any download."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True, slots=True)
class ObjectSeen:
    """One S3 object as a notification or a listing reports it (the dedup identity is `identity`).

    `object_version` is S3's own version of the object (versioned buckets only), not a dataset version."""

    bucket: str
    key: str
    etag: str
    size: int
    modified_ms: int
    object_version: str | None = None

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.bucket, self.key, self.object_version or self.etag)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a safe key sits in the layout."""

    model_id: str
    version: str
    prefix: str  # <dataset prefix><model_id>/<version>/
    name: str  # the rest of the key, may hold sub-folders

    @property
    def is_control(self) -> bool:
        """Markers, manifests and hidden files ('_x', '.x') are not data."""
        return self.name.rsplit("/", 1)[-1][:1] in ("_", ".")


@dataclass(frozen=True, slots=True)
class Unsafe:
    """A key that is never downloaded, with the RejectionReason symbol and why."""

    reason: str
    detail: str
    model_id: str | None = None
    # The version the key sits in, if any: the version is rejected as a whole, naming this key.
    within: Place | None = None


def place(key: str, prefixes: tuple[str, ...]) -> Place | Unsafe:
    """Classify a key: its place in the layout, or why it is refused."""
    root = next((p for p in prefixes if key.startswith(p)), None)
    within = _version_of(key, root) if root is not None else None
    model_id = within.model_id if within else None
    parts = key.split("/")
    if any(p in ("..", ".") for p in parts) or "\\" in key or any(ord(c) < 32 for c in key):
        return Unsafe("PATH_TRAVERSAL", f"key {key!r} has '.', '..', a backslash or a control character",
                      model_id, within)
    if root is None:
        return Unsafe("OUTSIDE_PREFIX", f"key {key!r} is outside the dataset prefixes {', '.join(prefixes)}")
    if within is None or "" in within.name.split("/"):
        return Unsafe("OUTSIDE_PREFIX", f"key {key!r} is not under {root}<model_id>/<version>/<file>", model_id)
    return within


def _version_of(key: str, root: str) -> Place | None:
    rest = key[len(root):].split("/")
    if len(rest) < 3 or not _NAME.match(rest[0]) or not _NAME.match(rest[1]):
        return None
    return Place(rest[0], rest[1], f"{root}{rest[0]}/{rest[1]}/", "/".join(rest[2:]))


def data_format(key: str) -> str | None:
    """jsonl, csv or parquet by extension; None for anything else."""
    lower = key.lower()
    return next((fmt for ext, fmt in FORMATS.items() if lower.endswith(ext)), None)
