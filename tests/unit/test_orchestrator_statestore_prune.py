"""The state document stays bounded (statestore.prune) without ever reusing a job name, and a decision costs
as few S3 writes as the fence allows (runs.Supervisor, docs/decisions/0009-orchestrator-scale-out.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
import pytest
from moto import mock_aws

from flywheel.s3json import get_json
from flywheel_orchestrator import ids, statestore
from flywheel_orchestrator.core import Orchestration
from flywheel_orchestrator.domain import DatasetRef, Launch, RunSpec, Trigger
from flywheel_orchestrator.launchers.base import TrainingFailed
from flywheel_orchestrator.ownership import Ownership
from flywheel_orchestrator.policy import Kind, TriggerPolicy
from flywheel_orchestrator.runs import Supervisor
from flywheel_orchestrator.statestore import Snapshot, StateStore, prune, state_key
from flywheel_orchestrator.taskcontext import TaskContext

pytestmark = pytest.mark.unit
BUCKET = "flywheel-artifacts"
M = "prune-model"


def dataset(version: str) -> DatasetRef:
    return DatasetRef(model_id=M, dataset_version_id=version, manifest_uri=f"s3://d/{version}.json", row_count=5,
                      objects=((f"{version}/part-0", f"etag-{version}", 5),))


def new_data(version: str, event: str | None = None) -> Trigger:
    event = event or f"e-{version}"
    return Trigger(kind=Kind.NEW_DATA, model_id=M, event_id=event, causation=causation(event), received_at_ms=0,
                   dataset=dataset(version))


def manual(n: int) -> Trigger:
    return Trigger(kind=Kind.MANUAL, model_id=M, event_id=f"e-manual-{n}", causation=causation(f"e-manual-{n}"),
                   received_at_ms=0)


def causation(event: str) -> dict[str, Any]:
    return {"event_id": event, "correlation_id": event, "occurred_at": 0}


def reloaded(orch: Orchestration, keep: int) -> None:
    """What a save and the next owner's load do: prune, to JSON and back."""
    snap = Snapshot(M, orch.state(M))
    prune(snap.state, keep)
    orch.models[M] = Snapshot.from_dict(snap.to_dict()).state


def launch_and_end(orch: Orchestration, trigger: Trigger, now: int) -> RunSpec:
    launched = [d for d in orch.on_trigger(trigger, now) if isinstance(d, Launch)]
    assert len(launched) == 1, orch.state(M)
    orch.on_run_ended(M, launched[0].spec.run_id, now)
    return launched[0].spec


def test_pruning_bounds_the_document_and_keeps_what_decisions_read():
    orch = Orchestration(TriggerPolicy(debounce_s=0, cooldown_s=0))
    for i in range(20):
        launch_and_end(orch, new_data(f"v{i}"), now=i)
        reloaded(orch, keep=4)
    st = orch.state(M)
    assert len(st.ended) == 4 and len(st.seen_triggers) == 4 and len(st.trained_versions) == 4
    assert list(st.trained_versions) == ["v16", "v17", "v18", "v19"]  # the newest, oldest first
    assert {v for v, _ in st.attempts} == {"v16", "v17", "v18", "v19"}
    assert st.latest.dataset_version_id == "v19" and st.last_launch_ms[Kind.NEW_DATA] == 19
    # what is kept still decides: the newest versions are not trained twice, a redelivered trigger is a duplicate
    assert "already trained" in orch.on_trigger(new_data("v18", "e-again"), 30)[0].reason
    assert "duplicate" in orch.on_trigger(new_data("v19"), 30)[0].reason


def test_attempt_numbers_never_reuse_an_old_job_name_after_pruning():
    """Manual retrains on one dataset version: each is the next attempt, however much was pruned between."""
    orch = Orchestration(TriggerPolicy(debounce_s=0))
    names = [launch_and_end(orch, new_data("v1"), now=0).run_id]
    for n in range(12):
        reloaded(orch, keep=2)
        names.append(launch_and_end(orch, manual(n), now=n + 1).run_id)
    assert len(set(names)) == len(names) == 13
    assert names[1:] == [ids.run_id(M, "v1", "MANUAL", a) for a in range(1, 13)]
    assert len(orch.state(M).ended) == 3  # the 2 kept at the last save, and the run ended since


def test_runs_in_flight_and_their_triggers_are_never_pruned():
    orch = Orchestration(TriggerPolicy(debounce_s=0, max_concurrent_runs=1, supersede=False))
    spec = next(d.spec for d in orch.on_trigger(new_data("v0"), 0) if isinstance(d, Launch))
    for i in range(1, 6):  # more data while v0 runs: queued, coalesced
        orch.on_trigger(new_data(f"v{i}"), i)
    reloaded(orch, keep=0)
    st = orch.state(M)
    assert list(st.in_flight) == [spec.run_id] and spec.trigger_event_id in st.seen_triggers
    assert st.queued is not None and st.queued.dataset.dataset_version_id == "v5"
    assert st.attempts[("v0", Kind.NEW_DATA)] == 1 and "v0" in st.trained_versions


# --- the supervisor on moto S3: claims stand behind pruned counters; writes per decision ------------------------

class Sink:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, topic: str, record: dict[str, Any], acked: bool = False) -> None:
        self.records.append((topic, record))

    def started(self) -> list[str]:
        return [r["run_id"] for t, r in self.records if t == "training.run-started"]


class Launcher:
    name = "local"

    def stop(self, job_name: str) -> None:
        pass


class FailsAtOnce:
    def execute(self, spec: RunSpec, hyperparameters: dict[str, str]) -> Any:
        raise TrainingFailed("exited at once")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def supervisor(s3: Any, sink: Sink) -> Supervisor:
    context = TaskContext(s3=s3, launcher=Launcher(), artifact_bucket=BUCKET)
    sup = Supervisor(Orchestration(TriggerPolicy(debounce_s=0)), FailsAtOnce(), context, sink, {},
                     store=StateStore(s3, BUCKET), ownership=Ownership(["dataset.version-ready"]), worker_id="w")
    sup.own_all()
    sup.migrated.set()
    return sup


def calls(s3: Any) -> list[str]:
    seen: list[str] = []
    s3.meta.events.register("before-call.s3", lambda model, **_: seen.append(model.name))
    return seen


async def settled(sup: Supervisor) -> None:
    """Every run's workflow ended and its end was written."""
    for _ in range(500):
        if not sup.handles and not any(lease.snapshot.outbox for lease in sup.leases.values()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("runs did not end")


def test_a_version_whose_counter_was_pruned_gets_a_fresh_name_from_the_claims(s3, monkeypatch):
    monkeypatch.setattr(statestore, "KEEP_FINISHED", 2)
    sink = Sink()

    async def main() -> None:
        sup = supervisor(s3, sink)
        for i in range(5):
            assert await sup.on_trigger(new_data(f"v{i}"))
            await settled(sup)
        doc = get_json(s3, BUCKET, state_key(M))["state"]
        assert "v0" not in doc["trained_versions"] and not any(v == "v0" for v, _, _ in doc["attempts"])
        sup.release(M, "test: the next touch loads the pruned document")
        assert await sup.on_trigger(new_data("v0", "e-v0-replayed"))  # an old version announced again
        await settled(sup)

    asyncio.run(main())
    started = sink.started()
    assert len(started) == len(set(started)) == 6
    assert started[-1] == ids.run_id(M, "v0", "NEW_DATA", 2)  # attempt 1's name is claimed: skipped, not reused


def test_a_first_decision_writes_state_once_before_its_started_and_a_no_op_writes_nothing(s3):
    sink = Sink()

    async def main() -> list[str]:
        sup = supervisor(s3, sink)
        seen = calls(s3)
        assert await sup.on_trigger(new_data("v1"))
        first = list(seen)
        await settled(sup)
        sup.release(M, "test")
        seen.clear()
        assert await sup.on_trigger(new_data("v1", "e-v1"))  # a redelivered trigger: a duplicate, no change
        return first + ["|"] + list(seen)

    got = asyncio.run(main())
    # load; claim the run; state + Started in the outbox (takes the model: epoch 1); outbox emptied
    assert got == ["GetObject", "PutObject", "PutObject", "PutObject", "|", "GetObject"]
    doc = get_json(s3, BUCKET, state_key(M))
    assert doc["epoch"] == 1 and doc["owner"] == "w" and sink.started() == [ids.run_id(M, "v1", "NEW_DATA", 1)]
