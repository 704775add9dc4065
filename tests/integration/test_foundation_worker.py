"""A real Faust worker built by make_app on Tansu: bad records dead-lettered, good ones processed; and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from flywheel.bootstrap import build_codec
from flywheel.events import envelope
from flywheel.kafka import confluent_producer_config
from flywheel.settings import FlywheelSettings
from flywheel.topicreader import read_to_end
from flywheel_dev.harness.monitor import wait_for
from flywheel_dev.localstack import free_port

SOURCE = "dataset.rejected"  # read by no service, so this probe's group has it to itself
WORKER = '''
import sys
from pathlib import Path
from flywheel.bootstrap import build_codec
from flywheel.catalogue import topic
from flywheel.faust_app import DeadLetters, FaustPublisher, decoded, make_app, raw_topic
from flywheel.service import run_service
from flywheel.settings import FlywheelSettings

OUT = Path(sys.argv[1])

def create(settings):
    app = make_app("foundation-probe", settings)
    codec = build_codec(settings)
    dead_letters = DeadLetters(FaustPublisher(app, codec, "monitor"))

    @app.agent(raw_topic(app, topic("dataset.rejected")))
    async def probe(stream):
        async for message, event in decoded(stream, codec, dead_letters):
            wait = app.consumer._thread._consumer._fetcher._fetch_max_wait_ms
            with OUT.open("a") as out:
                out.write(f"{event.record['envelope']['event_id']} fetch_max_wait_ms={wait}\\n")

    return app

run_service("foundation-probe", FlywheelSettings, create)
'''




@pytest.fixture
def worker(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Path]:
    script, out, log = tmp_path / "worker.py", tmp_path / "processed.txt", tmp_path / "worker.log"
    script.write_text(WORKER)
    env = {**os.environ, "FLYWHEEL_WEB_PORT": str(free_port()), "FLYWHEEL_DATA_DIR": str(tmp_path / "state")}
    with log.open("ab") as sink:
        proc = subprocess.Popen([sys.executable, str(script), str(out)], env=env, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(log.read_text()[-3000:])


def produce(records: list[tuple[bytes | None, bytes | None]]) -> list[int]:
    offsets: list[int] = []
    producer = Producer(confluent_producer_config(FlywheelSettings()))
    for key, value in records:
        producer.produce(SOURCE, key=key, value=value, partition=0,
                         on_delivery=lambda err, msg: offsets.append(-1 if err else msg.offset()))
        producer.flush(20)
    return offsets


def dead_letters_for(offsets: set[int]) -> list[dict[str, Any]]:
    settings = FlywheelSettings()
    codec = build_codec(settings)

    def all_found() -> dict[int, dict[str, Any]] | None:
        letters = read_to_end(settings, codec, ["monitor.dead-letter"], timeout_s=10).records()
        found = {r["source_offset"]: r for r in letters
                 if r["source_topic"] == SOURCE and r["source_partition"] == 0 and r["source_offset"] in offsets}
        return found if len(found) == len(offsets) else None

    found = wait_for(all_found, f"dead letters for offsets {sorted(offsets)}", timeout=30)
    return [found[o] for o in sorted(found)]


def test_worker_dead_letters_bad_records_and_keeps_processing(worker: Path) -> None:
    codec = build_codec(FlywheelSettings())
    good = {"envelope": envelope("test"), "bucket": "b", "key": "k", "reason": "EMPTY_FILE", "detail": "empty"}
    stray = {"envelope": envelope("test"), "model_id": "m1", "trigger": "MANUAL", "rule": "r"}
    stray_bytes = codec.encode("RetrainRequested", stray)  # a valid event, but not what this topic carries
    offsets = produce([(b"m1", b"\x07junk"), (b"m1", None), (b"m1", stray_bytes),
                       (b"m1", codec.encode("DatasetRejected", good))])
    assert -1 not in offsets
    event_id = good["envelope"]["event_id"]
    line = wait_for(lambda: next((x for x in worker.read_text().splitlines() if x.startswith(event_id)), None)
                    if worker.exists() else None, "the good record processed")
    assert line.endswith("fetch_max_wait_ms=10"), "the worker consumer must honour FLYWHEEL_KAFKA_FETCH_MAX_WAIT_MS"
    letters = dead_letters_for(set(offsets[:3]))
    assert [(r["error_type"], r["original_key"], r["consumer"]) for r in letters] == [
        ("UndecodableRecord", b"m1", "monitor"), ("UndecodableRecord", b"m1", "monitor"),
        ("InvalidEvent", b"m1", "monitor")]
    assert [r["original_value"] for r in letters] == [b"\x07junk", None, stray_bytes]


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flywheel", *argv], capture_output=True, text=True, timeout=60)


def test_cli_produce_then_tail_round_trips_an_event(stack_env: dict[str, str]) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    sent = run_cli("produce", "RetrainRequested", "--topic", "retrain.manual-requested", "--set",
                   f"model_id={model}", "--set", "trigger=MANUAL", "--set", "rule=manual", "--set",
                   "window_start=2024-01-01T00:00:00Z")
    assert sent.returncode == 0, sent.stderr
    receipt = json.loads(sent.stdout)
    tail = run_cli("tail", "retrain.manual-requested", "--from-beginning", "--idle-timeout", "2")
    lines = [json.loads(x) for x in tail.stdout.splitlines()]
    mine = [x for x in lines if x.get("value", {}).get("envelope", {}).get("event_id") == receipt["event_id"]]
    assert len(mine) == 1 and mine[0]["offset"] == receipt["offset"]
    assert mine[0]["value"]["model_id"] == model
    assert mine[0]["value"]["window_start"] == "2024-01-01T00:00:00+00:00"


def test_cli_produce_refuses_an_invalid_event_and_sends_nothing(stack_env: dict[str, str]) -> None:
    refused = run_cli("produce", "RetrainRequested", "--topic", "retrain.manual-requested", "--set",
                      "model_id=m", "--set", "trigger=SOMETIMES", "--set", "rule=r")
    assert refused.returncode == 2 and "'trigger'" in refused.stderr and refused.stdout == ""
