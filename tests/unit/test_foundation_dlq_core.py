"""The pure parts of `flywheel dlq`: ids, times, filters and the replay check (the stack test covers I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from flywheel.codec import AvroCodec
from flywheel.deadletter import SourceRecord, dead_letter
from flywheel.dlq import Filter, Letter, describe, parse_id, parse_time, refusal, topics_for
from flywheel.errors import UndecodableRecord
from flywheel.events import envelope
from flywheel.registry import EmbeddedRegistry
from flywheel.schemas import SchemaSet
from flywheel.settings import REPO_SCHEMA_DIR

CODEC = AvroCodec(EmbeddedRegistry(SchemaSet(REPO_SCHEMA_DIR)))
GOOD = CODEC.encode("RetrainRequested", {"envelope": envelope("monitor"), "model_id": "m1", "trigger": "DRIFT",
                                         "rule": "psi"})
HOUR = 3_600_000


def letter(value: bytes | None = GOOD, topic: str = "retrain.requested", at: int = 10 * HOUR,
           reason: str = "Boom", error: type = RuntimeError) -> Letter:
    record = dead_letter(SourceRecord(topic, 2, 7, b"m1", value), error(reason), "orchestrator")
    record["envelope"]["occurred_at"] = at
    return Letter("orchestrator.dead-letter", 0, 5, record)


def test_ids_name_a_dead_letter_by_its_place() -> None:
    assert letter().id == "orchestrator.dead-letter/0/5" and letter().source == "retrain.requested/2@7"
    assert parse_id("monitor.dead-letter/0/12") == ("monitor.dead-letter", 0, 12)
    for bad in ("monitor.dead-letter/0", "retrain.requested/0/1", "monitor.dead-letter/a/1", ""):
        with pytest.raises(ValueError, match="not a dead letter id"):
            parse_id(bad)


def test_topics_come_from_names_services_or_the_catalogue() -> None:
    assert topics_for() == ("ingest.dead-letter", "orchestrator.dead-letter", "monitor.dead-letter",
                           "serving.dead-letter")
    assert topics_for(["monitor.dead-letter"], ["monitor", "ingest"]) == ("monitor.dead-letter", "ingest.dead-letter")
    with pytest.raises(KeyError, match="retrain.requested is not a dead-letter topic"):
        topics_for(["retrain.requested"])
    with pytest.raises(KeyError, match="operator.dead-letter"):
        topics_for(services=["operator"])


@pytest.mark.parametrize(("text", "expected"), [
    ("90s", 100 * HOUR - 90_000), ("15m", 100 * HOUR - 15 * 60_000), ("2h", 98 * HOUR), ("1.5d", 64 * HOUR),
    ("1970-01-01T01:00:00Z", HOUR), ("1970-01-01T01:00:00", HOUR), ("1970-01-01T02:00:00+01:00", HOUR),
])
def test_times_are_iso_or_an_age(text: str, expected: int) -> None:
    assert parse_time(text, now_ms=100 * HOUR) == expected


def test_a_bad_time_says_what_is_expected() -> None:
    with pytest.raises(ValueError, match="neither an ISO-8601 time .* nor an age"):
        parse_time("yesterday", 0)


def test_every_filter_criterion_must_hold() -> None:
    one = letter(reason="Schema ID 42 unknown", error=UndecodableRecord)
    assert Filter().matches(one)
    assert Filter(reason="schema id", error_type="UndecodableRecord", source_topic="retrain.requested",
                  since_ms=10 * HOUR, until_ms=10 * HOUR + 1, ids=(one.id,)).matches(one)
    for miss in (Filter(reason="nope"), Filter(error_type="InvalidEvent"), Filter(source_topic="x"),
                 Filter(since_ms=10 * HOUR + 1), Filter(until_ms=10 * HOUR), Filter(ids=("a/0/1",))):
        assert not miss.matches(one), miss


def test_replay_refuses_what_does_not_validate_and_says_why() -> None:
    stray = CODEC.encode("DeadLetter", dead_letter(SourceRecord("t", 0, 0, None, None), RuntimeError("x"), "c"))
    assert refusal(CODEC, letter()) is None
    assert "tombstone" in refusal(CODEC, letter(value=None))
    assert refusal(CODEC, letter(value=b"\x07junk")).startswith("UndecodableRecord: not a Confluent")
    assert refusal(CODEC, letter(value=GOOD + b"\x00")).startswith("UndecodableRecord:")
    assert refusal(CODEC, letter(value=stray)) == (
        "InvalidEvent: topic retrain.requested carries RetrainRequested, the bytes are a flywheel.DeadLetter")
    assert "no topic 'gone'" in refusal(CODEC, letter(topic="gone"))
    assert "is a dead-letter topic" in refusal(CODEC, letter(topic="monitor.dead-letter"))


def test_show_decodes_the_original_value_where_it_can() -> None:
    shown: dict[str, Any] = describe(CODEC, letter())
    assert (shown["id"], shown["original_key"], shown["replayable"]) == ("orchestrator.dead-letter/0/5", "m1", "yes")
    assert shown["original_value"]["event"] == "RetrainRequested"
    assert shown["original_value"]["value"]["rule"] == "psi" and shown["original_value_hex"] == GOOD.hex()
    assert shown["dead_lettered_at"] == "1970-01-01T10:00:00.000+00:00"
    junk = describe(CODEC, letter(value=b"\xff"))
    assert junk["original_value"]["error"] == "UndecodableRecord" and junk["replayable"].startswith("Undecodable")
