"""The monitor's decoder: the shared codec's framing and checks, with timestamps kept as epoch milliseconds.

fastavro turns every `timestamp-millis` into a datetime, and the monitor turns each straight back into
milliseconds (window arithmetic, event time). Reading with the same schemas minus that logical type skips
both conversions: about a third of the decode cost of a ModelMetricsObserved. Everything else matches
`flywheel.faust_app.decode_for_topic`: unknown schema ids, garbage and trailing bytes raise
UndecodableRecord, a record of another schema than its topic's raises InvalidEvent. Records therefore carry
`int` timestamps (epoch ms), which `flywheel.events.to_millis` and the encoder accept as they are.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from fastavro import parse_schema, schemaless_reader

from flywheel.catalogue import topic
from flywheel.codec import AvroCodec, Decoded
from flywheel.errors import InvalidEvent, UndecodableRecord
from flywheel.registry import WriterInfo
from flywheel_monitor.topics import CONSUMES

MILLIS = "timestamp-millis"


def without_millis(schema: Any) -> Any:
    """The schema with every `timestamp-millis` read as a plain long (fastavro's own keys dropped)."""
    if isinstance(schema, list):
        return [without_millis(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("logicalType") == MILLIS:
        return {k: v for k, v in schema.items() if k != "logicalType" and not k.startswith("__")}
    return {k: without_millis(v) for k, v in schema.items() if not k.startswith("__")}


class MillisDecoder:
    """Decodes framed Avro like AvroCodec.decode, timestamps as epoch milliseconds; one per process."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        # id(WriterInfo) -> (the info, kept alive so its id stays unique; writer; reader)
        self._schemas: dict[int, tuple[WriterInfo, Any, Any]] = {}
        self._expected = {name: topic(name).value_schema for name in CONSUMES}

    def decode(self, data: Any) -> Decoded:
        if not isinstance(data, bytes | bytearray | memoryview):  # e.g. a tombstone's None value
            raise UndecodableRecord(f"expected framed Avro bytes, got {type(data).__name__}")
        info = self.codec.registry.resolve(data)
        _, writer, reader = self._schemas.get(id(info)) or self._plain(info)
        buf = BytesIO(data)
        buf.seek(info.header_len)
        try:
            record = schemaless_reader(buf, writer, reader)
        except Exception as exc:  # fastavro raises many kinds on garbage; all mean "undecodable"
            raise UndecodableRecord(f"{info.name}: payload does not match its schema: {exc!r}") from exc
        if buf.tell() != len(data):
            raise UndecodableRecord(f"{info.name}: {len(data) - buf.tell()} trailing bytes after the record")
        return Decoded(info.name, record)

    def decode_for_topic(self, topic_name: str, value: Any) -> Decoded:
        """Decode, and insist the record is the catalogue's schema for its topic."""
        item = self.decode(value)
        expected = self._expected.get(topic_name) or topic(topic_name).value_schema
        if item.name.rsplit(".", 1)[-1] != expected:
            raise InvalidEvent(f"topic {topic_name} carries {expected}, got a {item.name}")
        return item

    def _plain(self, info: WriterInfo) -> tuple[WriterInfo, Any, Any]:
        reader = parse_schema(without_millis(info.reader)) if info.reader is not None else None
        entry = (info, parse_schema(without_millis(info.writer)), reader)
        self._schemas[id(info)] = entry
        return entry

