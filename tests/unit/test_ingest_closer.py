"""Closing a version against an in-memory object store (the one fake: the S3 edge, support.memory_store)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from flywheel_ingest.closer import AlreadyDone, CloseConfig, Ready, Refused, VersionCloser
from flywheel_ingest.ids import dataset_version_id, done_key
from flywheel_ingest.validation import Rules
from support.memory_store import MemoryStore

BUCKET, PREFIX = "flywheel-data", "datasets/m/v1/"
GOOD = b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n'


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(split=4)  # tiny reads: validation must stream across chunk boundaries


@pytest.fixture
def closer(store: MemoryStore, tmp_path: Path) -> VersionCloser:
    cfg = CloseConfig(("datasets/",), "manifests/", "ingest-state/", "_SUCCESS", 1_000, 1024,
                      lambda model: Rules(), tmp_path / "spool")
    return VersionCloser(store, cfg)


def close(closer: VersionCloser, known: dict[str, int] | None = None):  # noqa: ANN201
    return closer.close(BUCKET, "m", PREFIX, known or {})


def test_a_valid_version_writes_its_manifest(store: MemoryStore, closer: VersionCloser) -> None:
    store.put(PREFIX + "b.jsonl", GOOD)
    store.put(PREFIX + "a.csv", b"text,label\nc,x\n")
    store.put(PREFIX + "_SUCCESS", b"")
    outcome = close(closer, {PREFIX + "a.csv": 999})
    assert isinstance(outcome, Ready)
    manifest = outcome.manifest
    version_id = dataset_version_id([o for o in store.list_prefix(BUCKET, PREFIX) if "_SUCCESS" not in o.key])
    assert outcome.manifest_uri == f"s3://{BUCKET}/manifests/m/{version_id}.json"
    assert store.docs[f"manifests/m/{version_id}.json"] == manifest
    assert {k: manifest[k] for k in ("model_id", "dataset_version_id", "bucket", "prefix", "row_count")} == {
        "model_id": "m", "dataset_version_id": version_id, "bucket": BUCKET, "prefix": PREFIX, "row_count": 3}
    assert [(o["key"], o["rows"], o["format"]) for o in manifest["objects"]] == [
        (PREFIX + "a.csv", 1, "csv"), (PREFIX + "b.jsonl", 2, "jsonl")]
    assert manifest["label_counts"] == {"x": 2, "y": 1} and manifest["columns"] == ["label", "text"]
    assert manifest["content_hash"] == hashlib.sha256(b"text,label\nc,x\n" + GOOD).hexdigest()
    assert manifest["first_object_at"] == 999  # the notification's time beats the listing's
    assert {"etag", "size_bytes"} <= set(manifest["objects"][0]) and "created_at" in manifest


def test_a_recorded_manifest_is_reused_without_reading_again(store: MemoryStore, closer: VersionCloser) -> None:
    store.put(PREFIX + "a.jsonl", GOOD)
    first = close(closer)
    store.reads.clear()
    again = close(closer)
    assert isinstance(again, Ready) and again.manifest == first.manifest and store.reads == []


@pytest.mark.parametrize("damage", ["older release", "cut short", "other version", "not json"])
def test_an_unusable_recorded_manifest_is_rebuilt_not_published_or_retried_forever(
        store: MemoryStore, closer: VersionCloser, damage: str) -> None:
    store.put(PREFIX + "a.jsonl", GOOD)
    good = close(closer).manifest
    key = next(k for k in store.docs if k.startswith("manifests/"))
    broken = dict(good)
    if damage == "older release":
        del broken["reader"]  # manifests written before the shared reader recorded its rules
    elif damage == "cut short":
        broken["objects"] = [{"key": PREFIX + "a.jsonl"}]
    elif damage == "other version":
        broken["dataset_version_id"] = "dv-somebody-else"
    store.docs[key] = broken
    if damage == "not json":
        store.docs[key] = ValueError("Expecting value: line 1 column 1 (char 0)")
    again = close(closer)
    assert isinstance(again, Ready)
    assert {k: v for k, v in again.manifest.items() if k != "created_at"} == {
        k: v for k, v in good.items() if k != "created_at"}
    assert store.docs[key] == again.manifest


def test_a_done_version_is_not_published_again(store: MemoryStore, closer: VersionCloser) -> None:
    store.put(PREFIX + "a.jsonl", GOOD)
    version_id = close(closer).manifest["dataset_version_id"]
    store.put_json(BUCKET, done_key("ingest-state/", "m", version_id), {})
    assert isinstance(close(closer), AlreadyDone)


@pytest.mark.parametrize(("name", "body", "reason"), [
    ("big.jsonl", GOOD * 100, "TOO_LARGE"),
    ("notes.txt", b"hello", "UNSUPPORTED_FORMAT"),
    ("empty.jsonl", b"", "EMPTY_FILE"),
])
def test_objects_refused_from_the_listing_are_never_downloaded(store: MemoryStore, closer: VersionCloser,
                                                               name: str, body: bytes, reason: str) -> None:
    store.put(PREFIX + "a.jsonl", GOOD)
    store.put(PREFIX + name, body)
    outcome = close(closer)
    assert isinstance(outcome, Refused)
    assert (outcome.rejection.reason, outcome.rejection.key) == (reason, PREFIX + name)
    assert store.reads == []


def test_the_first_bad_object_in_key_order_rejects_the_version(store: MemoryStore, closer: VersionCloser) -> None:
    store.put(PREFIX + "a.jsonl", GOOD)
    store.put(PREFIX + "b.jsonl", GOOD + b'{"text": "c"}\n')
    store.put(PREFIX + "c.jsonl", b"\xff\n")
    outcome = close(closer)
    assert isinstance(outcome, Refused)
    rejection = outcome.rejection
    assert (rejection.reason, rejection.key, rejection.line) == ("MISSING_COLUMNS", PREFIX + "b.jsonl", 3)
    assert rejection.dataset_version_id == rejection.subject and rejection.model_id == "m"
    assert not any(k.startswith("manifests/") for k in store.docs)


def test_a_version_with_only_a_marker_has_no_data(store: MemoryStore, closer: VersionCloser) -> None:
    store.put(PREFIX + "_SUCCESS", b"")
    outcome = close(closer)
    assert isinstance(outcome, Refused) and outcome.rejection.reason == "NO_DATA"
    other = closer.close(BUCKET, "m", "datasets/m/v2/", {})
    assert other.rejection.subject != outcome.rejection.subject  # each empty version is its own subject


def test_parquet_objects_are_spooled_and_validated(store: MemoryStore, closer: VersionCloser,
                                                   tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", "b"], "label": ["x", "x"]}), tmp_path / "t.parquet")
    store.put(PREFIX + "t.parquet", (tmp_path / "t.parquet").read_bytes())
    closer.cfg = CloseConfig(**{**closer.cfg.__dict__, "max_object_bytes": 10**6})
    outcome = close(closer)
    assert isinstance(outcome, Ready) and outcome.manifest["label_counts"] == {"x": 2}
    assert list((tmp_path / "spool").iterdir()) == []  # the spool file is removed
