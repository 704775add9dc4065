"""Model lifecycle on Tansu + moto with the orchestrator as a real process: gate, probation and operator changes.

A stub trainer honours the training entry point's contract in well under a second (the real fine-tune with
a champion is covered by tests/contract/test_training_entry_point.py): its comparison says "better" when the
dataset holds the marker row, "no better" otherwise, and only when it was given a champion channel.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pytest

from flywheel.bootstrap import build_codec
from flywheel.events import envelope
from flywheel.lifecycle import StageStore
from flywheel.publish import KafkaPublisher
from flywheel.settings import FlywheelSettings
from flywheel_dev.demodata import make_examples
from flywheel_dev.harness import orchestrator as seed
from flywheel_dev.platform import Platform
from flywheel_dev.timeline import Timeline

STUB = """
import json, os, pathlib
channel = pathlib.Path(os.environ["SM_CHANNEL_TRAIN"])
text = "".join(p.read_text() for p in channel.iterdir() if p.is_file())
champion = os.environ.get("SM_CHANNEL_CHAMPION", "")
better = "challenger-better" in text
out = {"metrics": {"accuracy": 0.9 if better else 0.8, "macro_f1": 0.8}, "baseline_metrics": {"accuracy": 0.25},
       "seed": json.loads(os.environ["SM_HPS"]).get("seed")}
if champion and pathlib.Path(champion, "model.tar.gz").stat().st_size > 0:
    out["champion_metrics"] = {"accuracy": 0.8}
    out["comparison"] = ({"n": 200, "b": 2, "c": 22, "p_value": 1.5e-05, "delta": 0.1} if better
                         else {"n": 200, "b": 10, "c": 10, "p_value": 0.588, "delta": 0.0})
for d in (os.environ["SM_OUTPUT_DATA_DIR"], os.environ["SM_MODEL_DIR"]):
    pathlib.Path(d).mkdir(parents=True, exist_ok=True)
    pathlib.Path(d, "metrics.json").write_text(json.dumps(out))
pathlib.Path(os.environ["SM_MODEL_DIR"], "labels.json").write_text('["a", "b"]')
"""
MARKER = {"text": "challenger-better sample", "label": "billing"}


@pytest.fixture
def model_id() -> str:
    return f"lc-{uuid.uuid4().hex[:8]}"


def orchestrator(stack, tmp_path: Path, model_id: str, **extra: str) -> Platform:
    env = {"FLYWHEEL_MODELS": json.dumps([model_id]), "FLYWHEEL_LOCAL_STALE_S": "8", "FLYWHEEL_LOG_FORMAT": "json",
           **extra}
    return Platform(stack, tmp_path / "platform", services=("orchestrator",), extra_env=env).start()


def publish(model_id: str, version: str, examples: list[dict]) -> dict:
    settings = FlywheelSettings()
    return seed.publish_dataset(KafkaPublisher(settings, build_codec(settings)), boto3.client("s3"), model_id,
                                version, examples)


def watcher() -> Timeline:
    settings = FlywheelSettings()
    return Timeline(settings, build_codec(settings))


def send(topic: str, record: dict) -> None:
    settings = FlywheelSettings()
    KafkaPublisher(settings, build_codec(settings)).publish(topic, record)


def stage_change(model_id: str, action: str, version: str | None = None) -> None:
    send("model.stage-change-requested", {"envelope": envelope("cli"), "model_id": model_id, "action": action,
                                          "model_version": version, "reason": f"test {action}"})


def test_gate_probation_and_operator_changes_end_to_end(stack, stack_env, tmp_path, model_id):
    stub = tmp_path / "stub_train.py"
    stub.write_text(STUB)
    policy = {"debounce_s": 0, "enabled_triggers": ["NEW_DATA", "MANUAL"]}  # a breach rolls back, launches nothing
    platform = orchestrator(stack, tmp_path, model_id, FLYWHEEL_TRAINING_ENTRY_POINT=str(stub),
                            FLYWHEEL_POLICY=json.dumps(policy))
    watch = watcher()
    store = StageStore(boto3.client("s3"), "flywheel-artifacts")
    try:
        publish(model_id, "v1", make_examples(8, seed=1))
        first, = seed.wait_for(watch, "model.version-promoted", model_id, timeout_s=120)
        publish(model_id, "v2", make_examples(8, seed=2))
        rejected, = seed.wait_for(watch, "model.version-rejected", model_id, timeout_s=120)
        publish(model_id, "v3", [*make_examples(8, seed=3), MARKER])
        seed.wait_for(watch, "model.version-promoted", model_id, 2, timeout_s=120)
        gate = seed.answers(watch, "model.version-promoted", model_id)[1]
        send("retrain.requested", seed.retrain_requested(model_id, model_version=gate["model_version"],
                                                         metric="accuracy", observed_value=0.5, threshold=0.8))
        probation, = seed.wait_for(watch, "model.version-rolled-back", model_id, timeout_s=60)
        stage_change(model_id, "promote", "no-such-version")
        stage_change(model_id, "promote", gate["model_version"])
        seed.wait_for(watch, "model.version-promoted", model_id, 3, timeout_s=60)
        stage_change(model_id, "rollback")
        seed.wait_for(watch, "model.version-rolled-back", model_id, 2, timeout_s=60)
    finally:
        platform.stop()
        watch.close()
    started = seed.answers(watch, "training.run-started", model_id)
    v1, v2, v3 = (s["run_id"] for s in started)
    assert len({s["hyperparameters"]["seed"] for s in started}) == 3  # a seed per run, derived from its id
    assert "champion_version" not in started[0]["lineage"] and started[1]["lineage"]["champion_version"] == v1
    # 1. no champion: the first version is promoted
    assert (first.record["model_version"], first.record["reason"], first.record["previous_version"]) == (v1, "first", None)
    assert first.record["artifact_uri"].endswith(f"models/{model_id}/{v1}/model.tar.gz")
    # 2. compared with the champion on the same rows and no better: rejected with the evidence
    r = rejected.record
    assert (r["model_version"], r["champion_version"]) == (v2, v1)
    assert "below the margin" in r["reason"] and "not below alpha" in r["reason"]
    assert r["evidence"]["p_value"] == 0.588 and r["evidence"]["n"] == 200 and r["evidence"]["delta"] == 0.0
    # 3. better by the margin and significant: promoted by the gate
    assert (gate["model_version"], gate["reason"], gate["previous_version"]) == (v3, "gate", v1)
    assert gate["evidence"]["c"] == 22 and gate["evidence"]["champion_accuracy"] == 0.8
    # 4. a breach of v3 within its probation window rolls it back to v1
    p = probation.record
    assert (p["from_version"], p["to_version"], p["reason"]) == (v3, v1, "probation")
    assert p["evidence"]["observed_value"] == 0.5 and 0 <= p["evidence"]["seconds_since_promotion"] < 1800
    # 5. operator: an unknown version is ignored, a known one promoted, then rolled back
    operator = seed.answers(watch, "model.version-promoted", model_id)[2]
    assert (operator["model_version"], operator["reason"], operator["previous_version"]) == (v3, "operator", v1)
    last = seed.answers(watch, "model.version-rolled-back", model_id)[1]
    assert (last["from_version"], last["to_version"], last["reason"]) == (v3, v1, "operator")
    stages = store.read(model_id)
    assert stages.production == v1
    assert {v: r.stage for v, r in stages.versions.items()} == {v1: "production", v2: "rejected", v3: "archived"}
    assert [h["action"] for h in stages.history if h["action"] != "register"] == [
        "promote", "reject", "promote", "rollback", "promote", "rollback"]
    log = (tmp_path / "platform" / "orchestrator.log").read_text()
    assert "stage change ignored" in log and "no-such-version" in log


def test_a_succeeded_run_the_gate_never_decided_on_is_decided_at_start_up(stack, stack_env, tmp_path, model_id):
    """The service stopped between registering a version and deciding on it, before run state was kept in S3:
    the start that migrates the event log decides (later runs keep the decision in their outbox)."""
    from flywheel.s3json import put_json
    from flywheel_orchestrator import events
    from flywheel_orchestrator.domain import RunSpec
    from flywheel_orchestrator.policy import Kind

    run = f"fw-{model_id}-data-0123456789ab"
    spec = RunSpec(run, model_id, "ds1", Kind.NEW_DATA, "s3://flywheel-data/manifests/x.json", "e0", "c0")
    started = events.run_started(spec, {"event_id": "e0", "correlation_id": "c0"}, "local", {})
    artifact = f"s3://flywheel-artifacts/models/{model_id}/{run}/model.tar.gz"
    succeeded = events.run_succeeded(spec, started["envelope"], artifact, {"accuracy": 0.9}, 1.0)
    put_json(boto3.client("s3"), "flywheel-artifacts", f"models/{model_id}/{run}/registration.json",
             {"model_id": model_id, "model_version": run, "artifact_uri": artifact, "metrics": {"accuracy": 0.9},
              "baseline_metrics": {"accuracy": 0.25}})
    send("training.run-started", started)
    send("training.run-succeeded", succeeded)
    # A deployment whose run state lives only in the event log: the first start migrates it (decisions/0009).
    boto3.client("s3").delete_object(Bucket="flywheel-artifacts", Key="orchestrator/migrated.json")
    watch = watcher()
    platform = orchestrator(stack, tmp_path, model_id)
    try:
        promoted, = seed.wait_for(watch, "model.version-promoted", model_id, timeout_s=120)
    finally:
        platform.stop()
        watch.close()
    assert (promoted.record["model_version"], promoted.record["reason"]) == (run, "first")
    assert promoted.record["envelope"]["causation_id"] == succeeded["envelope"]["event_id"]
    assert StageStore(boto3.client("s3"), "flywheel-artifacts").read(model_id).production == run
