"""Dead letters for operators: list, show and replay them (`flywheel dlq`).

Each service writes what it cannot process to `<service>.dead-letter` as a `DeadLetter` that keeps the
original key and value bytes. A dead letter is named by its own place, `TOPIC/PARTITION/OFFSET` (e.g.
`monitor.dead-letter/0/12`).

Replay re-produces the original key and value to the source topic (same partition) only when the bytes now
validate: they decode with the configured registry and are the event the catalogue gives that topic.
Anything else is refused with the reason. Each replayed record carries the header `flywheel-replay-of`
naming the dead letter; before producing, the source topic is read to its end and dead letters already
named there are skipped, so replaying twice has the effect of replaying once. The catalogue names a
service as the producer of most source topics: a replay is the operator re-sending that service's record
on its behalf, byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from flywheel import catalogue
from flywheel.codec import AvroCodec
from flywheel.errors import CodecError
from flywheel.events import jsonable, to_millis
from flywheel.publish import KafkaPublisher
from flywheel.settings import FlywheelSettings
from flywheel.topicreader import RawRead, read_raw_to_end

DEAD_LETTER_SCHEMA = "DeadLetter"
REPLAY_HEADER = "flywheel-replay-of"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def dead_letter_topics() -> tuple[str, ...]:
    """Every dead-letter topic of the catalogue."""
    return tuple(t.name for t in catalogue.TOPICS if t.value_schema == DEAD_LETTER_SCHEMA)


def topics_for(topics: Iterable[str] = (), services: Iterable[str] = ()) -> tuple[str, ...]:
    """The dead-letter topics named directly or through their service; all of them when none is named."""
    names = [*topics, *(f"{service}.dead-letter" for service in services)]
    for name in names:
        if name not in dead_letter_topics():
            raise KeyError(f"{name} is not a dead-letter topic; known: {', '.join(dead_letter_topics())}")
    return tuple(dict.fromkeys(names)) or dead_letter_topics()


def parse_time(text: str, now_ms: int) -> int:
    """Epoch milliseconds from an ISO-8601 time (UTC when it has no offset) or an age such as 90s, 15m, 2h, 7d."""
    if match := _DURATION.match(text.strip()):
        return now_ms - int(float(match[1]) * _UNIT_S[match[2]] * 1000)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO-8601 time (2024-05-01T12:00:00Z) nor an age (90s, 15m, 2h, "
                         "7d)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def parse_id(text: str) -> tuple[str, int, int]:
    """`TOPIC/PARTITION/OFFSET` -> its parts; ValueError saying what is expected."""
    topic_name, _, rest = text.partition("/")
    partition, _, offset = rest.partition("/")
    if not (partition.isdigit() and offset.isdigit()) or topic_name not in dead_letter_topics():
        raise ValueError(f"{text!r} is not a dead letter id: expected TOPIC/PARTITION/OFFSET with TOPIC one of "
                         f"{', '.join(dead_letter_topics())} (see `flywheel dlq list`)")
    return topic_name, int(partition), int(offset)


@dataclass(frozen=True)
class RawMessage:
    """A record as it sits in a topic: place, key, value and headers."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Letter:
    """A decoded dead letter and its own place in its dead-letter topic."""

    topic: str
    partition: int
    offset: int
    record: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def at_ms(self) -> int:
        return to_millis(self.record["envelope"]["occurred_at"])

    @property
    def source(self) -> str:
        r = self.record
        return f"{r['source_topic']}/{r['source_partition']}@{r['source_offset']}"


@dataclass(frozen=True)
class Filter:
    """Which dead letters a command acts on; every given criterion must hold."""

    topics: tuple[str, ...] = field(default_factory=dead_letter_topics)
    ids: tuple[str, ...] = ()
    source_topic: str | None = None
    reason: str | None = None  # substring, any case
    error_type: str | None = None
    since_ms: int | None = None  # dead-lettered at or after
    until_ms: int | None = None  # dead-lettered before

    def matches(self, letter: Letter) -> bool:
        r = letter.record
        return ((not self.ids or letter.id in self.ids)
                and (self.source_topic is None or r["source_topic"] == self.source_topic)
                and (self.reason is None or self.reason.lower() in r["reason"].lower())
                and (self.error_type is None or r["error_type"] == self.error_type)
                and (self.since_ms is None or letter.at_ms >= self.since_ms)
                and (self.until_ms is None or letter.at_ms < self.until_ms))


def read_raw(settings: FlywheelSettings, topics: Iterable[str], *, timeout_s: float = 30.0,
             reader: str = "dlq") -> RawRead:
    """Every record of `topics` up to their high watermarks at call time, headers included
    (`flywheel.topicreader.read_raw_to_end`); `complete=False` when the deadline came first."""
    read = read_raw_to_end(settings, topics, timeout_s=timeout_s, reader=reader)
    return replace(read, messages=[_raw(m) for m in read.messages])


def _raw(message: Any) -> RawMessage:
    headers = tuple((name, value or b"") for name, value in (message.headers() or ()))
    return RawMessage(message.topic(), message.partition(), message.offset(), message.key(), message.value(),
                      headers)


@dataclass
class Found:
    """Dead letters that match a filter, what could not be read as one, and whether the read was complete."""

    letters: list[Letter]
    unreadable: list[str]
    complete: bool


def find(settings: FlywheelSettings, codec: AvroCodec, flt: Filter, *, timeout_s: float = 30.0) -> Found:
    read = read_raw(settings, flt.topics, timeout_s=timeout_s)
    letters, unreadable = [], []
    for message in read.messages:
        place = f"{message.topic}/{message.partition}/{message.offset}"
        try:
            decoded = codec.decode(message.value)
        except CodecError as exc:
            unreadable.append(f"{place}: {exc}")
            continue
        if decoded.name.rsplit(".", 1)[-1] != DEAD_LETTER_SCHEMA:
            unreadable.append(f"{place}: a {decoded.name}, not a DeadLetter")
            continue
        letter = Letter(message.topic, message.partition, message.offset, decoded.record)
        if flt.matches(letter):
            letters.append(letter)
    letters.sort(key=lambda x: (x.at_ms, x.id))
    return Found(letters, unreadable, read.complete)


def summary(letter: Letter) -> dict[str, Any]:
    """One line of `flywheel dlq list`."""
    r = letter.record
    return {"id": letter.id, "dead_lettered_at": _iso(letter.at_ms), "consumer": r["consumer"],
            "source_topic": r["source_topic"], "source_partition": r["source_partition"],
            "source_offset": r["source_offset"], "error_type": r["error_type"], "reason": r["reason"]}


def describe(codec: AvroCodec, letter: Letter) -> dict[str, Any]:
    """`flywheel dlq show`: the dead letter, its original key as text and its original value decoded where
    it can be (else the decoding error), with the raw bytes in hex."""
    r = letter.record
    key, value = r["original_key"], r["original_value"]
    out = summary(letter) | {"event_id": r["envelope"]["event_id"],
                             "correlation_id": r["envelope"]["correlation_id"], "original_key": _text(key)}
    if value is None:
        out["original_value"] = None
    else:
        try:
            decoded = codec.decode(value)
            out["original_value"] = {"event": decoded.name.rsplit(".", 1)[-1], "value": jsonable(decoded.record)}
        except CodecError as exc:
            out["original_value"] = {"error": type(exc).__name__, "reason": str(exc)}
        out["original_value_hex"] = value.hex()
    out["replayable"] = refusal(codec, letter) or "yes"
    return out


def refusal(codec: AvroCodec, letter: Letter) -> str | None:
    """Why `letter` cannot be replayed now, or None: its bytes must decode (with today's registry) into the
    event the catalogue gives its source topic. RegistryUnavailable is raised: try again later."""
    r = letter.record
    value = r["original_value"]
    if value is None:
        return "no original value (a tombstone): nothing to replay"
    try:
        spec = catalogue.topic(r["source_topic"])
    except KeyError as exc:
        return str(exc.args[0])
    if spec.value_schema == DEAD_LETTER_SCHEMA:
        return f"{spec.name} is a dead-letter topic; dead letters are not replayed into one"
    try:
        decoded = codec.decode(value)
    except CodecError as exc:
        return f"{type(exc).__name__}: {exc}"
    if decoded.name.rsplit(".", 1)[-1] != spec.value_schema:
        return f"InvalidEvent: topic {spec.name} carries {spec.value_schema}, the bytes are a {decoded.name}"
    return None


@dataclass(frozen=True)
class Outcome:
    """What replay did with one dead letter: replayed, skipped (already replayed), refused or failed."""

    id: str
    action: str
    detail: str
    target: str | None = None

    def line(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "detail": self.detail, "target": self.target}


def replay(settings: FlywheelSettings, codec: AvroCodec, letters: list[Letter], *, timeout_s: float = 30.0,
           dry_run: bool = False) -> list[Outcome]:
    """Re-produce the letters that validate (see the module doc); one Outcome per letter, in order."""
    outcomes: dict[str, Outcome] = {}
    valid = []
    for letter in letters:
        reason = refusal(codec, letter)
        if reason is None:
            valid.append(letter)
        else:
            outcomes[letter.id] = Outcome(letter.id, "refused", reason)
    done = _replayed_already(settings, {x.record["source_topic"] for x in valid}, timeout_s)
    publisher = None
    for letter in valid:
        source = letter.record["source_topic"]
        if source not in done:
            outcomes[letter.id] = Outcome(letter.id, "refused", f"could not read {source} to its end within "
                                          f"{timeout_s:.0f}s, so cannot tell whether it was replayed already")
        elif letter.id in done[source]:
            outcomes[letter.id] = Outcome(letter.id, "skipped", "already replayed", done[source][letter.id])
        elif dry_run:
            outcomes[letter.id] = Outcome(letter.id, "would-replay", "validates", source)
        else:
            publisher = publisher or KafkaPublisher(settings, codec, timeout_s=timeout_s)
            outcomes[letter.id] = _resend(publisher, letter)
            if outcomes[letter.id].action == "replayed":
                done[source][letter.id] = outcomes[letter.id].target or source
    return [outcomes[x.id] for x in letters]


def _replayed_already(settings: FlywheelSettings, sources: set[str], timeout_s: float) -> dict[str, dict[str, str]]:
    """source topic -> {dead letter id: where its replay sits}, for each source topic read to its end."""
    done: dict[str, dict[str, str]] = {}
    for source in sorted(sources):
        read = read_raw(settings, [source], timeout_s=timeout_s, reader="dlq-replay")
        if not read.complete:
            continue
        done[source] = {value.decode(errors="replace"): f"{m.topic}/{m.partition}@{m.offset}"
                        for m in read.messages for name, value in m.headers if name == REPLAY_HEADER}
    return done


def _resend(publisher: KafkaPublisher, letter: Letter) -> Outcome:
    """The original key and value, byte for byte, to the source topic's original partition, tagged."""
    r = letter.record
    spec = catalogue.topic(r["source_topic"])
    partition = r["source_partition"] if 0 <= r["source_partition"] < spec.partitions else None
    try:
        msg = publisher.send(spec.name, r["original_key"], r["original_value"],
                             headers=[(REPLAY_HEADER, letter.id.encode())], partition=partition)
    except TimeoutError:
        return Outcome(letter.id, "failed", f"the broker did not acknowledge within {publisher.timeout_s:.0f}s")
    except RuntimeError as exc:
        return Outcome(letter.id, "failed", str(exc).split(": ", 1)[-1])
    return Outcome(letter.id, "replayed", "re-produced the original key and value",
                   f"{msg.topic()}/{msg.partition()}@{msg.offset()}")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return "hex:" + data.hex()
