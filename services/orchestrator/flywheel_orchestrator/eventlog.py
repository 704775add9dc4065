"""Read the event log from the start on boot, so run state comes from the log, not from a Faust table."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from flywheel.codec import AvroCodec, Decoded
from flywheel.errors import CodecError
from flywheel.events import to_millis
from flywheel.kafka import confluent_consumer_config
from flywheel.settings import FlywheelSettings

log = logging.getLogger("orchestrator.eventlog")


def read_topics(settings: FlywheelSettings, codec: AvroCodec, topics: tuple[str, ...],
                timeout_s: float = 30.0) -> list[tuple[str, Decoded]]:
    """Every decodable record of `topics` up to their current end, oldest first (by envelope time)."""
    config = confluent_consumer_config(settings, f"orchestrator-replay-{uuid.uuid4()}", from_beginning=True)
    consumer = Consumer(config)  # assign(), never subscribe(): no group join, no committed offsets
    try:
        ends = _assign(consumer, topics)
        found = _drain(consumer, codec, ends, time.monotonic() + timeout_s)
    finally:
        consumer.close()
    return sorted(found, key=lambda item: to_millis(item[1].record["envelope"]["occurred_at"]))


def _assign(consumer: Consumer, topics: tuple[str, ...]) -> dict[tuple[str, int], int]:
    metadata = consumer.list_topics(timeout=10)
    ends, assignment = {}, []
    for name in topics:
        for partition in (metadata.topics[name].partitions if name in metadata.topics else {}):
            low, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=10)
            if high > low:
                ends[(name, partition)] = high
                assignment.append(TopicPartition(name, partition, low))
    consumer.assign(assignment)
    return ends


def _drain(consumer: Consumer, codec: AvroCodec, ends: dict[tuple[str, int], int],
           deadline: float) -> list[tuple[str, Any]]:
    found, pending = [], dict(ends)
    while pending and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None or message.error():
            continue
        place = (message.topic(), message.partition())
        if message.offset() + 1 >= pending.get(place, 0):
            pending.pop(place, None)
        try:
            found.append((message.topic(), codec.decode(message.value())))
        except CodecError:
            continue  # the consuming agent dead-letters bad records; replay only skips them
    if pending:
        log.warning("event log replay stopped before the end of %s", sorted(pending))
    return found
