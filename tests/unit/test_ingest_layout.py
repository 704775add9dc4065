"""Key layout and safety, deterministic ids, notification parsing and settings validation."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from flywheel_ingest.ids import correlation_id, cursor_key, dataset_version_id, done_key, manifest_key
from flywheel_ingest.layout import ObjectSeen, Place, Unsafe, data_format, place
from flywheel_ingest.notifications import BadNotification, parse_body
from flywheel_ingest.settings import IngestSettings

PREFIXES = ("datasets/", "archive/")


@pytest.mark.parametrize(("key", "expected"), [
    ("datasets/support-intent/v1/a.jsonl", Place("support-intent", "v1", "datasets/support-intent/v1/", "a.jsonl")),
    ("archive/m/2024-01-01/part/0.csv", Place("m", "2024-01-01", "archive/m/2024-01-01/", "part/0.csv")),
    ("datasets/m/v1/_SUCCESS", Place("m", "v1", "datasets/m/v1/", "_SUCCESS")),
])
def test_place_of_a_safe_key(key: str, expected: Place) -> None:
    assert place(key, PREFIXES) == expected


@pytest.mark.parametrize(("key", "reason"), [
    ("datasets/m/v1/../../etc/passwd", "PATH_TRAVERSAL"),
    ("datasets/../secrets/x.jsonl", "PATH_TRAVERSAL"),
    ("datasets/m/./v1/a.jsonl", "PATH_TRAVERSAL"),
    ("datasets/m/v1/a\\b.jsonl", "PATH_TRAVERSAL"),
    ("datasets/m/v1/a\nb.jsonl", "PATH_TRAVERSAL"),
    ("other/m/v1/a.jsonl", "OUTSIDE_PREFIX"),
    ("/datasets/m/v1/a.jsonl", "OUTSIDE_PREFIX"),
    ("datasets-evil/m/v1/a.jsonl", "OUTSIDE_PREFIX"),
    ("datasets/m/a.jsonl", "OUTSIDE_PREFIX"),
    ("datasets/m/v1/", "OUTSIDE_PREFIX"),
    ("datasets/-m/v1/a.jsonl", "OUTSIDE_PREFIX"),
])
def test_unsafe_keys_are_refused_with_a_reason(key: str, reason: str) -> None:
    found = place(key, PREFIXES)
    assert isinstance(found, Unsafe) and found.reason == reason


def test_control_files_are_not_data() -> None:
    assert place("datasets/m/v/_SUCCESS", PREFIXES).is_control
    assert place("datasets/m/v/sub/.DS_Store", PREFIXES).is_control
    assert not place("datasets/m/v/sub/a.jsonl", PREFIXES).is_control


@pytest.mark.parametrize(("key", "fmt"), [("a.jsonl", "jsonl"), ("a.NDJSON", "jsonl"), ("a.csv", "csv"),
                                          ("a.parquet", "parquet"), ("a.csv.gz", None), ("a.txt", None)])
def test_data_format_by_extension(key: str, fmt: str | None) -> None:
    assert data_format(key) == fmt


objects = st.lists(st.builds(ObjectSeen, st.just("b"), st.text(min_size=1), st.text(), st.integers(0), st.integers()),
                   unique_by=lambda o: o.key, max_size=8)


@given(objects, st.randoms())
def test_version_id_depends_only_on_keys_and_etags(items: list[ObjectSeen], rnd) -> None:  # noqa: ANN001
    shuffled = list(items)
    rnd.shuffle(shuffled)
    renamed = [ObjectSeen(o.bucket, o.key, o.etag, o.size + 1, o.modified_ms + 1) for o in shuffled]
    assert dataset_version_id(items) == dataset_version_id(shuffled) == dataset_version_id(renamed)


def test_version_id_changes_with_content() -> None:
    a = ObjectSeen("b", "datasets/m/v/a.jsonl", "e1", 1, 1)
    b = ObjectSeen("b", "datasets/m/v/a.jsonl", "e2", 1, 1)
    assert dataset_version_id([a]) != dataset_version_id([b])
    assert dataset_version_id([a]).startswith("dv-") and len(dataset_version_id([a])) == 27


def test_state_keys() -> None:
    assert manifest_key("manifests/", "m", "dv-1") == "manifests/m/dv-1.json"
    assert done_key("ingest-state/", None, "obj-1") == "ingest-state/done/_/obj-1.json"
    assert cursor_key("ingest-state/", "datasets/x/") == "ingest-state/scan-cursor/datasets.x.json"
    assert correlation_id("b", "datasets/m/v/") == "s3://b/datasets/m/v/"


def s3_record(key: str, event: str = "ObjectCreated:Put") -> dict:
    return {"eventSource": "aws:s3", "eventName": event, "eventTime": "2024-05-01T10:00:00.123Z",
            "s3": {"bucket": {"name": "flywheel-data"},
                   "object": {"key": key, "size": 5, "eTag": "abc", "versionId": "v9"}}}


def test_s3_notification_keys_are_url_decoded() -> None:
    [seen] = parse_body(json.dumps({"Records": [s3_record("datasets%2Fm%2Fv1%2Fa+b%2Bc.jsonl")]}))
    assert seen == ObjectSeen("flywheel-data", "datasets/m/v1/a b+c.jsonl", "abc", 5, 1714557600123, "v9")


def test_test_events_and_removals_announce_nothing() -> None:
    assert parse_body(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"})) == []
    assert parse_body(json.dumps({"Records": [s3_record("k", "ObjectRemoved:Delete")]})) == []


def test_sns_wrapped_and_eventbridge_shapes() -> None:
    inner = json.dumps({"Records": [s3_record("datasets/m/v/a.jsonl")]})
    [via_sns] = parse_body(json.dumps({"Type": "Notification", "Message": inner}))
    bridge = {"source": "aws.s3", "detail-type": "Object Created", "time": "2024-05-01T10:00:00Z",
              "detail": {"bucket": {"name": "flywheel-data"},
                         "object": {"key": "datasets/m/v/a b.jsonl", "size": 5, "etag": "abc"}}}
    [via_bridge] = parse_body(json.dumps(bridge))
    assert via_sns.key == "datasets/m/v/a.jsonl" and via_bridge.key == "datasets/m/v/a b.jsonl"


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"hello": "world"}', '{"Records": "nope"}',
                                  '{"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]}'])
def test_garbage_is_a_bad_notification(body: str) -> None:
    with pytest.raises(BadNotification):
        parse_body(body)


@pytest.mark.parametrize(("field", "value"), [
    ("FLYWHEEL_DATA_BUCKET", "Not_A_Bucket"),
    ("FLYWHEEL_DATASET_PREFIXES", '["../up/"]'),
    ("FLYWHEEL_DATASET_PREFIXES", '["no-slash"]'),
    ("FLYWHEEL_MANIFEST_PREFIX", "datasets/"),
    ("FLYWHEEL_QUIET_PERIOD_S", "0"),
    ("FLYWHEEL_SQS_WAIT_S", "25"),
    ("FLYWHEEL_MARKER_NAME", "SUCCESS"),
    ("FLYWHEEL_MAX_OBJECT_BYTES", "-1"),
])
def test_a_bad_setting_names_its_field(monkeypatch: pytest.MonkeyPatch, field: str, value: str) -> None:
    monkeypatch.setenv(field, value)
    with pytest.raises(ValidationError) as caught:
        IngestSettings()
    name = field.removeprefix("FLYWHEEL_").lower()
    assert name in str(caught.value)


def test_per_model_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_MODEL_COLUMNS", '{"sentiment": ["review", "label"]}')
    settings = IngestSettings()
    assert settings.columns_for("sentiment") == ("review", "label")
    assert settings.columns_for("other") == ("text", "label")
