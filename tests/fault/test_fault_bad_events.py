"""Garbage bytes and wrong-schema events on every topic a service consumes: each dead-lettered once, in the
consuming service's dead-letter topic, with its error type, reason and original bytes; nothing stops."""

from __future__ import annotations

import struct

import pytest

from flywheel.catalogue import RUNNING_SERVICES, TOPICS, consumed_by
from flywheel.events import envelope

# Every topic a running service consumes, with the services that consume it (each dead-letters on its own).
CONSUMERS: dict[str, tuple[str, ...]] = {
    t.name: tuple(s for s in RUNNING_SERVICES if t.name in consumed_by(s)) for t in TOPICS
    if any(t.name in consumed_by(s) for s in RUNNING_SERVICES)
}


def _wrong_schema_record() -> dict:
    """A valid DatasetRejected: well framed, decodable, and wrong on every topic these services read."""
    return {
        "envelope": envelope("fault-test"),
        "model_id": "m",
        "dataset_version_id": None,
        "bucket": "b",
        "key": "k",
        "reason": "UNKNOWN",
        "detail": "stray event",
        "line": None,
    }


def bad_values(codec) -> dict[bytes, str]:
    """Each kind of bad record and the error type its dead letter must name."""
    wrong = codec.encode("DatasetRejected", _wrong_schema_record())
    return {
        b"plain text, no wire header": "UndecodableRecord",
        b"\x00" + struct.pack(">I", 0x7FFFFFF0) + b"payload": "UnknownSchemaId",  # framed, no such schema
        wrong[:-3]: "UndecodableRecord",  # a real header, a truncated payload
        wrong: "InvalidEvent",  # decodes, but is not the topic's schema
    }


@pytest.mark.parametrize("topic", sorted(CONSUMERS))
def test_garbage_and_wrong_schema_are_dead_lettered_with_reason(running, topic: str) -> None:
    services = CONSUMERS[topic]
    producer = running.producer()
    sent: dict[tuple[int, int], bytes] = {}
    values = bad_values(running.codec)
    for value in values:
        producer.produce(
            topic,
            key=b"fault-model",
            value=value,
            on_delivery=lambda err, msg: sent.__setitem__((msg.partition(), msg.offset()), msg.value()),
        )
    producer.flush(10)
    assert len(sent) == len(values)
    letters = running.timeline.wait_for(
        "DeadLetter",
        lambda s: (
            s.get("source_topic") == topic and (s.get("source_partition"), s.get("source_offset")) in sent
        ),
        timeout=60,
        count=len(values) * len(services),
    )
    assert len(letters) == len(values) * len(services), "a bad record was dead-lettered twice, or not by each consumer"
    for service in services:  # each consumer dead-letters every bad record once, in its own dead-letter topic
        own = [s for s in letters if s.get("consumer") == service]
        assert len(own) == len(values), service
        assert {s.topic for s in own} == {f"{service}.dead-letter"}
    for letter in letters:
        original = sent[(letter.get("source_partition"), letter.get("source_offset"))]
        assert letter.get("original_value") == original
        assert letter.get("error_type") == values[original]
        assert letter.get("reason")
    invalid = next(s for s in letters if s.get("error_type") == "InvalidEvent")
    assert "DatasetRejected" in invalid.get("reason")


def test_every_service_still_alive(running) -> None:
    assert running.dead_services() == []
