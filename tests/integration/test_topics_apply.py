"""`flywheel topics apply` and the services' start-up partition check, on a real local broker (Tansu).

Each test gets a broker of its own: they delete and recreate catalogue topics, which the session stack's
other users must never see. Tansu (measured here) answers CreateTopics with configs, DescribeConfigs (only
the keys set, no defaults), IncrementalAlterConfigs and DeleteTopics; it refuses the legacy AlterConfigs and
CreatePartitions (UNSUPPORTED_FEATURE), which apply never sends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from flywheel import topicadmin
from flywheel.catalogue import TOPICS, topic
from flywheel.service import EXIT_CONFIG
from flywheel.settings import FlywheelSettings
from flywheel.topicadmin import ALTER, OK, KafkaTopicAdmin
from flywheel_dev.localstack import create_topics, free_port, tansu_binary, wait_for_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def broker() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
                             "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
                             "--storage-engine", "memory://tansu/"], env={**os.environ, "RUST_LOG": "warn"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def admin_for(bootstrap: str) -> KafkaTopicAdmin:
    return KafkaTopicAdmin(FlywheelSettings(kafka_bootstrap=bootstrap), timeout_s=15)


def recreate(bootstrap: str, name: str, partitions: int) -> None:
    raw = AdminClient({"bootstrap.servers": bootstrap})
    raw.delete_topics([name])[name].result(15)
    deadline = time.monotonic() + 15
    while True:  # the broker may still be forgetting the old topic
        try:
            raw.create_topics([NewTopic(name, partitions, 1)])[name].result(15)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def cli(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLYWHEEL_KAFKA_BOOTSTRAP": bootstrap, "FLYWHEEL_PROFILE": "local"}
    return subprocess.run([sys.executable, "-m", "flywheel", "topics", "apply", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def actions(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines() if line.split()[0] in ("create", "alter", "ok", "refuse")]


def test_apply_creates_every_topic_with_its_configs_and_a_second_apply_is_a_no_op(broker: str) -> None:
    first = cli(broker)
    assert first.returncode == 0, first.stderr
    assert actions(first.stdout) == ["create"] * len(TOPICS) and "applied and verified" in first.stdout
    found = admin_for(broker).describe([t.name for t in TOPICS])
    for spec in TOPICS:
        got = found[spec.name]
        assert (got.partitions, got.replication_factor) == (spec.partitions, 1)
        assert {k: got.configs.get(k) for k in spec.configs("local")} == spec.configs("local"), spec.name
    second = cli(broker)
    assert second.returncode == 0 and actions(second.stdout) == ["ok"] * len(TOPICS)
    assert "nothing to change" in second.stdout


def test_a_drifted_config_is_set_back_and_shown_old_to_new(broker: str) -> None:
    create_topics(broker)  # the local stack's path: the same apply
    admin = admin_for(broker)
    drifted = topicadmin.Step("dataset.rejected", ALTER, (topicadmin.Change("retention.ms", None, "60000"),))
    admin.alter([drifted])
    dry = cli(broker, "--dry-run")
    assert dry.returncode == 0
    assert f"alter   dataset.rejected  retention.ms 60000 → {topic('dataset.rejected').retention_ms}" in dry.stdout
    assert admin.describe(["dataset.rejected"])["dataset.rejected"].configs["retention.ms"] == "60000"
    done = topicadmin.apply(admin, "local")
    assert [s.topic for s in done.before.of(ALTER)] == ["dataset.rejected"]
    assert done.after is not None and {s.action for s in done.after.steps} == {OK}


def test_a_partition_mismatch_is_refused_and_nothing_is_changed(broker: str) -> None:
    create_topics(broker)
    recreate(broker, "training.run-failed", 2)
    recreate(broker, "dataset.rejected", 1)  # and one topic that is simply missing its configs now
    done = cli(broker)
    assert done.returncode == 3  # cli.EXIT_REFUSED: the topics Job fails at once
    assert "refuse  training.run-failed  training.run-failed has 2 partitions, the catalogue says 4" in done.stdout
    assert "nothing was changed" in done.stderr
    assert admin_for(broker).describe(["training.run-failed"])["training.run-failed"].partitions == 2


def test_the_msk_environment_asks_for_three_replicas_and_two_in_sync(broker: str) -> None:
    done = cli(broker, "--environment", "msk", "--dry-run")
    assert done.returncode == 0
    assert done.stdout.count("replication.factor (unset) → 3") == len(TOPICS)
    assert done.stdout.count("min.insync.replicas (unset) → 2") == len(TOPICS)
    assert not admin_for(broker).describe([t.name for t in TOPICS])


def start_monitor(bootstrap: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port, log = free_port(), tmp_path / "monitor.log"
    env = {**os.environ, "FLYWHEEL_KAFKA_BOOTSTRAP": bootstrap, "FLYWHEEL_PROFILE": "local",
           "FLYWHEEL_WEB_PORT": str(port), "FLYWHEEL_DATA_DIR": str(tmp_path / "state"),
           "FLYWHEEL_KAFKA_SESSION_TIMEOUT_S": "6", "FLYWHEEL_KAFKA_FETCH_MAX_WAIT_MS": "10"}
    with log.open("ab") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "flywheel_monitor"], env=env, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port, log


def test_a_service_refuses_to_start_on_a_partition_mismatch(broker: str, tmp_path: Path) -> None:
    create_topics(broker)
    recreate(broker, "model.metrics-observed", 2)  # the monitor consumes it
    proc, _, log = start_monitor(broker, tmp_path)
    assert proc.wait(timeout=60) == EXIT_CONFIG
    text = log.read_text()
    assert "refusing to start: topic model.metrics-observed has 2 partitions, the catalogue expects 4" in text
    assert "flywheel topics apply --dry-run" in text


def test_a_service_starts_when_its_topics_match(broker: str, tmp_path: Path) -> None:
    create_topics(broker)
    proc, port, log = start_monitor(broker, tmp_path)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(f"monitor not healthy: {log.read_text()[-3000:]}")
        assert "refusing" not in log.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
