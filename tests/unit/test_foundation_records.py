"""Typed `field=value` assignments (flywheel produce) and the schema checker behind codec.validate."""

from __future__ import annotations

from typing import Any

import pytest

from flywheel.errors import InvalidEvent
from flywheel.records import apply_assignment, problems, with_defaults
from flywheel.schemas import SchemaSet
from flywheel.settings import REPO_SCHEMA_DIR

SCHEMAS = SchemaSet(REPO_SCHEMA_DIR)


def schema(name: str) -> dict[str, Any]:
    return SCHEMAS.event(name).expanded


def test_with_defaults_fills_defaults_and_nested_records() -> None:
    record = with_defaults(schema("RetrainRequested"))
    assert record["sample_size"] == 0 and record["statistics"] == {} and record["model_version"] is None
    assert record["envelope"] == {"causation_id": None}
    assert "model_id" not in record


@pytest.mark.parametrize(("assignment", "path", "expected"), [
    ("model_id=m1", ("model_id",), "m1"),
    ("observed_value=0.5", ("observed_value",), 0.5),
    ("observed_value=null", ("observed_value",), None),
    ("sample_size=12", ("sample_size",), 12),
    ("trigger=DRIFT", ("trigger",), "DRIFT"),
    ("statistics={\"psi\": 0.3}", ("statistics",), {"psi": 0.3}),
    ("window_start=1704067200000", ("window_start",), 1704067200000),
    ("window_start=2024-01-01T00:00:00Z", ("window_start",), 1704067200000),
    ("window_start=2024-01-01T01:00:00+01:00", ("window_start",), 1704067200000),
    # no offset: UTC, as the schema says, whatever the machine's time zone
    ("window_start=2024-01-01T00:00:00", ("window_start",), 1704067200000),
    ("envelope.producer=cli", ("envelope", "producer"), "cli"),
])
def test_assignment_is_typed_by_the_schema(assignment: str, path: tuple[str, ...], expected: Any) -> None:
    record: dict[str, Any] = {}
    apply_assignment(record, schema("RetrainRequested"), assignment)
    value: Any = record
    for part in path:
        value = value[part]
    assert value == expected


def test_iso_time_with_milliseconds_is_exact() -> None:
    record: dict[str, Any] = {}
    apply_assignment(record, schema("RetrainRequested"), "window_end=2038-10-28T23:10:04.719+00:00")
    assert record["window_end"] == 2171920204719


@pytest.mark.parametrize(("assignment", "message"), [
    ("model_id", "expected FIELD=VALUE"),
    ("=x", "expected FIELD=VALUE"),
    ("nope=1", "has no field 'nope'"),
    ("model_id.x=1", "'model_id' is not a record field"),
    ("sample_size=many", "is not a valid long value"),
    ("window_start=yesterday", "neither epoch millis nor an ISO 8601 time"),
])
def test_bad_assignments_say_what_is_wrong(assignment: str, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        apply_assignment({}, schema("RetrainRequested"), assignment)


def valid_retrain() -> dict[str, Any]:
    record = with_defaults(schema("RetrainRequested"))
    record["envelope"] |= {"event_id": "e", "occurred_at": 1, "correlation_id": "c", "producer": "p"}
    return record | {"model_id": "m", "trigger": "MANUAL", "rule": "manual"}


def test_a_valid_record_has_no_problems() -> None:
    assert problems(valid_retrain(), schema("RetrainRequested"), "") == []


@pytest.mark.parametrize(("change", "expected"), [
    ({"model_id": None}, "field 'model_id': None is not string"),
    ({"trigger": "SOMETIMES"}, "field 'trigger': 'SOMETIMES' is not one of UNKNOWN"),
    ({"sample_size": True}, "field 'sample_size': True is not long"),
    ({"statistics": [1]}, "field 'statistics': expected a map"),
    ({"statistics": {"psi": "high"}}, "field 'statistics.psi': 'high' is not double"),
    ({"surprise": 1}, "field 'surprise': not in flywheel.RetrainRequested"),
    ({"envelope": {"event_id": "e"}}, "field 'envelope.occurred_at': missing"),
])
def test_problems_name_the_field(change: dict[str, Any], expected: str) -> None:
    found = problems(valid_retrain() | change, schema("RetrainRequested"), "")
    assert any(p.startswith(expected) for p in found), found


def test_int_range_and_array_items_are_checked() -> None:
    dead = schema("DeadLetter")
    assert problems(2**31, dead["fields"][2]["type"], "source_partition") == [
        "field 'source_partition': 2147483648 is not int"]
    columns = next(f for f in schema("DatasetVersionReady")["fields"] if f["name"] == "columns")
    assert problems(["a", 3], columns["type"], "columns") == ["field 'columns[1]': 3 is not string"]
