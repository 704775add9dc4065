"""The codec's wire contract: exact bytes (header included), evolution, and only CodecErrors on bad input."""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flywheel.codec import AvroCodec
from flywheel.errors import CodecError, InvalidEvent, UndecodableRecord, UnknownSchemaId
from flywheel.registry import EmbeddedRegistry, GlueRegistry, embedded_schema_id
from flywheel.schemas import SchemaSet
from flywheel.settings import REPO_SCHEMA_DIR

SCHEMAS = SchemaSet(REPO_SCHEMA_DIR)
CODEC = AvroCodec(EmbeddedRegistry(SCHEMAS))
HEADER = b"\x00" + embedded_schema_id(SCHEMAS.event("DeadLetter")).to_bytes(4, "big")


def dead_letter(**change: Any) -> dict[str, Any]:
    record = {
        "envelope": {"event_id": "e", "occurred_at": 1000, "correlation_id": "c", "causation_id": None,
                     "producer": "p"},
        "source_topic": "t", "source_partition": 3, "source_offset": 300, "original_key": None,
        "original_value": b"\x01", "error_type": "E", "reason": "r", "consumer": "c",
    }
    return record | change


# Avro binary by hand: strings are zigzag length + UTF-8, longs zigzag varints, unions the branch index first.
ENVELOPE = "02 65" "d0 0f" "02 63" "00" "02 70"
TABLE = [
    ("minimal", dead_letter(), ENVELOPE + "02 74" "06" "d8 04" "00" "02 02 01" "02 45" "02 72" "02 63"),
    ("negative and empty", dead_letter(source_partition=-1, source_offset=-64, original_value=b"", reason=""),
     ENVELOPE + "02 74" "01" "7f" "00" "02 00" "02 45" "00" "02 63"),
    ("unicode and caused", dead_letter(
        envelope={"event_id": "e", "occurred_at": 1000, "correlation_id": "c", "causation_id": "é",
                  "producer": "p"}, original_key=b"k"),
     "02 65" "d0 0f" "02 63" "02 04 c3 a9" "02 70" "02 74" "06" "d8 04" "02 02 6b" "02 02 01" "02 45" "02 72"
     "02 63"),
]


@pytest.mark.parametrize(("record", "payload"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_exact_bytes_with_confluent_header(record: dict[str, Any], payload: str) -> None:
    data = CODEC.encode("DeadLetter", record)
    assert data == HEADER + bytes.fromhex(payload.replace(" ", ""))
    decoded = CODEC.decode(data)
    assert decoded.name == "flywheel.DeadLetter"
    assert decoded.record == record | {"envelope": record["envelope"] | {
        "occurred_at": datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)}}


class FakeGlue:
    """The Glue API edge: one registered schema version."""

    class exceptions:  # noqa: N801 - mirrors boto3's client.exceptions
        class EntityNotFoundException(Exception):
            pass

        class AlreadyExistsException(Exception):
            pass

    version_id = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")

    def get_schema_by_definition(self, SchemaId: dict[str, str], SchemaDefinition: str) -> dict[str, str]:  # noqa: N803
        return {"SchemaVersionId": str(self.version_id)}


def test_glue_framing_is_version_byte_compression_byte_and_uuid() -> None:
    codec = AvroCodec(GlueRegistry(SCHEMAS, FakeGlue(), "flywheel"))
    data = codec.encode("DeadLetter", dead_letter())
    assert data[:18] == b"\x03\x00" + FakeGlue.version_id.bytes
    assert data[18:] == CODEC.encode("DeadLetter", dead_letter())[5:]
    assert codec.decode(data).record["source_offset"] == 300


@pytest.mark.parametrize(("data", "error", "message"), [
    (b"", UndecodableRecord, "first bytes (empty), 0 bytes in all"),
    (b"\x00\x01", UndecodableRecord, "not a Confluent (0x00) framed Avro record"),
    (b"\x03" + bytes(40), UndecodableRecord, "first bytes 0300000000000000"),
    (b'{"json": true}', UndecodableRecord, "not a Confluent (0x00) framed Avro record"),
    (b"\x00\x7f\xff\xff\xff\x00", UnknownSchemaId, "schema id 2147483647 is not in the embedded registry"),
    (HEADER, UndecodableRecord, "flywheel.DeadLetter: payload does not match its schema"),
    (HEADER + b"\x02", UndecodableRecord, "payload does not match its schema"),
    (None, UndecodableRecord, "expected framed Avro bytes, got NoneType"),
    ("text", UndecodableRecord, "expected framed Avro bytes, got str"),
])
def test_bad_input_raises_a_codec_error_that_says_why(data: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        CODEC.decode(data)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(UndecodableRecord, match="2 trailing bytes"):
        CODEC.decode(CODEC.encode("DeadLetter", dead_letter()) + b"\x00\x00")


@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_ever_raise_codec_errors(tail: bytes) -> None:
    for data in (tail, HEADER + tail):
        with contextlib.suppress(CodecError):  # anything else fails the test
            CODEC.decode(data)


def test_memoryview_and_bytearray_decode_like_bytes() -> None:
    data = CODEC.encode("DeadLetter", dead_letter())
    assert CODEC.decode(memoryview(data)) == CODEC.decode(bytearray(data)) == CODEC.decode(data)


def test_encode_refuses_a_wrong_type_as_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match="DeadLetter: cannot encode record"):
        CODEC.encode("DeadLetter", dead_letter(source_partition="three"))


def test_encode_check_names_every_bad_field() -> None:
    with pytest.raises(InvalidEvent, match="field 'source_partition'.*field 'reason'"):
        CODEC.encode("DeadLetter", dead_letter(source_partition="three", reason=None), check=True)


def evolved_schema_dir(tmp_path: Path) -> Path:
    """A copy of schemas/ where DeadLetter gained an optional field (released/ untouched)."""
    target = tmp_path / "schemas"
    shutil.copytree(REPO_SCHEMA_DIR, target)
    path = target / "flywheel.DeadLetter.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "attempts", "type": "int", "default": 1, "doc": "Tries before giving up."})
    path.write_text(json.dumps(schema))
    return target


def test_old_producer_bytes_decode_in_a_new_consumer_with_the_default(tmp_path: Path) -> None:
    new = AvroCodec(EmbeddedRegistry(SchemaSet(evolved_schema_dir(tmp_path))))
    decoded = new.decode(CODEC.encode("DeadLetter", dead_letter()))
    assert decoded.record["attempts"] == 1 and decoded.record["source_offset"] == 300


def test_new_producer_bytes_are_an_unknown_id_to_an_old_consumer(tmp_path: Path) -> None:
    # Why consumers upgrade first (docs/decisions/0002-embedded-schema-ids.md): the old one dead-letters.
    new = AvroCodec(EmbeddedRegistry(SchemaSet(evolved_schema_dir(tmp_path))))
    data = new.encode("DeadLetter", dead_letter(attempts=2))
    assert data[:5] != HEADER
    with pytest.raises(UnknownSchemaId):
        CODEC.decode(data)
    assert new.decode(data).record["attempts"] == 2
