"""Orchestrator on Tansu + moto as a real process: fine-tune, failure, burst + supersede, kill -9 + restart."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import boto3
import pytest

from flywheel.bootstrap import build_codec
from flywheel.publish import KafkaPublisher
from flywheel.s3json import get_json
from flywheel.settings import FlywheelSettings
from flywheel_dev.demodata import make_examples
from flywheel_dev.harness import orchestrator as seed
from flywheel_dev.platform import Platform
from flywheel_dev.timeline import Timeline

SMALL = {"epochs": "1", "batch_size": "8", "max_len": "32", "learning_rate": "0.0003", "threads": "1"}
# Stands in for train.py where a test needs a job that runs until stopped (no fine-tune needed to test that).
SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n"


@pytest.fixture
def model_id() -> str:
    return f"it-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return stack_env


def s3_client():
    return boto3.client("s3")


def orchestrator(stack, tmp_path: Path, model_id: str, **extra: str) -> Platform:
    env = {"FLYWHEEL_MODELS": json.dumps([model_id]), "FLYWHEEL_HYPERPARAMETERS": json.dumps(SMALL),
           "FLYWHEEL_POLICY": json.dumps({"debounce_s": 0}), "FLYWHEEL_LOCAL_STALE_S": "8",
           "FLYWHEEL_LOG_FORMAT": "json", **extra}
    return Platform(stack, tmp_path / "platform", services=("orchestrator",), extra_env=env).start()


def publish(model_id: str, version: str, examples: list[dict]) -> dict:
    settings = FlywheelSettings()
    return seed.publish_dataset(KafkaPublisher(settings, build_codec(settings)), s3_client(), model_id, version,
                                examples)


def watcher() -> Timeline:
    settings = FlywheelSettings()
    return Timeline(settings, build_codec(settings))


def job_keys(run_id: str) -> list[str]:
    found = s3_client().list_objects_v2(Bucket="flywheel-artifacts", Prefix=f"jobs/{run_id}/")
    return sorted(o["Key"] for o in found.get("Contents", []))


def test_dataset_version_yields_one_real_fine_tune_registered_with_artifact(stack, env, tmp_path, model_id):
    platform = orchestrator(stack, tmp_path, model_id)
    watch = watcher()
    try:
        ready = publish(model_id, "v1", make_examples(160, seed=3))  # enough steps to beat the baseline every seed
        # Topics are consumed independently: wait for each event, not only for the last one sent.
        for topic in ("training.run-started", "training.run-succeeded", "model.version-registered"):
            seed.wait_for(watch, topic, model_id, timeout_s=240)
    finally:
        platform.stop()
        watch.close()
    started, = seed.answers(watch, "training.run-started", model_id)
    succeeded, = seed.answers(watch, "training.run-succeeded", model_id)
    registered, = seed.answers(watch, "model.version-registered", model_id)
    assert started["trigger"] == "NEW_DATA" and started["trigger_event_id"] == ready["envelope"]["event_id"]
    assert started["envelope"]["correlation_id"] == ready["envelope"]["correlation_id"]
    assert registered["run_id"] == succeeded["run_id"] == started["run_id"]
    assert registered["metrics"]["accuracy"] > registered["baseline_metrics"]["accuracy"]
    assert registered["lineage"]["manifest_uri"] == ready["manifest_uri"]
    assert registered["envelope"]["causation_id"] == started["envelope"]["event_id"]
    assert registered["reference_distribution"]["prediction"]
    key = registered["artifact_uri"].removeprefix("s3://flywheel-artifacts/")
    assert key == f"models/{model_id}/{started['run_id']}/model.tar.gz"
    assert s3_client().head_object(Bucket="flywheel-artifacts", Key=key)["ContentLength"] > 1_000_000
    log = (tmp_path / "platform" / "orchestrator.log").read_text()
    assert "progress epoch=1/1" in log and started["run_id"] in log  # the fine-tune's output reaches the log


def test_failing_training_reports_failed_with_the_reason(stack, env, tmp_path, model_id):
    platform = orchestrator(stack, tmp_path, model_id)
    watch = watcher()
    try:
        one_label = [{"text": f"invoice {i} is wrong", "label": "billing"} for i in range(20)]
        publish(model_id, "v1", one_label)
        seed.wait_for(watch, "training.run-failed", model_id, timeout_s=180)
    finally:
        platform.stop()
        watch.close()
    failed, = seed.answers(watch, "training.run-failed", model_id)
    assert "need at least 2 distinct labels" in failed["reason"]
    assert not seed.answers(watch, "model.version-registered", model_id)


def test_burst_gives_one_run_and_newer_data_supersedes_it(stack, env, tmp_path, model_id):
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text(SLEEPER)
    platform = orchestrator(stack, tmp_path, model_id, FLYWHEEL_POLICY=json.dumps({"debounce_s": 2}),
                            FLYWHEEL_TRAINING_ENTRY_POINT=str(sleeper))
    watch = watcher()
    try:
        burst = [publish(model_id, f"v{i}", make_examples(8, seed=i)) for i in range(1, 4)]
        seed.wait_for(watch, "training.run-started", model_id, timeout_s=60)
        newer = publish(model_id, "v4", make_examples(8, seed=4))
        seed.wait_for(watch, "training.run-started", model_id, 2, timeout_s=60)
        seed.wait_for(watch, "training.run-superseded", model_id, timeout_s=10)
        first, second = seed.answers(watch, "training.run-started", model_id)
        stopped = wait_state(first["run_id"], "Stopped")
    finally:
        stop_jobs(seed.answers(watch, "training.run-started", model_id))
        platform.stop()
        watch.close()
    assert first["dataset_version_id"] == burst[-1]["dataset_version_id"]  # the burst became one run, on the last
    assert second["dataset_version_id"] == newer["dataset_version_id"]
    superseded, = seed.answers(watch, "training.run-superseded", model_id)
    assert superseded["run_id"] == first["run_id"] and superseded["superseded_by_run_id"] == second["run_id"]
    assert stopped == "Stopped"


def test_kill_9_mid_run_then_restart_completes_without_duplicate(stack, env, tmp_path, model_id):
    platform = orchestrator(stack, tmp_path, model_id)
    watch = watcher()
    try:
        publish(model_id, "v1", make_examples(48, seed=5))
        started, = seed.wait_for(watch, "training.run-started", model_id, timeout_s=60)
        assert wait_state(started.record["run_id"], "InProgress") == "InProgress"
        platform.procs["orchestrator"].kill(signal.SIGKILL)
        platform.procs["orchestrator"].start()
        platform.procs["orchestrator"].wait_healthy()
        # The run's end, whichever it is: 38 training rows and one epoch may or may not beat the untrained
        # baseline (the seed comes from the run id); what is tested is one run carried through a kill -9.
        ended = wait_ended(watch, model_id, timeout_s=240)
        if ended["_topic"] == "training.run-succeeded":
            seed.wait_for(watch, "model.version-registered", model_id, timeout_s=60)
    finally:
        platform.stop()
        watch.close()
    started, = seed.answers(watch, "training.run-started", model_id)
    ends = [*seed.answers(watch, "training.run-succeeded", model_id), *seed.answers(watch, "training.run-failed", model_id)]
    assert [e["run_id"] for e in ends] == [started["run_id"]]
    assert [r["run_id"] for r in seed.answers(watch, "model.version-registered", model_id)] in (
        [], [started["run_id"]])
    assert job_keys(started["run_id"]) == [f"jobs/{started['run_id']}/{n}" for n in ("job.json", "status.json")]
    log = (tmp_path / "platform" / "orchestrator.log").read_text()
    assert "resuming run" in log


def wait_ended(watch: Timeline, model_id: str, timeout_s: float) -> dict:
    """The first TrainingRunSucceeded or TrainingRunFailed of the model (its topic under `_topic`)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for topic_name in ("training.run-succeeded", "training.run-failed"):
            found = seed.answers(watch, topic_name, model_id)
            if found:
                return {**found[0], "_topic": topic_name}
        time.sleep(0.5)
    raise TimeoutError(f"no end of a run of {model_id} within {timeout_s:.0f}s")


def wait_state(job_name: str, state: str, timeout_s: float = 30) -> str:
    import time

    deadline, found = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline and found != state:
        found = (read_launcher_json(f"jobs/{job_name}/status.json") or {}).get("state", "")
        time.sleep(0.3)
    return found


def read_launcher_json(key: str) -> dict | None:
    return get_json(s3_client(), "flywheel-artifacts", key)


def stop_jobs(started: list[dict]) -> None:
    """The sleeper jobs outlive the service by design; stop them through the launcher's own stop marker."""
    for record in started:
        s3_client().put_object(Bucket="flywheel-artifacts", Key=f"jobs/{record['run_id']}/stop", Body=b"stop")
