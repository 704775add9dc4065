"""Bounded fuzzing of the SQS body parser: whatever the body, `parse_body` returns the objects announced (each
field of the type `ObjectSeen` promises) or raises BadNotification, nothing else: no RecursionError, no
OverflowError, no TypeError, no crash.

Inputs: arbitrary JSON values, real S3 / SNS / EventBridge notification shapes with any field replaced by any
JSON value, deep nesting of every kind, arbitrary text (lone surrogates included) and arbitrary bytes. Examples
are bounded and there is no deadline, so this stays a few seconds long and never flaky on a slow machine.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel_ingest.layout import ObjectSeen
from flywheel_ingest.notifications import MAX_DEPTH, BadNotification, parse_body

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**400), max_value=10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
           | st.sampled_from(["ObjectCreated:Put", "ObjectRemoved:Delete", "s3:TestEvent", "Notification",
                              "aws.s3", "Object Created", "2024-05-01T10:00:00.123Z", "9999-12-31T23:59:59Z",
                              "0001-01-01T00:00:00+14:00", "", "%ZZ", "%ED%A0%80", "\ud800"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)


def s3_record() -> dict[str, Any]:
    return {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "eventTime": "2024-05-01T10:00:00.123Z",
            "s3": {"bucket": {"name": "flywheel-data"},
                   "object": {"key": "datasets/m/v1/a+b.jsonl", "size": 5, "eTag": "abc", "versionId": "v9"}}}


def eventbridge() -> dict[str, Any]:
    return {"source": "aws.s3", "detail-type": "Object Created", "time": "2024-05-01T10:00:00Z",
            "detail": {"bucket": {"name": "flywheel-data"},
                       "object": {"key": "datasets/m/v1/a.jsonl", "size": 5, "etag": "abc", "version-id": "v1"}}}


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside `doc` (dict keys and list indexes)."""
    found = [prefix]
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for key, value in items:
        found += paths(value, (*prefix, key))
    return found


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[path[0]] = replaced(doc[path[0]], path[1:], value)
    return copy


@st.composite
def mutated_notifications(draw: st.DrawFn) -> str:
    """A real notification shape with one to three values swapped for arbitrary JSON, maybe wrapped in SNS."""
    doc: Any = draw(st.sampled_from([{"Records": [s3_record()]}, {"Records": [s3_record(), s3_record()]},
                                     eventbridge(), {"Event": "s3:TestEvent"}]))
    for _ in range(draw(st.integers(1, 3))):
        doc = replaced(doc, draw(st.sampled_from(paths(doc))), draw(JSON))
    body = json.dumps(doc)
    if draw(st.booleans()):
        body = json.dumps({"Type": "Notification", "Message": body})
    return body


@st.composite
def deep(draw: st.DrawFn) -> str:
    """Nesting from just inside the limit to far past the interpreter's recursion limit."""
    depth = draw(st.integers(1, 20_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"Records":[', "]}")]))
    inner = draw(st.sampled_from(["1", "", '"x"', json.dumps(s3_record())]))
    closed = draw(st.booleans())
    body = opener * depth + inner + (closer * depth if closed else "")
    return json.dumps({"Type": "Notification", "Message": body}) if draw(st.booleans()) else body


def check(body: str | bytes) -> None:
    try:
        found = parse_body(body)
    except BadNotification as exc:
        assert str(exc)
        return
    assert isinstance(found, list)
    for seen in found:
        assert isinstance(seen, ObjectSeen)
        assert isinstance(seen.bucket, str) and isinstance(seen.etag, str)
        assert isinstance(seen.key, str) and seen.key
        seen.key.encode("utf-8")  # valid Unicode: it can be put in an Avro string and an S3 request
        assert type(seen.size) is int and seen.size >= 0 and type(seen.modified_ms) is int
        assert seen.object_version is None or isinstance(seen.object_version, str)


@FUZZ
@given(JSON)
def test_any_json_value(value: Any) -> None:
    check(json.dumps(value))


@FUZZ
@given(mutated_notifications())
def test_real_notification_shapes_with_any_field_replaced(body: str) -> None:
    check(body)


@FUZZ
@given(deep())
def test_deep_nesting_of_every_kind(body: str) -> None:
    check(body)


@FUZZ
@given(st.binary(max_size=2_000) | st.text(max_size=200)
       | st.text(alphabet=st.characters(min_codepoint=0xD700, max_codepoint=0xE000), max_size=50))
def test_arbitrary_bytes_and_text(body: str | bytes) -> None:
    check(body)
    if isinstance(body, bytes):
        check(body.decode("latin-1"))


def test_the_depth_limit_leaves_every_real_shape_well_inside_it() -> None:
    sns = json.dumps({"Type": "Notification", "Message": json.dumps({"Records": [s3_record()]})})
    assert [s.key for s in parse_body(sns)] == ["datasets/m/v1/a b.jsonl"]
    assert len(parse_body(json.dumps(eventbridge()).encode())) == 1
    with pytest.raises(BadNotification, match="not an object"):  # decoded, then refused for its type
        parse_body("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    with pytest.raises(BadNotification, match="more than 32 levels deep"):
        parse_body("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
