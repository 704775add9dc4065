"""The Avro contracts: one documented named type per file, released versions kept, BACKWARD_TRANSITIVE evolution."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from io import BytesIO
from pathlib import Path
from typing import Any

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastavro import parse_schema, schemaless_writer

from flywheel.codec import AvroCodec
from flywheel.registry import EmbeddedRegistry, embedded_schema_id
from flywheel.schemas import SchemaSet
from flywheel.settings import REPO_SCHEMA_DIR

SCHEMAS = SchemaSet(REPO_SCHEMA_DIR)
FILES = sorted(REPO_SCHEMA_DIR.glob("*.avsc"))
RELEASED = SCHEMAS.released()


def fullname(schema: dict[str, Any]) -> str:
    return schema["name"] if "." in schema["name"] else f"{schema['namespace']}.{schema['name']}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_one_named_type_per_file_named_after_it(path: Path) -> None:
    schema = json.loads(path.read_text())
    assert isinstance(schema, dict) and schema["type"] in ("record", "enum")
    assert fullname(schema) == path.stem


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_type_and_field_is_documented(path: Path) -> None:
    schema = json.loads(path.read_text())
    assert schema.get("doc"), f"{path.stem} has no doc"
    undocumented = [f["name"] for f in schema.get("fields", []) if not f.get("doc")]
    assert not undocumented, f"{path.stem}: fields without doc: {undocumented}"


@pytest.mark.parametrize("path", [p for p in FILES if json.loads(p.read_text())["type"] == "enum"],
                         ids=lambda p: p.stem)
def test_enums_have_a_default_so_new_symbols_stay_readable(path: Path) -> None:
    schema = json.loads(path.read_text())
    assert schema.get("default") in schema["symbols"]


def test_released_files_are_named_by_version_and_never_lose_their_event() -> None:
    for path in sorted((REPO_SCHEMA_DIR / "released").glob("*.avsc")):
        name, version, ext = path.name.rsplit(".", 2)
        assert ext == "avsc" and version.startswith("v") and version[1:].isdigit(), path.name
        assert fullname(json.loads(path.read_text())) == name
        SCHEMAS.event(name)  # a released event still has a current schema


def test_every_event_has_a_released_version() -> None:
    unreleased = set(SCHEMAS.events) - {v.name for v in RELEASED}
    assert not unreleased, f"a new event ships with a copy of its schema as released/<Name>.v1.avsc: {unreleased}"


def compatibility(reader: dict[str, Any], writer: dict[str, Any]) -> Any:
    parse = avro.schema.parse
    return ReaderWriterCompatibilityChecker().get_compatibility(
        parse(json.dumps(reader)), parse(json.dumps(writer)))


@pytest.mark.parametrize("released", RELEASED, ids=lambda v: v.name.rsplit(".", 1)[-1] + "-released")
def test_current_schema_reads_every_released_version(released: Any) -> None:
    """BACKWARD_TRANSITIVE: the current reader resolves data written with each released writer."""
    result = compatibility(SCHEMAS.event(released.name).expanded, released.expanded)
    assert result.compatibility is SchemaCompatibilityType.compatible, (result.locations, result.messages)


def test_the_compatibility_check_catches_a_field_added_without_default() -> None:
    released = next(v for v in RELEASED if v.name == "flywheel.DeadLetter")
    broken = copy.deepcopy(released.expanded)
    broken["fields"].append({"name": "retries", "type": "int", "doc": "x"})
    assert compatibility(broken, released.expanded).compatibility is SchemaCompatibilityType.incompatible
    broken["fields"][-1]["default"] = 0
    assert compatibility(broken, released.expanded).compatibility is SchemaCompatibilityType.compatible


def minimal_record(version: Any) -> dict[str, Any]:
    envelope = {"event_id": "e", "occurred_at": 1, "correlation_id": "c", "producer": "p"}
    samples = {"string": "s", "long": 1, "int": 1, "double": 1.0, "array": [], "map": {}}
    record: dict[str, Any] = {"envelope": envelope}
    for field in version.expanded["fields"]:
        ftype = field["type"]
        if field["name"] == "envelope" or "default" in field:
            continue
        kind = ftype["type"] if isinstance(ftype, dict) else ftype
        record[field["name"]] = ftype["symbols"][0] if kind == "enum" else samples[kind]
    return record


@pytest.mark.parametrize("released", RELEASED, ids=lambda v: v.name.rsplit(".", 1)[-1] + "-released")
def test_bytes_written_by_a_released_producer_decode_today(released: Any) -> None:
    buf = BytesIO()
    buf.write(b"\x00" + embedded_schema_id(released).to_bytes(4, "big"))
    schemaless_writer(buf, parse_schema(released.expanded), minimal_record(released))
    decoded = AvroCodec(EmbeddedRegistry(SCHEMAS)).decode(buf.getvalue())
    assert decoded.name == released.name and decoded.record["envelope"]["event_id"] == "e"


def test_embedded_id_is_a_hash_of_the_parsing_canonical_form() -> None:
    for version in SCHEMAS.events.values():
        digest = hashlib.sha256(version.canonical.encode()).digest()
        assert embedded_schema_id(version) == int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
    assert len({embedded_schema_id(v) for v in SCHEMAS.events.values()}) == len(SCHEMAS.events)


def test_embedded_ids_are_the_same_in_every_process() -> None:
    code = ("from flywheel.registry import EmbeddedRegistry; from flywheel.schemas import SchemaSet;"
            "from flywheel.settings import REPO_SCHEMA_DIR; import json;"
            "print(json.dumps(EmbeddedRegistry(SchemaSet(REPO_SCHEMA_DIR)).ids()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""}).stdout
    here = EmbeddedRegistry(SCHEMAS).ids()
    assert {int(k): v for k, v in json.loads(out).items()} == here


def test_docs_do_not_change_the_id_but_fields_do(tmp_path: Path) -> None:
    version = SCHEMAS.event("DeadLetter")
    redoc = copy.deepcopy(version.expanded)
    redoc["doc"] = "reworded"
    grown = copy.deepcopy(version.expanded)
    grown["fields"].append({"name": "note", "type": "string", "default": "", "doc": "x"})
    ids = [embedded_schema_id(type(version)(version.name, s)) for s in (version.expanded, redoc, grown)]
    assert ids[0] == ids[1] != ids[2]
