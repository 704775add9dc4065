"""`flywheel dlq list|show|replay` on the local stack: find dead letters by filter, show one decoded, refuse to
replay what does not validate, replay a valid one exactly once (a second replay does nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

from flywheel.bootstrap import build_codec
from flywheel.deadletter import SourceRecord, dead_letter
from flywheel.dlq import REPLAY_HEADER, read_raw
from flywheel.errors import InvalidEvent, UndecodableRecord
from flywheel.events import envelope
from flywheel.publish import KafkaPublisher
from flywheel.settings import FlywheelSettings

SOURCE = "dataset.rejected"  # consumed by no service: a replay here is only read by this test


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flywheel", "dlq", *argv], capture_output=True, text=True,
                          timeout=120)


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in out.splitlines() if x.startswith("{")]


def test_list_show_and_replay_dead_letters_once(stack_env: dict[str, str]) -> None:
    settings = FlywheelSettings()
    codec = build_codec(settings)
    token = uuid.uuid4().hex
    good_record = {"envelope": envelope("ingest"), "bucket": "b", "key": f"k-{token}", "reason": "EMPTY_FILE",
                   "detail": "empty"}
    good = codec.encode("DatasetRejected", good_record)
    stray = codec.encode("RetrainRequested", {"envelope": envelope("t"), "model_id": "m", "trigger": "MANUAL",
                                              "rule": "r"})
    publisher = KafkaPublisher(settings, codec, timeout_s=20)
    sent = {}
    for name, value, error in [("good", good, RuntimeError(f"{token} a bug since fixed")),
                               ("junk", b"\x07junk", UndecodableRecord(f"{token} not framed Avro")),
                               ("stray", stray, InvalidEvent(f"{token} wrong schema"))]:
        letter = dead_letter(SourceRecord(SOURCE, 1, 40, b"m-" + token.encode(), value), error, "monitor")
        msg = publisher.publish("monitor.dead-letter", letter)
        sent[name] = f"monitor.dead-letter/{msg.partition()}/{msg.offset()}"

    listed = run_cli("list", "--reason", token.upper(), "--json")
    assert listed.returncode == 0, listed.stderr
    rows = lines(listed.stdout)
    assert [r["id"] for r in rows] == [sent["good"], sent["junk"], sent["stray"]]
    assert {r["error_type"] for r in rows} == {"RuntimeError", "UndecodableRecord", "InvalidEvent"}
    assert all(r["source_topic"] == SOURCE and r["source_offset"] == 40 for r in rows)
    narrow = run_cli("list", "--reason", token, "--service", "monitor", "--source-topic", SOURCE, "--error-type",
                     "UndecodableRecord", "--since", "1h", "--json")
    assert [r["id"] for r in lines(narrow.stdout)] == [sent["junk"]]
    for other in (["--source-topic", "retrain.requested"], ["--since", "2999-01-01T00:00:00Z"],
                  ["--until", "1h"], ["--topic", "ingest.dead-letter"]):
        assert lines(run_cli("list", "--reason", token, "--json", *other).stdout) == [], other
    table = run_cli("list", "--reason", token)
    assert sent["good"] in table.stdout and "3 dead letter(s)" in table.stdout

    shown = run_cli("show", sent["good"])
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["original_key"] == f"m-{token}" and detail["replayable"] == "yes"
    assert detail["original_value"]["event"] == "DatasetRejected"
    assert detail["original_value"]["value"]["key"] == f"k-{token}"
    junk = json.loads(run_cli("show", sent["junk"]).stdout)
    assert junk["original_value"]["error"] == "UndecodableRecord" and junk["original_value_hex"] == "076a756e6b"

    refused = run_cli("replay", sent["junk"], sent["stray"])
    assert refused.returncode == 1
    outcomes = {o["id"]: o for o in lines(refused.stdout)}
    assert outcomes[sent["junk"]]["action"] == "refused" and "UndecodableRecord" in outcomes[sent["junk"]]["detail"]
    assert outcomes[sent["stray"]]["action"] == "refused"
    assert f"topic {SOURCE} carries DatasetRejected" in outcomes[sent["stray"]]["detail"]

    first = run_cli("replay", sent["good"])
    assert first.returncode == 0, first.stdout + first.stderr
    [done] = lines(first.stdout)
    assert (done["action"], done["target"].startswith(f"{SOURCE}/1@")) == ("replayed", True)
    second = run_cli("replay", "--reason", token)  # the valid one again, by filter this time
    again = {o["id"]: o for o in lines(second.stdout)}
    assert (again[sent["good"]]["action"], again[sent["good"]]["target"]) == ("skipped", done["target"])
    assert again[sent["junk"]]["action"] == again[sent["stray"]]["action"] == "refused"

    copies = [m for m in read_raw(settings, [SOURCE]).messages if (REPLAY_HEADER, sent["good"].encode()) in m.headers]
    assert [(m.partition, m.key, m.value) for m in copies] == [(1, f"m-{token}".encode(), good)]
    assert codec.decode(copies[0].value).record["key"] == f"k-{token}"


def test_replay_needs_ids_or_a_filter_and_bad_ids_are_usage_errors(stack_env: dict[str, str]) -> None:
    assert run_cli("replay").returncode == 2
    bad = run_cli("show", "dataset.rejected/0/1")
    assert bad.returncode == 2 and "not a dead letter id" in bad.stderr
