"""Start-up recovery: known models and cooldowns rebuilt by reading topics from the beginning.

Faust changelog recovery on Tansu is unreliable (BRIEF.md), so the monitor rebuilds what must survive a
restart from the source of truth: every ModelVersionRegistered, then every RetrainRequested it emitted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from flywheel.catalogue import topic
from flywheel.codec import AvroCodec
from flywheel.errors import CodecError
from flywheel.kafka import confluent_consumer_config
from flywheel.settings import FlywheelSettings

log = logging.getLogger(__name__)


def read_topic(settings: FlywheelSettings, codec: AvroCodec, name: str, timeout_s: float) -> Iterator[dict[str, Any]]:
    """Every decodable record of `name` from offset 0 to the end at call time (skips bad ones)."""
    conf = {**confluent_consumer_config(settings, "flywheel-monitor-recovery", from_beginning=True),
            "enable.partition.eof": True}
    consumer = Consumer(conf)
    try:
        partitions = [TopicPartition(name, p, 0) for p in range(topic(name).partitions)]
        consumer.assign(partitions)
        yield from _drain(consumer, codec, len(partitions), time.monotonic() + timeout_s)
    finally:
        consumer.close()


def _drain(consumer: Consumer, codec: AvroCodec, partitions: int, deadline: float) -> Iterator[dict[str, Any]]:
    at_end: set[int] = set()
    while len(at_end) < partitions:
        if time.monotonic() > deadline:
            log.warning("recovery stopped at its deadline", extra={"partitions_done": len(at_end)})
            return
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(message.partition())
            continue
        try:
            yield codec.decode(message.value()).record
        except CodecError:
            continue  # live consumption dead-letters it; recovery only needs the good ones


def recover(engine: Any, settings: FlywheelSettings, codec: AvroCodec, producer: str) -> tuple[int, int]:
    """Feed registrations, then this service's own retrain requests, into the engine; returns the counts."""
    models = triggers = 0
    for record in read_topic(settings, codec, "model.version-registered", settings.recovery_timeout_s):
        models += engine.register(record)
    for record in read_topic(settings, codec, "retrain.requested", settings.recovery_timeout_s):
        if record["envelope"]["producer"] == producer:
            engine.restore_trigger(record)
            triggers += 1
    return models, triggers
