"""Bounded fuzzing of the codec's decode path: whatever the bytes, `AvroCodec.decode` returns a Decoded or
raises a CodecError, nothing else (no crash, no other exception type), with both registries' framing.

Inputs: arbitrary bytes (bare and behind a valid header), and valid records of every event, generated from
their schemas, then mutated (bytes flipped, inserted, deleted, truncated, header swapped). Examples are
bounded and there is no deadline, so the tier stays a few seconds long and never flaky on a slow machine.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel.codec import AvroCodec, Decoded
from flywheel.errors import CodecError
from flywheel.registry import EmbeddedRegistry, GlueRegistry
from flywheel.schemas import SchemaSet
from flywheel.settings import REPO_SCHEMA_DIR

SCHEMAS = SchemaSet(REPO_SCHEMA_DIR)
EMBEDDED = AvroCodec(EmbeddedRegistry(SCHEMAS))
EVENTS = sorted(SCHEMAS.events)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class FakeGlue:
    """The Glue API edge: knows one version per event (the current schema), nothing else."""

    class exceptions:  # noqa: N801 - mirrors boto3's client.exceptions
        class EntityNotFoundException(Exception):
            pass

        class AlreadyExistsException(Exception):
            pass

    def __init__(self) -> None:
        self.ids = {name: uuid.uuid5(uuid.NAMESPACE_URL, name) for name in EVENTS}

    def get_schema_by_definition(self, SchemaId: dict[str, str], SchemaDefinition: str) -> dict[str, str]:  # noqa: N803
        return {"SchemaVersionId": str(self.ids[SchemaId["SchemaName"]])}

    def get_schema_version(self, SchemaVersionId: str) -> dict[str, str]:  # noqa: N803
        raise self.exceptions.EntityNotFoundException(SchemaVersionId)


GLUE = AvroCodec(GlueRegistry(SCHEMAS, FakeGlue(), "flywheel"))
for _event in EVENTS:
    GLUE.registry.header_for(_event)  # known versions: every event's current schema

PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(), "boolean": st.booleans(), "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1), "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False), "bytes": st.binary(max_size=8), "string": st.text(max_size=8),
}


def values(schema: Any, names: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Valid values of an (expanded) Avro schema."""
    if isinstance(schema, list):
        return st.one_of([values(branch, names) for branch in schema])
    if isinstance(schema, str):
        return PRIMITIVES[schema] if schema in PRIMITIVES else values(names[schema], names)
    kind = schema["type"]
    if kind == "record":
        names[schema["name"]] = names[f"{schema.get('namespace', 'flywheel')}.{schema['name']}"] = schema
        return st.fixed_dictionaries({f["name"]: values(f["type"], names) for f in schema["fields"]})
    if kind == "enum":
        names[schema["name"]] = names[f"{schema.get('namespace', 'flywheel')}.{schema['name']}"] = schema
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(values(schema["items"], names), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=4), values(schema["values"], names), max_size=3)
    if schema.get("logicalType") == "timestamp-millis":
        return st.integers(0, 2**41)
    return values(kind, names)


@st.composite
def valid_records(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(EVENTS))
    return name, draw(values(SCHEMAS.event(name).expanded, {}))


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "extend"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=9))
        elif kind == "delete":
            del out[at:at + draw(st.integers(1, 9))]
        elif kind == "truncate":
            del out[at:]
        else:
            out += draw(st.binary(min_size=1, max_size=9))
    return bytes(out)


def decodes_or_refuses(codec: AvroCodec, data: bytes) -> None:
    try:
        decoded = codec.decode(data)
    except CodecError:
        return
    assert isinstance(decoded, Decoded) and decoded.name in SCHEMAS.events
    assert isinstance(decoded.record, dict)


@FUZZ
@given(st.binary(max_size=256))
def test_arbitrary_bytes_decode_or_raise_a_codec_error(data: bytes) -> None:
    for codec in (EMBEDDED, GLUE):
        decodes_or_refuses(codec, data)


@FUZZ
@given(st.sampled_from(EVENTS), st.binary(max_size=256))
def test_arbitrary_payloads_behind_a_known_header(name: str, payload: bytes) -> None:
    decodes_or_refuses(EMBEDDED, EMBEDDED.registry.header_for(name) + payload)
    decodes_or_refuses(GLUE, GLUE.registry.header_for(name) + payload)


@FUZZ
@given(st.binary(min_size=0, max_size=40))
def test_glue_header_parsing_of_arbitrary_headers(head: bytes) -> None:
    body = EMBEDDED.encode("DeadLetter", {
        "envelope": {"event_id": "e", "occurred_at": 1, "correlation_id": "c", "causation_id": None, "producer": "p"},
        "source_topic": "t", "source_partition": 0, "source_offset": 0, "original_key": None, "original_value": None,
        "error_type": "E", "reason": "r", "consumer": "c"})[5:]
    for data in (head, b"\x03" + head + body, b"\x03\x00" + head[:16].ljust(16, b"\x00") + body):
        assert GLUE.registry.resolves_locally(data) or data[:2] == b"\x03\x00"
        decodes_or_refuses(GLUE, data)


@FUZZ
@given(st.data())
def test_valid_records_round_trip_and_their_mutations_decode_or_raise_a_codec_error(data: st.DataObject) -> None:
    name, record = data.draw(valid_records())
    for codec in (EMBEDDED, GLUE):
        wire = codec.encode(name, record)
        assert codec.decode(wire).name == name
        decodes_or_refuses(codec, data.draw(mutated(wire)))
