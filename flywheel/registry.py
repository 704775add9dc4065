"""Schema registry port and its adapters: embedded (from schemas/, the default) and AWS Glue Schema Registry.

Wire formats (docs/decisions/0001-wire-format.md):
- embedded: Confluent framing, magic byte 0x00 + 4-byte big-endian schema id + Avro binary;
- glue: AWS Glue Schema Registry framing, 0x03 + compression byte 0x00 + 16-byte schema version UUID + Avro.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from flywheel.errors import UndecodableRecord, UnknownEventType, UnknownSchemaId
from flywheel.schemas import SchemaSet, SchemaVersion

CONFLUENT_MAGIC = 0
GLUE_HEADER_VERSION = 3
GLUE_NO_COMPRESSION = 0
CONFLUENT_HEADER_LEN = 5
GLUE_HEADER_LEN = 18
# Glue's name for Avro's BACKWARD_TRANSITIVE: every version must read data written by all earlier ones.
GLUE_COMPATIBILITY = "BACKWARD_ALL"


@dataclass(frozen=True)
class WriterInfo:
    """What a decoder needs to read a payload: the writer schema and the reader schema to resolve into."""

    name: str
    writer: dict[str, Any]
    reader: dict[str, Any] | None  # None when writer == reader: no resolution needed
    header_len: int


class SchemaRegistry(Protocol):
    """Port: turn an event name into a wire header, and a wire header back into schemas."""

    schemas: SchemaSet

    def header_for(self, name: str) -> bytes: ...

    def resolve(self, data: bytes) -> WriterInfo: ...


def embedded_schema_id(version: SchemaVersion) -> int:
    """Stable 31-bit id from the schema's Parsing Canonical Form: same schema, same id, in every process."""
    digest = hashlib.sha256(version.canonical.encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _writer_info(version: SchemaVersion, current: SchemaVersion, header_len: int) -> WriterInfo:
    reader = None if version.canonical == current.canonical else current.parsed
    return WriterInfo(version.name, version.parsed, reader, header_len)


class EmbeddedRegistry:
    """Registry built from schemas/ with no server: current and released versions, hash-derived ids."""

    def __init__(self, schemas: SchemaSet) -> None:
        self.schemas = schemas
        self._headers: dict[str, bytes] = {}
        self._by_id: dict[int, WriterInfo] = {}
        for version in [*schemas.released(), *schemas.events.values()]:
            schema_id = embedded_schema_id(version)
            current = schemas.event(version.name)
            self._by_id[schema_id] = _writer_info(version, current, CONFLUENT_HEADER_LEN)
        for name, version in schemas.events.items():
            self._headers[name] = struct.pack(">bI", CONFLUENT_MAGIC, embedded_schema_id(version))

    def header_for(self, name: str) -> bytes:
        return self._headers[self.schemas.event(name).name]

    def resolve(self, data: bytes) -> WriterInfo:
        if len(data) < CONFLUENT_HEADER_LEN or data[0] != CONFLUENT_MAGIC:
            raise UndecodableRecord(_bad_header(data, "Confluent (0x00)"))
        schema_id = struct.unpack_from(">I", data, 1)[0]
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise UnknownSchemaId(f"schema id {schema_id} is not in the embedded registry") from None

    def ids(self) -> dict[int, str]:
        return {schema_id: info.name for schema_id, info in self._by_id.items()}


def _bad_header(data: bytes, expected: str) -> str:
    head = data[:8].hex() if data else "(empty)"
    return f"not a {expected} framed Avro record: first bytes {head}, {len(data)} bytes in all"


class GlueRegistry:
    """AWS Glue Schema Registry adapter: registers schemas (BACKWARD_ALL) and frames with version UUIDs."""

    def __init__(self, schemas: SchemaSet, glue_client: Any, registry_name: str) -> None:
        self.schemas = schemas
        self._glue = glue_client
        self._registry = registry_name
        self._headers: dict[str, bytes] = {}
        self._by_uuid: dict[uuid.UUID, WriterInfo] = {}

    def header_for(self, name: str) -> bytes:
        version = self.schemas.event(name)
        header = self._headers.get(version.name)
        if header is None:
            schema_version_id = self._register(version)
            header = bytes([GLUE_HEADER_VERSION, GLUE_NO_COMPRESSION]) + schema_version_id.bytes
            self._headers[version.name] = header
            self._by_uuid[schema_version_id] = _writer_info(version, version, GLUE_HEADER_LEN)
        return header

    def resolve(self, data: bytes) -> WriterInfo:
        if len(data) < GLUE_HEADER_LEN or data[0] != GLUE_HEADER_VERSION:
            raise UndecodableRecord(_bad_header(data, "Glue (0x03)"))
        if data[1] != GLUE_NO_COMPRESSION:
            raise UndecodableRecord(f"Glue compression byte {data[1]} is not supported (only 0, none)")
        schema_version_id = uuid.UUID(bytes=bytes(data[2:GLUE_HEADER_LEN]))
        info = self._by_uuid.get(schema_version_id)
        if info is None:
            info = self._by_uuid[schema_version_id] = self._fetch(schema_version_id)
        return info

    def _register(self, version: SchemaVersion) -> uuid.UUID:
        definition = json.dumps(version.expanded)
        schema_id = {"RegistryName": self._registry, "SchemaName": version.name}
        try:
            found = self._glue.get_schema_by_definition(SchemaId=schema_id, SchemaDefinition=definition)
            return uuid.UUID(found["SchemaVersionId"])
        except self._glue.exceptions.EntityNotFoundException:
            pass
        self._ensure_registry()
        try:
            created = self._glue.create_schema(
                RegistryId={"RegistryName": self._registry},
                SchemaName=version.name,
                DataFormat="AVRO",
                Compatibility=GLUE_COMPATIBILITY,
                SchemaDefinition=definition,
            )
            return uuid.UUID(created["SchemaVersionId"])
        except self._glue.exceptions.AlreadyExistsException:
            added = self._glue.register_schema_version(SchemaId=schema_id, SchemaDefinition=definition)
            return uuid.UUID(added["SchemaVersionId"])

    def _ensure_registry(self) -> None:
        with contextlib.suppress(self._glue.exceptions.AlreadyExistsException):
            self._glue.create_registry(RegistryName=self._registry)

    def _fetch(self, schema_version_id: uuid.UUID) -> WriterInfo:
        try:
            found = self._glue.get_schema_version(SchemaVersionId=str(schema_version_id))
        except self._glue.exceptions.EntityNotFoundException:
            raise UnknownSchemaId(f"schema version {schema_version_id} is not in Glue registry {self._registry}") from None
        writer = SchemaVersion(_name_from_arn(found["SchemaArn"]), json.loads(found["SchemaDefinition"]))
        try:
            current = self.schemas.event(writer.name)
        except UnknownEventType:  # another schema of the registry: this consumer cannot read it
            raise UnknownSchemaId(f"schema version {schema_version_id} is {writer.name}, not a Flywheel event") from None
        return _writer_info(writer, current, GLUE_HEADER_LEN)


def _name_from_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]
