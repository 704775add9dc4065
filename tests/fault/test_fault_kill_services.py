"""kill -9 each service in the middle of its work, with the other two running, and restart it: every trigger
still becomes exactly one training run, every service is alive at the end.

- ingest: while dataset versions stream in (some land while it is down);
- orchestrator: while a training job runs (held open by the stub trainer), and new data lands while it is down;
- monitor: in the middle of a degrading metric stream (the rest is sent while it is down).
"""

from __future__ import annotations

import math
import signal
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from conftest import ARTIFACTS, assert_one_run_per_trigger, jsonl, wait_until
from flywheel.events import now_ms
from flywheel.s3json import get_json
from flywheel_dev.datasets import upload_dataset
from flywheel_dev.harness.monitor import metric_event

BUCKET = "flywheel-data"
# Known before the platform starts (its environment names it); the stub trainer waits on files in it.
HOLD = Path(tempfile.gettempdir()) / f"flywheel-fault-hold-{uuid.uuid4().hex[:8]}"
PLATFORM_ENV = {"FLYWHEEL_FAULT_TRAIN_HOLD": str(HOLD)}
RUN = uuid.uuid4().hex[:6]


@pytest.fixture(scope="module", autouse=True)
def hold_dir():
    HOLD.mkdir()
    yield HOLD
    for path in HOLD.iterdir():
        path.unlink()
    HOLD.rmdir()


def upload(running, model: str, version: str = "v1", parts: int = 3) -> str:
    return upload_dataset(running.s3(), BUCKET, model, version, [jsonl(4, i) for i in range(parts)]).prefix


def restart_after_kill(running, name: str) -> None:
    proc = running.platform.procs[name]
    proc.kill(signal.SIGKILL)
    assert proc.proc.returncode == -signal.SIGKILL
    proc.start()
    proc.wait_healthy(timeout=90)


def job_state(running, run_id: str) -> str:
    try:
        status = get_json(running.s3(), ARTIFACTS, f"jobs/{run_id}/status.json") or {}
    except Exception:  # moto busy while a service is killed: try again on the next poll
        return ""
    return status.get("state", "")


def test_kill_9_ingest_mid_stream(running) -> None:
    models = [f"fault-ingest-{RUN}-{i}" for i in range(4)]
    uploader = threading.Thread(target=lambda: [upload(running, m) for m in models])
    uploader.start()
    running.timeline.wait_for("DatasetVersionReady", lambda s: s.get("model_id") in models, timeout=60)
    restart_after_kill(running, "ingest")  # the rest of the stream lands around the kill
    uploader.join()
    for model in models:
        running.timeline.wait_for(
            "TrainingRunStarted", lambda s, m=model: s.get("model_id") == m, timeout=120
        )
    for model in models:
        ready = running.timeline.matching("DatasetVersionReady", lambda s, m=model: s.get("model_id") == m)
        # A kill between the broker's ack and ingest's done-record may repeat an event, never with other content.
        assert len({(s.get("dataset_version_id"), s.get("row_count")) for s in ready}) == 1
        assert ready[0].get("row_count") == 12
        [started] = assert_one_run_per_trigger(running, lambda s, m=model: s.get("model_id") == m)
        assert started.get("dataset_version_id") == ready[0].get("dataset_version_id")
    assert running.timeline.matching("DatasetRejected", lambda s: s.get("model_id") in models) == []


def test_kill_9_orchestrator_mid_run(running, hold_dir: Path) -> None:
    held, late = f"fault-orch-{RUN}", f"fault-orch-late-{RUN}"
    (hold_dir / held).touch()
    upload(running, held)
    [started] = running.timeline.wait_for(
        "TrainingRunStarted", lambda s: s.get("model_id") == held, timeout=60
    )
    run_id = started.get("run_id")
    wait_until(lambda: job_state(running, run_id) == "InProgress", "the held job in progress")
    proc = running.platform.procs["orchestrator"]
    proc.kill(signal.SIGKILL)
    upload(running, late)  # a trigger that arrives while the orchestrator is down
    running.timeline.wait_for("DatasetVersionReady", lambda s: s.get("model_id") == late, timeout=60)
    proc.start()
    proc.wait_healthy(timeout=90)
    (hold_dir / held).unlink()  # the job, which outlived the orchestrator, may now finish
    for model in (held, late):
        running.timeline.wait_for(
            "ModelVersionRegistered", lambda s, m=model: s.get("model_id") == m, timeout=120
        )
        assert_one_run_per_trigger(running, lambda s, m=model: s.get("model_id") == m)
    [registered] = running.timeline.matching("ModelVersionRegistered", lambda s: s.get("model_id") == held)
    assert registered.get("run_id") == run_id
    assert running.job_records(run_id) == ["job.json", "status.json"]  # one job, never started again
    assert "resuming run" in running.log("orchestrator")


def test_kill_9_monitor_mid_stream(running, hold_dir: Path) -> None:
    model = f"fault-orch-{RUN}"  # registered by the previous test
    [registered] = running.timeline.wait_for("ModelVersionRegistered", lambda s: s.get("model_id") == model)
    version, publisher, start = registered.get("model_version"), running.publisher(), now_ms()
    values = [0.93] * 10 + [0.62] * 70

    def send(indexes: range) -> None:
        for i in indexes:
            event = metric_event(model, values[i], 200, at_ms=start + i * 100, model_version=version)
            publisher.publish("model.metrics-observed", event, wait=False)
        publisher.flush()

    # The retrain stays in progress until the stream is handled: a version registered meanwhile would reset the
    # monitor's rule state and let the replayed stream of the old version breach again (docs/reliability.md).
    (hold_dir / model).touch()
    send(range(0, 30))
    running.platform.procs["monitor"].kill(signal.SIGKILL)
    send(range(30, len(values)))  # the rest of the stream while the monitor is down
    proc = running.platform.procs["monitor"]
    proc.start()
    proc.wait_healthy(timeout=90)
    settle(running, model, version)
    requests = running.timeline.matching("RetrainRequested", lambda s: s.get("model_id") == model)
    # One breach, one request: a kill between the broker's ack and the outbox clearing resends the same
    # event id, which the orchestrator drops (docs/decisions/0015-monitor-scale-out.md).
    assert len({r.record["envelope"]["event_id"] for r in requests}) == 1, requests
    request = requests[0]
    assert request.get("trigger") == "METRIC_BREACH" and request.get("observed_value") < request.get(
        "threshold"
    )
    running.timeline.wait_for(
        "TrainingRunStarted",
        lambda s: s.get("model_id") == model and s.get("trigger") == "METRIC_BREACH",
        timeout=60,
    )
    assert_one_run_per_trigger(running, lambda s: s.get("model_id") == model)


def settle(running, model: str, version: str) -> None:
    """A NaN window on the same key is dead-lettered only once every earlier event of the model was handled."""
    marker = metric_event(model, math.nan, 200, model_version=version)
    running.publisher().publish("model.metrics-observed", marker)
    eid = marker["envelope"]["event_id"]
    running.timeline.wait_for(
        "DeadLetter",
        lambda s: s.topic == "monitor.dead-letter" and eid.encode() in (s.get("original_value") or b""),
        timeout=120,
    )


def test_every_service_alive_at_the_end(running) -> None:
    assert running.dead_services() == []
