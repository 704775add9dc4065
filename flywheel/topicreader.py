"""Read topics from their start to their end at call time: the one start-up replay helper.

Services rebuild what must survive a restart from the event log (the orchestrator its runs, the monitor
its known models and cooldowns); the catalogue names those reads (`replayed_by`). The reader assigns every
partition without joining a group (a join costs half the session timeout on Tansu, and a replay has no
offsets to share), takes each partition's high watermark as its end, and stops when every partition
reached it or the deadline passed. Undecodable records are skipped: the live consumer dead-letters them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flywheel.codec import AvroCodec, Decoded
from flywheel.errors import CodecError
from flywheel.events import to_millis
from flywheel.health import loading
from flywheel.kafka import confluent_consumer_config
from flywheel.settings import FlywheelSettings

log = logging.getLogger(__name__)

GROUP_PREFIX = "flywheel-"  # Faust apps are flywheel-<service>; readers flywheel-<reader>-<hex>


def group_id(reader: str) -> str:
    """A fresh group id for one read. Name readers `<service>-<purpose>`: IAM grants flywheel-<service>-*."""
    return f"{GROUP_PREFIX}{reader}-{uuid.uuid4().hex[:12]}"


@dataclass
class Replay:
    """What a replay read: (topic, decoded event) pairs, and whether every partition was read to its end."""

    items: list[tuple[str, Decoded]] = field(default_factory=list)
    complete: bool = True
    unfinished: list[tuple[str, int]] = field(default_factory=list)
    skipped: int = 0  # undecodable records

    def records(self, topic_name: str | None = None) -> list[dict[str, Any]]:
        """The decoded records, of one topic when named, in read order."""
        return [d.record for t, d in self.items if topic_name is None or t == topic_name]

    def by_time(self) -> list[tuple[str, Decoded]]:
        """All items oldest first by their envelope's `occurred_at` (stable across partitions and topics)."""
        return sorted(self.items, key=lambda item: to_millis(item[1].record["envelope"]["occurred_at"]))


@dataclass
class RawRead:
    """Raw messages (headers included) of some topics up to their end at call time, in read order."""

    messages: list[Any] = field(default_factory=list)
    complete: bool = True
    unfinished: list[tuple[str, int]] = field(default_factory=list)


def read_raw_to_end(settings: FlywheelSettings, topics: Iterable[str], *, timeout_s: float = 30.0,
                    reader: str = "replay") -> RawRead:
    """Every record of `topics` up to their high watermarks at call time, undecoded (see the module doc)."""
    from confluent_kafka import Consumer  # services that never replay do not load the client

    names = tuple(topics)
    config = confluent_consumer_config(settings, group_id(reader), from_beginning=True)
    consumer = Consumer(config)  # assign(), never subscribe(): no group join, no committed offsets
    try:
        with loading(reader):  # the process is not ready while it replays (flywheel/health.py)
            ends = _assign(consumer, names)
            read = _drain(consumer, ends, time.monotonic() + timeout_s)
    finally:
        consumer.close()
    if not read.complete:
        log.warning("replay stopped at its deadline before the end of %s", read.unfinished,
                    extra={"reader": reader, "read": len(read.messages), "timeout_s": timeout_s})
    return read


def read_to_end(settings: FlywheelSettings, codec: AvroCodec, topics: Iterable[str], *, timeout_s: float = 30.0,
                reader: str = "replay", decode: Callable[[bytes], Decoded] | None = None) -> Replay:
    """Every decodable record of `topics` up to their end at call time (see the module doc)."""
    read = read_raw_to_end(settings, topics, timeout_s=timeout_s, reader=reader)
    replay = Replay(complete=read.complete, unfinished=read.unfinished)
    decode = decode or codec.decode
    for message in read.messages:
        try:
            replay.items.append((message.topic(), decode(message.value())))
        except CodecError:
            replay.skipped += 1
    return replay


def _assign(consumer: Any, topics: tuple[str, ...]) -> dict[tuple[str, int], int]:
    from confluent_kafka import TopicPartition

    metadata = consumer.list_topics(timeout=10)
    ends, assignment = {}, []
    for name in topics:
        for partition in sorted(metadata.topics[name].partitions if name in metadata.topics else {}):
            low, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=10)
            if high > low:
                ends[(name, partition)] = high
                assignment.append(TopicPartition(name, partition, low))
    consumer.assign(assignment)
    return ends


def _drain(consumer: Any, ends: dict[tuple[str, int], int], deadline: float) -> RawRead:
    read, pending = RawRead(), dict(ends)
    while pending and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None or message.error():
            continue
        place = (message.topic(), message.partition())
        end = pending.get(place)
        if end is None:
            continue  # a partition already read to its end at call time
        if message.offset() + 1 >= end:
            pending.pop(place, None)
        if message.offset() >= end:
            continue  # written after the call: not part of this replay
        read.messages.append(message)
    read.unfinished = sorted(pending)
    read.complete = not pending
    return read


def watch(settings: FlywheelSettings, topics: Iterable[str], *, from_beginning: bool, reader: str = "watch",
          poll_s: float = 0.2, subscribe: bool = False) -> Iterator[Any]:
    """Follow `topics` as records arrive: yields each raw message, and None after an idle poll (so a caller
    can stop on its own clock). Close the generator (or leave the loop) to close the consumer.

    By default every partition is assigned directly, with no group join (see `read_to_end`). With
    `subscribe=True` the consumer joins a group of its own instead: slower to start (half the session
    timeout on Tansu), but it follows partitions that appear later, e.g. after a local broker is wiped.
    """
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    names = list(topics)
    config = confluent_consumer_config(settings, group_id(reader), from_beginning=from_beginning)
    consumer = Consumer(config)
    try:
        if subscribe:
            consumer.subscribe(names)
        else:
            start = OFFSET_BEGINNING if from_beginning else OFFSET_END
            metadata = consumer.list_topics(timeout=15)
            consumer.assign([TopicPartition(name, p, start) for name in names
                             for p in sorted(metadata.topics[name].partitions if name in metadata.topics else {})])
        while True:
            message = consumer.poll(poll_s)
            yield None if message is None or message.error() else message
    finally:
        consumer.close()
