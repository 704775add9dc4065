"""The `flywheel` CLI paths that need no broker, structured logs, and the service start-up guard."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from flywheel import catalogue, cli, logs
from flywheel.bootstrap import build_codec
from flywheel.errors import InvalidEvent
from flywheel.service import EXIT_CONFIG, run_service
from flywheel.settings import FlywheelSettings, LogFormat

CODEC = build_codec(FlywheelSettings())


def test_topics_lists_the_whole_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["topics"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TOPIC", "VALUE", "SCHEMA", "KEY", "PARTITIONS", "PRODUCER", "CONSUMERS",
                                "REPLAYED", "BY"]
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert list(rows) == [t.name for t in catalogue.TOPICS]
    assert rows["retrain.requested"][4:] == ["monitor", "orchestrator", "monitor"]
    assert rows["model.version-registered"][4:] == ["orchestrator", "monitor,serving", "monitor"]
    assert rows["training.run-started"][4:] == ["orchestrator", "monitor", "orchestrator"]
    assert rows["dataset.rejected"][4:] == ["ingest", "-", "-"]


def test_retrain_builds_a_manual_request_for_the_operator_topic(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(cli, "publish_for_command", lambda settings, codec, topic, record, command: sent.append(
        (topic, record)) or 0)
    assert cli.main(["retrain", "support-intent", "--reason", "new labels"]) == 0
    [(topic, record)] = sent
    assert topic == "retrain.manual-requested" and catalogue.topic(topic).producer == "operator"
    assert (record["model_id"], record["trigger"], record["rule"], record["detail"]) == (
        "support-intent", "MANUAL", "manual", "new labels")


def test_build_record_fills_envelope_and_defaults() -> None:
    record = cli.build_record(CODEC, "RetrainRequested", ["model_id=m1", "trigger=MANUAL", "rule=manual"])
    assert record["envelope"]["producer"] == "cli" and record["sample_size"] == 0
    assert CODEC.decode(CODEC.encode("RetrainRequested", record)).record["model_id"] == "m1"


def test_build_record_refuses_an_incomplete_event() -> None:
    with pytest.raises(InvalidEvent, match="'model_id': missing"):
        cli.build_record(CODEC, "RetrainRequested", ["trigger=MANUAL", "rule=manual"])


@pytest.mark.parametrize(("argv", "message"), [
    (["produce", "RetrainRequested", "--set", "model_id=m", "--set", "trigger=MANUAL", "--set", "rule=r"],
     "travels on retrain.requested, retrain.manual-requested"),
    (["produce", "DeadLetter", "--topic", "ingest.dead-letter", "--set", "bogus=1"], "has no field 'bogus'"),
    (["produce", "NoSuchEvent"], "no event schema named 'NoSuchEvent'"),
    (["produce", "DeadLetter", "--topic", "no.such-topic"], "no topic 'no.such-topic'"),
    (["tail", "no.such-topic"], "no topic 'no.such-topic'"),
])
def test_usage_errors_exit_2_before_touching_kafka(argv: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_bad_settings_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLYWHEEL_PROFILE", "mars")
    assert cli.main(["topics"]) == cli.EXIT_USAGE
    assert "profile" in capsys.readouterr().err


def fake_message(value: object) -> SimpleNamespace:
    return SimpleNamespace(topic=lambda: "t", partition=lambda: 0, offset=lambda: 5, value=lambda: value)


def test_tail_prints_undecodable_records_instead_of_dying() -> None:
    assert cli.decode_line(CODEC, fake_message(b"\x07junk")) == {
        "topic": "t", "partition": 0, "offset": 5, "error": "UndecodableRecord",
        "reason": "not a Confluent (0x00) framed Avro record: first bytes 076a756e6b, 5 bytes in all"}
    assert cli.decode_line(CODEC, fake_message(None))["error"] == "UndecodableRecord"


def test_tail_decodes_to_json_friendly_values() -> None:
    record = cli.build_record(CODEC, "RetrainRequested", ["model_id=m1", "trigger=MANUAL", "rule=r",
                                                          "window_start=1970-01-01T00:00:01Z"])
    line = cli.decode_line(CODEC, fake_message(CODEC.encode("RetrainRequested", record)))
    assert line["event"] == "RetrainRequested"
    assert json.loads(json.dumps(line))["value"]["window_start"] == "1970-01-01T00:00:01+00:00"


def make_record(**extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "svc", "levelname": "INFO", "msg": "got %s", "args": ("x",)})
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_extras() -> None:
    line = json.loads(logs.JsonFormatter().format(make_record(event_id="e1", correlation_id="c1")))
    assert (line["msg"], line["level"], line["event_id"], line["correlation_id"]) == ("got x", "info", "e1", "c1")


def test_console_lines_carry_the_extras() -> None:
    assert logs.ConsoleFormatter().format(make_record(event_id="e1")).endswith("svc: got x event_id=e1")


def test_configure_routes_everything_through_one_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure(LogFormat.JSON, "debug")
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, logs.JsonFormatter)
        assert root.level == logging.DEBUG and logging.getLogger("aiokafka").level == logging.WARNING
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_service_refuses_bad_configuration_naming_the_field(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLYWHEEL_KAFKA_FETCH_MAX_WAIT_MS", "-5")

    def never(_: object) -> None:
        raise AssertionError("the app must not be built from bad settings")

    with pytest.raises(SystemExit) as exited:
        run_service("monitor", FlywheelSettings, never)
    assert exited.value.code == EXIT_CONFIG
    assert "kafka_fetch_max_wait_ms" in capsys.readouterr().err
