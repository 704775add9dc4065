"""Reading the events serving follows and building ModelLoadFailed against the catalogue's schemas."""

from __future__ import annotations

import pytest

from flywheel.bootstrap import build_codec
from flywheel.settings import FlywheelSettings
from flywheel_dev.harness.monitor import registration
from flywheel_dev.harness.serving import promoted, rolled_back
from flywheel_serving.core import Target
from flywheel_serving.events import load_failed, target_of

CODEC = build_codec(FlywheelSettings())


def round_trip(schema: str, record: dict) -> dict:
    return CODEC.decode(CODEC.encode(schema, record)).record


def test_a_promotion_a_rollback_and_a_registration_name_their_version_and_artifact() -> None:
    event = round_trip("ModelVersionPromoted", promoted("m", "v2", "s3://b/m/v2/model.tar.gz", "v1"))
    target = target_of("model.version-promoted", event)
    assert (target.model_id, target.version, target.artifact_uri) == ("m", "v2", "s3://b/m/v2/model.tar.gz")
    assert target.cause["event_id"] == event["envelope"]["event_id"]
    back = target_of("model.version-rolled-back",
                     round_trip("ModelVersionRolledBack", rolled_back("m", "v2", "v1", "s3://b/m/v1")))
    assert (back.version, back.artifact_uri) == ("v1", "s3://b/m/v1")
    assert target_of("model.version-registered", registration("m", "v3")).version == "v3"
    with pytest.raises(ValueError, match="does not follow"):
        target_of("model.metrics-observed", event)


def test_load_failed_fits_its_schema_and_carries_the_cause() -> None:
    cause = {"event_id": "e-1", "correlation_id": "c-1"}
    record = load_failed(Target("m", "v2", "s3://b/k", cause), "v1", "ValueError: x" * 500, "serving")
    decoded = round_trip("ModelLoadFailed", record)
    assert decoded["serving_version"] == "v1" and len(decoded["reason"]) == 2000
    assert decoded["envelope"]["causation_id"] == "e-1" and decoded["envelope"]["correlation_id"] == "c-1"
    assert decoded["envelope"]["producer"] == "serving"
