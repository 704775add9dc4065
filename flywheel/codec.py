"""Avro codec: event dicts <-> framed bytes that stock Kafka tooling can read (see registry.py for framing)."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from flywheel.catalogue import topic
from flywheel.errors import InvalidEvent, UndecodableRecord
from flywheel.records import problems
from flywheel.registry import SchemaRegistry


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded event: its full schema name and its record."""

    name: str
    record: dict[str, Any]


class AvroCodec:
    """Encodes and decodes events through a schema registry; one instance per process."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry
        self._parsed = {name: v.parsed for name, v in registry.schemas.events.items()}

    def encode(self, name: str, record: dict[str, Any], *, check: bool = False) -> bytes:
        """Frame and serialise a record of event `name`; `check` validates it first with a clear error."""
        header = self.registry.header_for(name)
        schema = self._parsed[self.registry.schemas.event(name).name]
        if check:
            self.validate(name, record)
        buf = BytesIO()
        buf.write(header)
        try:
            schemaless_writer(buf, schema, record)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise InvalidEvent(f"{name}: cannot encode record: {exc!r}") from exc
        return buf.getvalue()

    def validate(self, name: str, record: dict[str, Any]) -> None:
        """Raise InvalidEvent naming each field that does not match the schema."""
        found = problems(record, self.registry.schemas.event(name).expanded, "")
        if found:
            raise InvalidEvent(f"{name}: " + "; ".join(found))

    def decode(self, data: bytes) -> Decoded:
        """Decode framed bytes; raises UnknownSchemaId or UndecodableRecord, never anything else."""
        if not isinstance(data, bytes | bytearray | memoryview):  # e.g. a tombstone's None value
            raise UndecodableRecord(f"expected framed Avro bytes, got {type(data).__name__}")
        info = self.registry.resolve(data)
        buf = BytesIO(data)
        buf.seek(info.header_len)
        try:
            record = schemaless_reader(buf, info.writer, info.reader)
        except Exception as exc:  # fastavro raises many kinds on garbage; all mean "undecodable"
            raise UndecodableRecord(f"{info.name}: payload does not match its schema: {exc!r}") from exc
        if buf.tell() != len(data):
            raise UndecodableRecord(f"{info.name}: {len(data) - buf.tell()} trailing bytes after the record")
        return Decoded(info.name, record)


def decode_for_topic(codec: AvroCodec, topic_name: str, value: bytes) -> Decoded:
    """Decode, and insist the record is the catalogue's schema for its topic (a stray event is an error too)."""
    item = codec.decode(value)
    expected = topic(topic_name).value_schema
    if item.name.rsplit(".", 1)[-1] != expected:
        raise InvalidEvent(f"topic {topic_name} carries {expected}, got a {item.name}")
    return item
