"""Two orchestrator replicas on the local stack (docs/decisions/0009-orchestrator-scale-out.md).

The replicas share the consumer group, S3 and the broker, as two pods do. Each owns the models on its
partitions. Faults: kill -9 the replica that holds a run; a partition reassignment (SIGTERM, restart) while a
run is held, then newer data; every topic deleted and recreated (what retention expiry does to state that
lived only in the topics) while the state stays in S3, then a breach inside the cooldown and new data.
Each asserts exactly one Started / Succeeded / Registered per run id and one job per run.
"""

from __future__ import annotations

import json
import signal
import tempfile
import uuid
from collections import Counter
from pathlib import Path

import pytest

from conftest import ARTIFACTS, assert_one_run_per_trigger, wait_until
from flywheel.s3json import get_json
from flywheel_dev.demo import settings_for
from flywheel_dev.harness.orchestrator import retrain_requested
from flywheel_dev.localstack import free_port
from flywheel_dev.platform import ServiceProcess
from flywheel_dev.timeline import Timeline
from flywheel_orchestrator.ownership import partition_of
from flywheel_orchestrator.statestore import state_key

HOLD = Path(tempfile.gettempdir()) / f"flywheel-fault-replicas-{uuid.uuid4().hex[:8]}"
RUN = uuid.uuid4().hex[:6]
PLATFORM_ENV = {
    "FLYWHEEL_FAULT_TRAIN_HOLD": str(HOLD),
    "FLYWHEEL_KAFKA_SESSION_TIMEOUT_S": "6",
    # A breach retrains at most once an hour; new data supersedes a run on older data (the defaults, stated).
    "FLYWHEEL_POLICY": json.dumps({"debounce_s": 0, "cooldown_s": 3600, "supersede": True}),
}
REPLICAS = ("orchestrator", "orchestrator-2")


def model_on(partition: int, tag: str) -> str:
    """A model id whose events land on `partition`."""
    return next(m for i in range(1000) if partition_of(m := f"fault-rep-{tag}-{RUN}-{i}") == partition)


@pytest.fixture(scope="module", autouse=True)
def second_replica(running):
    HOLD.mkdir()
    first = running.platform.procs["orchestrator"]
    env = {**first.env, "FLYWHEEL_DATA_DIR": str(running.workdir / "state-2")}
    second = ServiceProcess("orchestrator", free_port(), env, running.workdir / "orchestrator-2.log")
    running.platform.procs["orchestrator-2"] = second
    second.start()
    second.wait_healthy(timeout=90)
    wait_until(lambda: all("assigned partitions" in log(running, r) for r in REPLICAS), "both replicas assigned",
               timeout=60)
    yield second
    for path in HOLD.iterdir():
        path.unlink()
    HOLD.rmdir()


def log(running, replica: str) -> str:
    return running.platform.procs[replica].log_path.read_text(errors="replace")


def owner(running, model: str) -> str | None:
    """The replica whose worker wrote the model's state last (its worker id carries the pid)."""
    doc = get_json(running.s3(), ARTIFACTS, state_key(model)) or {}
    pid = str(doc.get("owner", "")).split("-")[-2:-1]
    for name in REPLICAS:
        proc = running.platform.procs[name].proc
        if pid and proc is not None and str(proc.pid) == pid[0]:
            return name
    return None


def upload(running, model: str, version: str = "v1") -> None:
    from test_fault_kill_services import upload as put

    put(running, model, version)


def job_state(running, run_id: str) -> str:
    try:
        return (get_json(running.s3(), ARTIFACTS, f"jobs/{run_id}/status.json") or {}).get("state", "")
    except Exception:
        return ""


def exactly_once(running, model: str) -> dict[str, Counter]:
    """Per run id of `model`: one Started, and at most one Succeeded and Registered (none twice)."""
    about = lambda s: s.get("model_id") == model  # noqa: E731
    counts = {name: Counter(s.get("run_id") for s in running.timeline.matching(name, about))
              for name in ("TrainingRunStarted", "TrainingRunSucceeded", "ModelVersionRegistered",
                           "TrainingRunSuperseded")}
    for name, per_run in counts.items():
        assert all(n == 1 for n in per_run.values()), f"{name} twice for a run of {model}: {per_run}"
    return counts


def held_run(running, model: str) -> str:
    (HOLD / model).touch()
    upload(running, model)
    [started] = running.timeline.wait_for("TrainingRunStarted", lambda s: s.get("model_id") == model, timeout=60)
    run_id = started.get("run_id")
    wait_until(lambda: job_state(running, run_id) == "InProgress", "the held job in progress")
    return run_id


def test_two_replicas_split_the_models_and_each_decides_once(running) -> None:
    models = [model_on(p, "split") for p in range(4)]
    for model in models:
        upload(running, model)
    for model in models:
        running.timeline.wait_for("ModelVersionRegistered", lambda s, m=model: s.get("model_id") == m, timeout=60)
        assert_one_run_per_trigger(running, lambda s, m=model: s.get("model_id") == m)
        exactly_once(running, model)
    owners = {owner(running, m) for m in models}
    assert owners == set(REPLICAS), f"the four partitions are split between both replicas: {owners}"


def test_kill_9_the_replica_holding_a_run(running) -> None:
    model = model_on(1, "kill")
    run_id = held_run(running, model)
    victim = owner(running, model)
    assert victim in REPLICAS
    proc = running.platform.procs[victim]
    proc.kill(signal.SIGKILL)
    survivor = next(r for r in REPLICAS if r != victim)
    wait_until(lambda: owner(running, model) == survivor, "the survivor to take the model", timeout=60)
    (HOLD / model).unlink()  # the job, which outlived its orchestrator, may finish now
    running.timeline.wait_for("ModelVersionRegistered", lambda s: s.get("model_id") == model, timeout=60)
    counts = exactly_once(running, model)
    assert counts["ModelVersionRegistered"] == {run_id: 1}
    assert running.job_records(run_id) == ["job.json", "status.json"]  # one job, re-attached, never relaunched
    proc.start()
    proc.wait_healthy(timeout=90)


def test_a_reassignment_while_a_run_is_held_then_newer_data_supersedes_it(running) -> None:
    model = model_on(2, "move")
    run_id = held_run(running, model)
    moved_from = owner(running, model)
    proc = running.platform.procs[moved_from]
    proc.stop()  # SIGTERM: leaves the group, its partitions move; no queued trigger is launched on the way out
    other = next(r for r in REPLICAS if r != moved_from)
    wait_until(lambda: owner(running, model) == other, "the other replica to take the model", timeout=60)
    proc.start()  # and back: a second rebalance while the run is still held
    proc.wait_healthy(timeout=90)
    upload(running, model, "v2")  # newer data: the run on v1 is superseded by whoever owns the model now
    [superseded] = running.timeline.wait_for("TrainingRunSuperseded", lambda s: s.get("model_id") == model,
                                             timeout=60)
    assert superseded.get("run_id") == run_id
    (HOLD / model).unlink()
    running.timeline.wait_for("ModelVersionRegistered", lambda s: s.get("model_id") == model, timeout=60)
    counts = exactly_once(running, model)
    assert run_id not in counts["TrainingRunSucceeded"] and len(counts["TrainingRunStarted"]) == 2


def test_topics_deleted_and_recreated_state_kept_in_s3(running) -> None:
    """Retention expiry, the harsh way: every topic and offset is gone (the local broker restarts empty). The
    cooldown of a breach and the datasets a model was trained on come back from S3, not from the topics."""
    model = model_on(3, "wipe")
    upload(running, model)
    running.timeline.wait_for("ModelVersionRegistered", lambda s: s.get("model_id") == model, timeout=60)
    running.publisher().publish("retrain.requested", retrain_requested(model, observed_value=0.5, threshold=0.8))
    running.timeline.wait_for("TrainingRunStarted", lambda s: s.get("model_id") == model
                              and s.get("trigger") == "METRIC_BREACH", timeout=60)
    running.timeline.wait_for("ModelVersionRegistered", lambda s: s.get("model_id") == model, count=2, timeout=60)

    for proc in running.platform.procs.values():
        proc.kill(signal.SIGKILL)  # the runbook for a wiped log (test_fault_broker_restart.py)
    running.stack.stop_broker()
    running.stack.start_broker()  # every topic recreated empty
    for proc in running.platform.procs.values():
        proc.start()
    for proc in running.platform.procs.values():
        proc.wait_healthy(timeout=90)
    running.timeline.close()
    running.timeline = Timeline(settings_for(running.stack), running.codec)

    breach = retrain_requested(model, observed_value=0.4, threshold=0.8)
    running.publisher().publish("retrain.requested", breach)  # inside the cooldown: skipped, from S3 state
    upload(running, model, "v2")  # new data: trained (the objects of v1 are known not to be new)
    running.timeline.wait_for("ModelVersionRegistered", lambda s: s.get("model_id") == model, timeout=90)
    started = running.timeline.matching("TrainingRunStarted", lambda s: s.get("model_id") == model)
    assert [s.get("trigger") for s in started] == ["NEW_DATA"], "the breach inside the cooldown was skipped"
    eid = breach["envelope"]["event_id"]
    wait_until(lambda: any("cooldown until" in line and eid in line for r in REPLICAS
                           for line in log(running, r).splitlines()), "the cooldown skip logged")
    exactly_once(running, model)


def test_every_service_alive_at_the_end(running) -> None:
    assert running.dead_services() == []
