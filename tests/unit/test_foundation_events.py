"""Envelopes, lineage and time conversions shared by every event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from flywheel.events import envelope, ids, jsonable, now_ms, to_millis

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def test_first_event_of_a_chain_correlates_to_itself() -> None:
    env = envelope("ingest")
    uuid.UUID(env["event_id"])
    assert env["correlation_id"] == env["event_id"]
    assert env["causation_id"] is None and env["producer"] == "ingest"


def test_explicit_correlation_id_is_kept() -> None:
    assert envelope("ingest", correlation_id="s3://b/k")["correlation_id"] == "s3://b/k"


def test_caused_event_carries_the_chain_on() -> None:
    first = envelope("ingest", correlation_id="s3://b/k")
    second = envelope("orchestrator", correlation_id="ignored", causation=first)
    assert second["correlation_id"] == "s3://b/k"
    assert second["causation_id"] == first["event_id"]
    assert second["event_id"] != first["event_id"]


def test_occurred_at_defaults_to_now_and_can_be_given() -> None:
    before = now_ms()
    assert before <= envelope("x")["occurred_at"] <= now_ms()
    assert envelope("x", occurred_at_ms=42)["occurred_at"] == 42


def test_ids_for_log_lines() -> None:
    env = envelope("x", correlation_id="c")
    assert ids({"envelope": env}) == {"event_id": env["event_id"], "correlation_id": "c"}
    assert ids({}) == {"event_id": None, "correlation_id": None}


@given(st.integers(min_value=-(10**12), max_value=4 * 10**12))
def test_to_millis_is_exact_for_every_decoded_timestamp(ms: int) -> None:
    # fastavro decodes timestamp-millis as aware UTC datetimes; float maths lost a millisecond on some.
    assert to_millis(EPOCH + timedelta(milliseconds=ms)) == ms


def test_to_millis_known_float_trap() -> None:
    assert to_millis(EPOCH + timedelta(milliseconds=2171920204719)) == 2171920204719


def test_to_millis_honours_offsets_and_reads_naive_as_utc() -> None:
    paris = datetime(2024, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert to_millis(paris) == to_millis(datetime(2024, 1, 1)) == 1704067200000
    assert to_millis(1704067200000.0) == 1704067200000


def test_jsonable_turns_datetimes_and_bytes_into_text() -> None:
    value = {"at": EPOCH, "raw": b"\x00\xff", "items": [{"n": 1}], "none": None}
    assert jsonable(value) == {"at": "1970-01-01T00:00:00+00:00", "raw": "00ff", "items": [{"n": 1}], "none": None}
