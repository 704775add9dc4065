"""One way to publish: `publish(topic, record)`, with the schema, key and framing taken from the catalogue.

`TopicEncoder` is the shared part: it looks the topic up in the catalogue, encodes the record with the
topic's value schema (the codec frames it for the configured registry) and takes the key from the field
the catalogue names. Two transports use it:

- `flywheel.faust_app.FaustPublisher` inside a service (async; it refuses topics the service does not
  own, so "one writer per topic" holds in code, not only in the catalogue);
- `KafkaPublisher` below for the CLI, tools and tests (confluent-kafka, blocking).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from flywheel.catalogue import TopicSpec, topic
from flywheel.codec import AvroCodec
from flywheel.errors import InvalidEvent
from flywheel.kafka import confluent_producer_config
from flywheel.settings import FlywheelSettings


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record ready for the wire: topic, key bytes (None when the key field is empty) and framed value."""

    topic: str
    key: bytes | None
    value: bytes


class TopicEncoder:
    """Encodes records for catalogue topics; one per process, shared by every publisher in it."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec

    def outgoing(self, topic_name: str, record: dict[str, Any], *, check: bool = False) -> Outgoing:
        """The wire form of `record` on `topic_name`; InvalidEvent when it does not fit the topic's schema."""
        spec = topic(topic_name)
        return Outgoing(spec.name, key_of(spec, record), self.codec.encode(spec.value_schema, record, check=check))


def key_of(spec: TopicSpec, record: dict[str, Any]) -> bytes | None:
    """The partitioning key: the value of the field the catalogue names, as UTF-8 bytes."""
    if spec.key not in record:
        raise InvalidEvent(f"{spec.name} is keyed by {spec.key}, which the record does not have")
    value = record[spec.key]
    return str(value).encode() if value not in (None, "") else None


class KafkaPublisher:
    """publish(topic, record) over confluent-kafka with the shared producer configuration (security too)."""

    def __init__(self, settings: FlywheelSettings, codec: AvroCodec, *, timeout_s: float = 30.0) -> None:
        from confluent_kafka import Producer  # the CLI's other commands do not pay for the import

        self.encoder = TopicEncoder(codec)
        self.timeout_s = timeout_s
        self._producer = Producer(confluent_producer_config(settings))

    def publish(self, topic_name: str, record: dict[str, Any], *, check: bool = False,
                raw_value: bytes | None = None, wait: bool = True) -> Any:
        """Send one record; with `wait` (the default) return the broker's delivery report (a Message).

        `raw_value` is sent instead of an encoded record (fault tests put garbage on purpose); then `record`
        only has to hold the key field.
        """
        if raw_value is not None:
            spec = topic(topic_name)
            out = Outgoing(spec.name, key_of(spec, record), raw_value)
        else:
            out = self.encoder.outgoing(topic_name, record, check=check)
        return self.send(out.topic, out.key, out.value, wait=wait)

    def send(self, topic_name: str, key: bytes | None, value: bytes | None, *,
             headers: list[tuple[str, bytes]] | None = None, partition: int | None = None,
             wait: bool = True) -> Any:
        """Send bytes as they are (the dead-letter replay re-sends original bytes with a header); with `wait`
        return the delivery report, raising TimeoutError or RuntimeError when the broker did not take it."""
        delivered: list[tuple[Any, Any]] = []
        extra: dict[str, Any] = {"partition": partition} if partition is not None else {}
        if headers:
            extra["headers"] = headers
        self._producer.produce(topic_name, key=key, value=value,
                               on_delivery=lambda err, msg: delivered.append((err, msg)), **extra)
        if not wait:
            self._producer.poll(0)
            return None
        self._producer.flush(self.timeout_s)
        if not delivered:
            raise TimeoutError(f"{topic_name}: the broker did not acknowledge within {self.timeout_s:.0f}s")
        err, msg = delivered[0]
        if err:
            raise RuntimeError(f"{topic_name}: delivery failed: {err}")
        return msg

    def flush(self) -> None:
        if self._producer.flush(self.timeout_s):
            raise TimeoutError(f"the broker did not acknowledge every record within {self.timeout_s:.0f}s")


def publish_for_command(settings: FlywheelSettings, codec: AvroCodec, topic_name: str, record: dict[str, Any],
                        command: str) -> int:
    """Publish one record for a command line: where it landed as one JSON line on stdout, exit status 0;
    on a broker that does not take it, the reason on stderr and exit status 1."""
    try:
        msg = KafkaPublisher(settings, codec, timeout_s=15).publish(topic_name, record)
    except (TimeoutError, RuntimeError) as exc:
        print(f"flywheel {command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"topic": topic_name, "partition": msg.partition(), "offset": msg.offset(),
                      "event_id": record["envelope"]["event_id"]}))
    return 0
