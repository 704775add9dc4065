"""The retrain data policy on the real local stack (docs/decisions/0012): after a feedback version, the run trains
on the base version + the feedback (one composed training manifest, the row count checked by the trainer), and a
breach's retrain trains on the same set with another seed."""

from __future__ import annotations

import json
import time
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
from flywheel_orchestrator.trainingset import manifest_key

pytestmark = pytest.mark.integration
SMALL = {"epochs": "1", "batch_size": "8", "max_len": "32", "learning_rate": "0.0003", "threads": "1"}
ARTIFACTS = "flywheel-artifacts"


@pytest.fixture
def model_id() -> str:
    return f"it-{uuid.uuid4().hex[:8]}"


def feedback_rows(examples: list[dict]) -> list[dict]:
    """Rows as serving's harvest writes them: the text and label plus provenance columns."""
    return [
        {
            "request_id": f"r{i}",
            "index": 0,
            "model_version": "fw-x",
            "predicted_label": e["label"],
            "confidence": 0.5,
            "answered_at": 1,
            "labelled_at": 2,
            "source": "feedback",
            **e,
        }
        for i, e in enumerate(examples)
    ]


def wait_ended(watch: Timeline, model_id: str, count: int, timeout_s: float = 240) -> None:
    """Until `count` runs ended, succeeded or failed: what is checked here is the data, not the model's quality
    (a 48-row fine-tune may not beat the untrained baseline on its few held-out rows)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ended = [seed.answers(watch, t, model_id) for t in ("training.run-succeeded", "training.run-failed")]
        if sum(map(len, ended)) >= count:
            return
        time.sleep(0.3)
    raise TimeoutError(f"{count} runs of {model_id} did not end within {timeout_s:.0f}s")


def test_a_retrain_after_feedback_trains_on_base_plus_feedback_with_a_new_seed(
    stack, stack_env, tmp_path: Path, model_id: str
):
    env = {
        "FLYWHEEL_MODELS": json.dumps([model_id]),
        "FLYWHEEL_HYPERPARAMETERS": json.dumps(SMALL),
        "FLYWHEEL_POLICY": json.dumps({"debounce_s": 0, "cooldown_s": 0}),
        "FLYWHEEL_LOG_FORMAT": "json",
    }
    platform = Platform(stack, tmp_path / "platform", services=("orchestrator",), extra_env=env).start()
    settings = FlywheelSettings()
    publisher, s3 = KafkaPublisher(settings, build_codec(settings)), boto3.client("s3")
    watch = Timeline(settings, build_codec(settings))
    try:
        base = seed.publish_dataset(publisher, s3, model_id, "v1", make_examples(48, seed=3))
        wait_ended(watch, model_id, 1)
        feedback = seed.publish_dataset(
            publisher,
            s3,
            model_id,
            "feedback-20261128T050000-local",
            feedback_rows(make_examples(24, seed=4)),
        )
        wait_ended(watch, model_id, 2)
        publisher.publish(
            "retrain.requested", seed.retrain_requested(model_id, observed_value=0.5, threshold=0.8)
        )
        seed.wait_for(watch, "training.run-started", model_id, 3, timeout_s=60)
    finally:
        retrains = seed.answers(watch, "training.run-started", model_id)[2:]  # not needed to end: stopped
        for record in retrains:
            s3.put_object(Bucket=ARTIFACTS, Key=f"jobs/{record['run_id']}/stop", Body=b"stop")
        platform.stop()
        watch.close()
    first, on_feedback, retrain = seed.answers(watch, "training.run-started", model_id)
    both = [base["dataset_version_id"], feedback["dataset_version_id"]]
    assert first["training_dataset_version_ids"] == [base["dataset_version_id"]]
    assert on_feedback["trigger"] == "NEW_DATA" and on_feedback["dataset_version_id"] == both[1]
    assert on_feedback["training_dataset_version_ids"] == both
    assert retrain["trigger"] == "METRIC_BREACH" and retrain["training_dataset_version_ids"] == both
    seeds = {r["hyperparameters"]["seed"] for r in (first, on_feedback, retrain)}
    assert len(seeds) == 3  # every attempt trains differently

    for registered in seed.answers(watch, "model.version-registered", model_id):
        assert registered["training_dataset_version_ids"] == (
            both if registered["run_id"] == on_feedback["run_id"] else both[:1]
        )
    composed = get_json(s3, ARTIFACTS, manifest_key(model_id, on_feedback["run_id"]))
    assert [v["dataset_version_id"] for v in composed["versions"]] == both
    assert {o["dataset_version_id"] for o in composed["objects"]} == set(both)
    assert composed["row_count"] == base["row_count"] + feedback["row_count"] == 72
    metrics = get_json(s3, ARTIFACTS, f"models/{model_id}/{on_feedback['run_id']}/metrics.json")
    assert metrics["rows"]["train"] + metrics["rows"]["heldout"] == 72  # the trainer read every row of both
