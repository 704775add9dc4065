"""`flywheel` command line: topics, produce, retrain, tail, dlq; stack, up and demo where flywheel-dev is installed.

Also `python -m flywheel`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.metadata import entry_points
from typing import Any

from flywheel import catalogue, dlq, modelscli, topicadmin
from flywheel.bootstrap import build_codec
from flywheel.clistyle import paint
from flywheel.errors import FlywheelError, InvalidEvent, RegistryUnavailable
from flywheel.events import envelope, jsonable, now_ms
from flywheel.publish import publish_for_command
from flywheel.records import apply_assignment, with_defaults
from flywheel.settings import FlywheelSettings
from flywheel.topicreader import watch

EXIT_USAGE = 2
EXIT_REFUSED = 3  # topics apply: a topic differs in a way only a person can settle (the topics Job fails at once)
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


_STEP_COLOURS = {topicadmin.CREATE: "green", topicadmin.ALTER: "cyan", topicadmin.OK: "dim", topicadmin.REFUSE: "red"}


def cmd_topics_apply(args: argparse.Namespace, settings: FlywheelSettings) -> int:
    """Create missing catalogue topics and set configs that differ; a diff per topic; a refusal exits 3."""
    environment = args.environment or topicadmin.environment_of(settings)
    try:
        done = topicadmin.apply(topicadmin.KafkaTopicAdmin(settings), environment, dry_run=args.dry_run)
    except topicadmin.TopicAdminError as exc:
        print(f"flywheel topics apply: {exc}", file=sys.stderr)
        return 1
    for step in done.before.steps:
        print(paint(step.line(), _STEP_COLOURS[step.action]))
    if done.before.refused:
        print(f"flywheel topics apply: refused {len(done.before.refused)} topic(s), nothing was changed: "
              "see docs/operations.md, Topics", file=sys.stderr)
        return EXIT_REFUSED
    state = "dry run, nothing changed" if args.dry_run and done.before.has_changes else (
        "applied and verified" if done.after else "nothing to change")
    print(paint(f"{done.before.summary()}: {state}", "bold"))
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


def cmd_produce(args: argparse.Namespace, settings: FlywheelSettings) -> int:
    codec = build_codec(settings)
    try:
        codec.registry.schemas.event(args.event)  # an unknown event is named as such, not as "travels on none"
        topic = _topic_for(args.event, args.topic)
        record = build_record(codec, args.event, args.set or [])
    except (FlywheelError, KeyError) as exc:
        print(f"flywheel produce: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return EXIT_USAGE
    return publish_for_command(settings, codec, topic, record, "produce")


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
    return publish_for_command(settings, codec, MANUAL_RETRAIN_TOPIC, record, "retrain")


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


def _dlq_filter(args: argparse.Namespace) -> dlq.Filter:
    now = now_ms()
    ids = tuple(getattr(args, "ids", None) or ())
    topics = dlq.topics_for(args.topic or (), args.service or ())
    if ids:
        topics = tuple(dict.fromkeys(dlq.parse_id(x)[0] for x in ids))
    return dlq.Filter(
        topics=topics, ids=ids, source_topic=args.source_topic, reason=args.reason, error_type=args.error_type,
        since_ms=dlq.parse_time(args.since, now) if args.since else None,
        until_ms=dlq.parse_time(args.until, now) if args.until else None)


def _dlq_find(args: argparse.Namespace, settings: FlywheelSettings, codec: Any, flt: dlq.Filter) -> dlq.Found:
    found = dlq.find(settings, codec, flt, timeout_s=args.timeout)
    for problem in found.unreadable:
        print(paint(f"not a readable dead letter: {problem}", "dim"), file=sys.stderr)
    if not found.complete:
        print(f"flywheel dlq: the dead-letter topics were not read to their end within {args.timeout:.0f}s; "
              "the list may be short", file=sys.stderr)
    return found


def cmd_dlq(args: argparse.Namespace, settings: FlywheelSettings) -> int:
    """Dead letters: list and show them with filters, replay the ones whose bytes now validate."""
    codec = build_codec(settings)
    try:
        if args.dlq_command == "show":
            dlq.parse_id(args.id)
            args.ids, args.topic, args.service = [args.id], None, None
            args.source_topic = args.reason = args.error_type = args.since = args.until = None
        elif args.dlq_command == "replay" and not (args.ids or args.topic or args.service or args.source_topic
                                                   or args.reason or args.error_type or args.since or args.until
                                                   or args.all):
            raise ValueError("name the dead letters to replay (IDs from `flywheel dlq list`), a filter, or --all")
        flt = _dlq_filter(args)
    except (ValueError, KeyError) as exc:
        print(f"flywheel dlq {args.dlq_command}: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    try:
        found = _dlq_find(args, settings, codec, flt)
        return _DLQ_COMMANDS[args.dlq_command](args, settings, codec, found.letters)
    except RegistryUnavailable as exc:
        print(f"flywheel dlq {args.dlq_command}: {exc}; nothing more was done, try again", file=sys.stderr)
        return 1


def _dlq_list(args: argparse.Namespace, settings: FlywheelSettings, codec: Any, letters: list[dlq.Letter]) -> int:
    rows = [dlq.summary(x) for x in letters]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    table = [("ID", "DEAD-LETTERED AT", "SOURCE", "ERROR", "REASON")]
    table += [(x.id, r["dead_lettered_at"], x.source, r["error_type"], _clip(r["reason"], 80))
              for x, r in zip(letters, rows, strict=True)]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for n, row in enumerate(table):
        line = "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        print(paint(line, "bold") if n == 0 else line)
    print(paint(f"{len(letters)} dead letter(s)", "dim"))
    return 0


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _dlq_show(args: argparse.Namespace, settings: FlywheelSettings, codec: Any, letters: list[dlq.Letter]) -> int:
    if not letters:
        print(f"flywheel dlq show: no dead letter {args.id}", file=sys.stderr)
        return 1
    print(json.dumps(dlq.describe(codec, letters[0]), indent=2))
    return 0


def _dlq_replay(args: argparse.Namespace, settings: FlywheelSettings, codec: Any,
                letters: list[dlq.Letter]) -> int:
    missing = [x for x in args.ids if x not in {letter.id for letter in letters}]
    for name in missing:
        print(json.dumps({"id": name, "action": "refused", "detail": "no such dead letter (or it does not "
                          "match the filters)", "target": None}))
    outcomes = dlq.replay(settings, codec, letters, timeout_s=args.timeout, dry_run=args.dry_run)
    for outcome in outcomes:
        line = json.dumps(outcome.line())
        print(paint(line, "red") if outcome.action in ("refused", "failed") else line, flush=True)
    counts = {action: sum(o.action == action for o in outcomes)
              for action in ("replayed", "would-replay", "skipped", "refused", "failed")}
    counts["refused"] += len(missing)
    print(paint(", ".join(f"{n} {action}" for action, n in counts.items() if n) or "nothing to replay", "dim"),
          file=sys.stderr)
    return 1 if counts["refused"] or counts["failed"] else 0


_DLQ_COMMANDS = {"list": _dlq_list, "show": _dlq_show, "replay": _dlq_replay}


def _dlq_parser(sub: Any) -> None:
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--topic", action="append", metavar="DLQ_TOPIC",
                         help="a dead-letter topic, e.g. monitor.dead-letter (repeatable; default: all)")
    filters.add_argument("--service", action="append", help="the service whose dead letters (repeatable)")
    filters.add_argument("--source-topic", help="only records dead-lettered from this topic")
    filters.add_argument("--reason", help="only reasons containing this text (any case)")
    filters.add_argument("--error-type", help="only this error type, e.g. UndecodableRecord")
    filters.add_argument("--since", help="dead-lettered at or after: ISO-8601 time or an age (90s, 15m, 2h, 7d)")
    filters.add_argument("--until", help="dead-lettered before: ISO-8601 time or an age")
    timeout = argparse.ArgumentParser(add_help=False)
    timeout.add_argument("--timeout", type=float, default=30.0, help="seconds to read each topic to its end")
    dlq_cmd = sub.add_parser("dlq", help="dead letters: list, show, replay")
    dlq_cmd.set_defaults(func=cmd_dlq)
    dsub = dlq_cmd.add_subparsers(dest="dlq_command", required=True)
    listing = dsub.add_parser("list", parents=[filters, timeout], help="dead letters, oldest first")
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    show = dsub.add_parser("show", parents=[timeout], help="one dead letter with its original value decoded")
    show.add_argument("id", help="TOPIC/PARTITION/OFFSET, as `flywheel dlq list` prints it")
    replay = dsub.add_parser("replay", parents=[filters, timeout],
                             help="re-produce dead letters whose bytes now validate (idempotent)")
    replay.add_argument("ids", nargs="*", metavar="ID", help="TOPIC/PARTITION/OFFSET (else: every match)")
    replay.add_argument("--all", action="store_true", help="every dead letter (needed when no ID and no filter is given)")
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed; produce nothing")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="flywheel", description="Flywheel event-driven MLOps platform")
    sub = root.add_subparsers(dest="command", required=True)
    topics = sub.add_parser("topics", help="the event map: topics, producer, consumers, start-up replays")
    topics.add_argument("--markdown", action="store_true", help="as the table in docs/architecture.md")
    topics.set_defaults(func=cmd_topics)
    apply = topics.add_subparsers(dest="topics_command").add_parser(
        "apply", help="create missing topics and set their configs from the catalogue (idempotent, shows a diff)")
    apply.add_argument("--dry-run", action="store_true", help="show the diff; change nothing")
    apply.add_argument("--environment", choices=sorted(catalogue.ENVIRONMENTS),
                       help="replication factor and min.insync.replicas (default: msk under profile eks, else local)")
    apply.set_defaults(func=cmd_topics_apply)
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
    _dlq_parser(sub)
    modelscli.add_parser(sub)  # flywheel models list|describe|promote|rollback
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
