"""`flywheel` command line: topics, produce, retrain, tail; stack, up and demo where flywheel-dev is installed.

Also `python -m flywheel`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.metadata import entry_points
from typing import Any

from flywheel import catalogue
from flywheel.bootstrap import build_codec
from flywheel.clistyle import paint
from flywheel.errors import FlywheelError, InvalidEvent
from flywheel.events import envelope, jsonable
from flywheel.publish import KafkaPublisher
from flywheel.records import apply_assignment, with_defaults
from flywheel.settings import FlywheelSettings
from flywheel.topicreader import watch

EXIT_USAGE = 2
MANUAL_RETRAIN_TOPIC = "retrain.manual-requested"
COMMANDS = "flywheel.commands"  # entry point group of commands other distributions add


def cmd_topics(args: argparse.Namespace, settings: FlywheelSettings) -> int:
    """The event map: every topic with its schema, key, partitions, one producer and its readers."""
    if args.markdown:
        print(catalogue.event_map_markdown(), end="")  # the table docs/architecture.md carries
        return 0
    rows = [("TOPIC", "VALUE SCHEMA", "KEY", "PARTITIONS", "PRODUCER", "CONSUMERS", "REPLAYED BY")]
    rows += [(t.name, t.value_schema, t.key, str(t.partitions), t.producer, ",".join(t.consumers) or "-",
              ",".join(t.replayed_by) or "-") for t in catalogue.TOPICS]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        print(paint(line, "bold") if n == 0 else line)
    print(paint("REPLAYED BY: read from the start when that service boots, to rebuild its state.", "dim"))
    return 0


def _topic_for(event: str, explicit: str | None) -> str:
    if explicit:
        catalogue.topic(explicit)
        return explicit
    try:
        return catalogue.topic_for_event(event)
    except KeyError as exc:
        raise InvalidEvent(f"{exc.args[0]} with --topic") from None


def build_record(codec: Any, event: str, assignments: list[str]) -> dict[str, Any]:
    schema = codec.registry.schemas.event(event).expanded
    record = with_defaults(schema)
    record["envelope"] = envelope("cli")
    for assignment in assignments:
        apply_assignment(record, schema, assignment)
    codec.validate(event, record)
    return record


def _publish(settings: FlywheelSettings, codec: Any, topic: str, record: dict[str, Any], command: str) -> int:
    try:
        msg = KafkaPublisher(settings, codec, timeout_s=15).publish(topic, record)
    except (TimeoutError, RuntimeError) as exc:
        print(f"flywheel {command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"topic": topic, "partition": msg.partition(), "offset": msg.offset(),
                      "event_id": record["envelope"]["event_id"]}))
    return 0


def cmd_produce(args: argparse.Namespace, settings: FlywheelSettings) -> int:
    codec = build_codec(settings)
    try:
        codec.registry.schemas.event(args.event)  # an unknown event is named as such, not as "travels on none"
        topic = _topic_for(args.event, args.topic)
        record = build_record(codec, args.event, args.set or [])
    except (FlywheelError, KeyError) as exc:
        print(f"flywheel produce: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return EXIT_USAGE
    return _publish(settings, codec, topic, record, "produce")


def cmd_retrain(args: argparse.Namespace, settings: FlywheelSettings) -> int:
    """A person asks for a retrain: RetrainRequested(trigger=MANUAL) on retrain.manual-requested."""
    codec = build_codec(settings)
    assignments = [f"model_id={args.model_id}", "trigger=MANUAL", f"rule={args.rule}",
                   f"detail={args.reason}"]
    try:
        record = build_record(codec, "RetrainRequested", assignments)
    except FlywheelError as exc:
        print(f"flywheel retrain: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _publish(settings, codec, MANUAL_RETRAIN_TOPIC, record, "retrain")


def decode_line(codec: Any, msg: Any) -> dict[str, Any]:
    head = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()}
    try:
        decoded = codec.decode(msg.value())
    except FlywheelError as exc:
        return {**head, "error": type(exc).__name__, "reason": str(exc)}
    return {**head, "event": decoded.name.rsplit(".", 1)[-1], "value": jsonable(decoded.record)}


def cmd_tail(args: argparse.Namespace, settings: FlywheelSettings) -> int:
    catalogue.topic(args.topic)
    codec = build_codec(settings)
    seen, idle_since = 0, time.monotonic()
    stream = watch(settings, [args.topic], from_beginning=args.from_beginning, reader="tail")
    try:
        for msg in stream:
            if msg is None:
                if args.idle_timeout and time.monotonic() - idle_since > args.idle_timeout:
                    break
                continue
            idle_since = time.monotonic()
            line = decode_line(codec, msg)
            text = json.dumps(line)
            print(paint(text, "red") if "error" in line else text, flush=True)
            seen += 1
            if args.n is not None and seen >= args.n:
                break
    except KeyboardInterrupt:
        pass
    finally:
        stream.close()
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="flywheel", description="Flywheel event-driven MLOps platform")
    sub = root.add_subparsers(dest="command", required=True)
    topics = sub.add_parser("topics", help="the event map: topics, producer, consumers, start-up replays")
    topics.add_argument("--markdown", action="store_true", help="as the table in docs/architecture.md")
    topics.set_defaults(func=cmd_topics)
    produce = sub.add_parser("produce", help="validate an event against its schema and send it")
    produce.add_argument("event", help="event name, e.g. ModelMetricsObserved")
    produce.add_argument("--set", action="append", metavar="FIELD=VALUE", help="a field (dots for nesting)")
    produce.add_argument("--topic", help="topic (needed when the event travels on several)")
    produce.set_defaults(func=cmd_produce)
    retrain = sub.add_parser("retrain", help="ask for a retrain of a model (retrain.manual-requested)")
    retrain.add_argument("model_id")
    retrain.add_argument("--reason", default="asked for by an operator", help="recorded as the event's detail")
    retrain.add_argument("--rule", default="manual", help="recorded as the event's rule name")
    retrain.set_defaults(func=cmd_retrain)
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
