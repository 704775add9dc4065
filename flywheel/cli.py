"""`flywheel` command line: topics, produce, tail, stack, up (also `python -m flywheel`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from importlib.metadata import entry_points
from typing import Any

from flywheel import catalogue
from flywheel.bootstrap import build_codec
from flywheel.clistyle import paint
from flywheel.errors import FlywheelError, InvalidEvent
from flywheel.events import envelope, jsonable
from flywheel.kafka import confluent_consumer_config, confluent_producer_config
from flywheel.records import apply_assignment, with_defaults
from flywheel.settings import FlywheelSettings

EXIT_USAGE = 2
COMMANDS = "flywheel.commands"  # entry point group of commands other distributions add


def cmd_topics(args: argparse.Namespace, settings: FlywheelSettings) -> int:
    rows = [("TOPIC", "VALUE SCHEMA", "KEY", "PARTITIONS", "PRODUCER")]
    rows += [(t.name, t.value_schema, t.key, str(t.partitions), t.producer) for t in catalogue.TOPICS]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        print(paint(line, "bold") if n == 0 else line)
    return 0


def _topic_for(event: str, explicit: str | None) -> str:
    if explicit:
        catalogue.topic(explicit)
        return explicit
    short = event.rsplit(".", 1)[-1]
    matches = [t for t in catalogue.TOPICS if t.value_schema == short]
    if len(matches) != 1:
        names = ", ".join(t.name for t in matches) or "none"
        raise InvalidEvent(f"{short} travels on {names}: choose one with --topic")
    return matches[0].name


def build_record(codec: Any, event: str, assignments: list[str]) -> dict[str, Any]:
    schema = codec.registry.schemas.event(event).expanded
    record = with_defaults(schema)
    record["envelope"] = envelope("cli")
    for assignment in assignments:
        apply_assignment(record, schema, assignment)
    codec.validate(event, record)
    return record


def cmd_produce(args: argparse.Namespace, settings: FlywheelSettings) -> int:
    from confluent_kafka import Producer

    codec = build_codec(settings)
    try:
        codec.registry.schemas.event(args.event)  # an unknown event is named as such, not as "travels on none"
        topic = _topic_for(args.event, args.topic)
        record = build_record(codec, args.event, args.set or [])
    except (FlywheelError, KeyError) as exc:
        print(f"flywheel produce: {exc}", file=sys.stderr)
        return EXIT_USAGE
    spec = catalogue.topic(topic)
    key = str(record.get(spec.key) or "").encode() or None
    value = codec.encode(args.event, record)
    delivered: list[Any] = []
    producer = Producer(confluent_producer_config(settings))
    producer.produce(topic, value=value, key=key, on_delivery=lambda err, msg: delivered.append((err, msg)))
    producer.flush(15)
    err, msg = delivered[0] if delivered else ("not delivered within 15 s", None)
    if err:
        print(f"flywheel produce: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"topic": topic, "partition": msg.partition(), "offset": msg.offset(),
                      "event_id": record["envelope"]["event_id"]}))
    return 0


def decode_line(codec: Any, msg: Any) -> dict[str, Any]:
    head = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()}
    try:
        decoded = codec.decode(msg.value())
    except FlywheelError as exc:
        return {**head, "error": type(exc).__name__, "reason": str(exc)}
    return {**head, "event": decoded.name.rsplit(".", 1)[-1], "value": jsonable(decoded.record)}


def _assign_all_partitions(consumer: Any, topic: str, from_beginning: bool) -> None:
    """Read every partition without joining a group: a join costs half the session timeout on Tansu, which
    `--idle-timeout` would count as idle time, and a read-only tool has no offsets to share anyway."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, start) for p in sorted(partitions)])


def cmd_tail(args: argparse.Namespace, settings: FlywheelSettings) -> int:
    from confluent_kafka import Consumer

    catalogue.topic(args.topic)
    codec = build_codec(settings)
    group = f"flywheel-tail-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(confluent_consumer_config(settings, group, from_beginning=args.from_beginning))
    _assign_all_partitions(consumer, args.topic, args.from_beginning)
    seen, idle_since = 0, time.monotonic()
    try:
        while args.n is None or seen < args.n:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                if args.idle_timeout and time.monotonic() - idle_since > args.idle_timeout:
                    break
                continue
            idle_since = time.monotonic()
            line = decode_line(codec, msg)
            text = json.dumps(line)
            print(paint(text, "red") if "error" in line else text, flush=True)
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="flywheel", description="Flywheel event-driven MLOps platform")
    sub = root.add_subparsers(dest="command", required=True)
    sub.add_parser("topics", help="list the topic catalogue").set_defaults(func=cmd_topics)
    produce = sub.add_parser("produce", help="validate an event against its schema and send it")
    produce.add_argument("event", help="event name, e.g. ModelMetricsObserved")
    produce.add_argument("--set", action="append", metavar="FIELD=VALUE", help="a field (dots for nesting)")
    produce.add_argument("--topic", help="topic (needed when the event travels on several)")
    produce.set_defaults(func=cmd_produce)
    tail = sub.add_parser("tail", help="decode a topic to JSON lines")
    tail.add_argument("topic")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--n", type=int, default=None, help="stop after N records")
    tail.add_argument("--idle-timeout", type=float, default=None, help="stop after this many idle seconds")
    tail.set_defaults(func=cmd_tail)
    for entry in sorted(entry_points(group=COMMANDS), key=lambda e: e.name):
        entry.load()(sub)  # flywheel-dev's stack, up and demo, where it is installed
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = FlywheelSettings()
    except ValueError as exc:
        print(f"flywheel: bad settings: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args, settings)
    except KeyError as exc:
        print(f"flywheel {args.command}: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
