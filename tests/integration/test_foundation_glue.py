"""The Glue Schema Registry adapter against moto's Glue API."""

from __future__ import annotations

import json
import uuid

import pytest

from flywheel.bootstrap import aws_client, build_codec
from flywheel.codec import AvroCodec
from flywheel.errors import UnknownSchemaId
from flywheel.events import envelope
from flywheel.registry import GlueRegistry
from flywheel.schemas import SchemaSet
from flywheel.settings import FlywheelSettings


@pytest.fixture
def settings(stack_env: dict[str, str]) -> FlywheelSettings:
    return FlywheelSettings(registry="glue", glue_registry_name=f"foundation-{uuid.uuid4().hex[:8]}")


def record() -> dict:
    return {"envelope": envelope("test"), "model_id": "m1", "trigger": "DRIFT", "rule": "psi>0.2"}


def test_codec_registers_once_and_another_process_decodes(settings: FlywheelSettings) -> None:
    producer, consumer = build_codec(settings), build_codec(settings)
    data = producer.encode("RetrainRequested", record())
    assert data[:2] == b"\x03\x00"
    assert build_codec(settings).encode("RetrainRequested", record())[:18] == data[:18], "same version reused"
    assert consumer.decode(data).record["rule"] == "psi>0.2"
    glue = aws_client(settings, "glue")
    schema_id = {"RegistryName": settings.glue_registry_name, "SchemaName": "flywheel.RetrainRequested"}
    assert glue.get_schema(SchemaId=schema_id)["Compatibility"] == "BACKWARD_ALL"  # Glue's BACKWARD_TRANSITIVE


def test_an_evolved_writer_registered_by_a_newer_producer_resolves_into_the_current_reader(
        settings: FlywheelSettings) -> None:
    codec = build_codec(settings)
    data = codec.encode("RetrainRequested", record())
    newer = json.loads(json.dumps(codec.registry.schemas.event("RetrainRequested").expanded))
    newer["fields"].append({"name": "urgency", "type": "int", "default": 0, "doc": "How soon."})
    glue = aws_client(settings, "glue")
    added = glue.register_schema_version(
        SchemaId={"RegistryName": settings.glue_registry_name, "SchemaName": "flywheel.RetrainRequested"},
        SchemaDefinition=json.dumps(newer))
    # same Avro body: the added field's default is only for readers, and we resolve into today's schema
    framed = b"\x03\x00" + uuid.UUID(added["SchemaVersionId"]).bytes + data[18:] + b"\x00"
    decoded = build_codec(settings).decode(framed)
    assert decoded.record["rule"] == "psi>0.2" and "urgency" not in decoded.record


def test_unknown_and_foreign_schema_versions_are_codec_errors(settings: FlywheelSettings) -> None:
    codec = build_codec(settings)
    body = codec.encode("RetrainRequested", record())[18:]
    with pytest.raises(UnknownSchemaId, match="is not in Glue registry"):
        codec.decode(b"\x03\x00" + uuid.uuid4().bytes + body)
    glue = aws_client(settings, "glue")
    foreign = glue.create_schema(
        RegistryId={"RegistryName": settings.glue_registry_name}, SchemaName="billing.Invoice", DataFormat="AVRO",
        Compatibility="NONE", SchemaDefinition=json.dumps(
            {"type": "record", "name": "Invoice", "namespace": "billing", "fields": [{"name": "n", "type": "int"}]}))
    with pytest.raises(UnknownSchemaId, match="billing.Invoice, not a Flywheel event"):
        codec.decode(b"\x03\x00" + uuid.UUID(foreign["SchemaVersionId"]).bytes + b"\x02")


def test_a_flood_of_records_with_one_unknown_version_makes_one_glue_call_per_ttl(
        settings: FlywheelSettings) -> None:
    glue = aws_client(settings, "glue")
    sent: list[str] = []  # every HTTP request to Glue (moto), retries included
    glue.meta.events.register("before-send.glue.GetSchemaVersion", lambda **_: sent.append("GetSchemaVersion"))
    now = [0.0]
    codec = AvroCodec(GlueRegistry(SchemaSet(settings.schema_dir), glue, settings.glue_registry_name,
                                   miss_ttl_s=30.0, clock=lambda: now[0]))
    body = codec.encode("RetrainRequested", record())[18:]
    unknown = b"\x03\x00" + uuid.uuid4().bytes + body
    for _ in range(200):
        with pytest.raises(UnknownSchemaId, match="is not in Glue registry"):
            codec.decode(unknown)
    assert sent == ["GetSchemaVersion"]
    now[0] = 30.0
    with pytest.raises(UnknownSchemaId):
        codec.decode(unknown)
    assert len(sent) == 2, "after the TTL Glue is asked again"
