"""Partition ownership, fenced effects and durable per-model state (docs/decisions/0009), on moto's S3 API.

Two supervisors in one process stand for two workers: each has its own state, leases and workflows, and they
share only S3 and the event sink, as two pods share S3 and the broker.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, namedtuple
from typing import Any

import boto3
import pytest
from aiokafka.partitioner import DefaultPartitioner
from moto import mock_aws

from flywheel.s3json import get_json, put_json
from flywheel_orchestrator import ids
from flywheel_orchestrator.core import ModelState, Orchestration
from flywheel_orchestrator.domain import DatasetRef, RunSpec, Trigger
from flywheel_orchestrator.launchers.base import Interrupted
from flywheel_orchestrator.ownership import Ownership, partition_of
from flywheel_orchestrator.policy import Kind, TriggerPolicy
from flywheel_orchestrator.replay import snapshots_from_log
from flywheel_orchestrator.runs import Supervisor
from flywheel_orchestrator.statestore import (
    Snapshot,
    StateStore,
    run_key,
    state_from_dict,
    state_key,
    state_to_dict,
)
from flywheel_orchestrator.taskcontext import TaskContext

BUCKET = "flywheel-artifacts"
M = "support-intent"
TP = namedtuple("TP", "topic partition")


# --- pure parts ------------------------------------------------------------------------------------------------

def test_partition_of_is_kafkas_default_partitioner_for_the_key():
    partitioner = DefaultPartitioner()
    for model in ("support-intent", "m", "fault-orch-1a2b3c", "ünïcode", "x" * 200):
        assert partition_of(model, 4) == partitioner(model.encode(), [0, 1, 2, 3], [0, 1, 2, 3])


def test_ownership_counts_only_the_model_topics_and_nothing_between_revoke_and_assign():
    own = Ownership(["dataset.version-ready", "retrain.requested"], partitions=4)
    assert not own.owns(M)  # before the first assignment
    mine = partition_of(M, 4)
    own.assign([TP("dataset.version-ready", mine), TP("other", (mine + 1) % 4)])
    assert own.owns(M) and own.owned == {mine}
    generation = own.generation
    own.revoke()
    assert not own.owns(M) and own.generation == generation + 1


def dataset(n: int, rows: int = 10, model: str = M) -> DatasetRef:
    return DatasetRef(model, f"ds{n}", f"s3://flywheel-data/manifests/{model}/ds{n}.json", rows,
                      ((f"datasets/{model}/v{n}/a.jsonl", f"etag{n}", rows),), 1_000)


def new_data(n: int, model: str = M) -> Trigger:
    return Trigger(Kind.NEW_DATA, model, f"e-data-{n}-{model}",
                   {"event_id": f"e-data-{n}-{model}", "correlation_id": f"c{n}", "occurred_at": 5}, 10,
                   dataset(n, model=model))


def retrain(event: str, kind: Kind = Kind.METRIC_BREACH, model: str = M) -> Trigger:
    return Trigger(kind, model, event, {"event_id": event, "correlation_id": event}, 10, evidence={"rule": "r"})


def test_model_state_round_trips_through_its_document():
    orch = Orchestration(TriggerPolicy(debounce_s=5, max_concurrent_runs=1))
    orch.on_trigger(new_data(1), 100)
    orch.on_tick(10_000)  # ds1 launches
    orch.on_trigger(new_data(2), 20_000)  # debounced
    orch.on_trigger(retrain("b1"), 20_000)  # queued behind the run
    st = orch.state(M)
    assert st.pending is not None and st.queued is not None and st.in_flight
    doc = state_to_dict(st)
    again = state_from_dict(doc)
    assert state_to_dict(again) == doc
    assert again.queued == st.queued and again.pending == st.pending and again.in_flight == st.in_flight
    assert again.attempts == st.attempts and again.last_launch_ms == st.last_launch_ms


def test_migration_keeps_untrained_versions_and_runs_in_flight():
    def ready(version: str) -> tuple[str, str, dict]:
        return ("dataset.version-ready", "flywheel.DatasetVersionReady", {
            "envelope": {"event_id": f"e-{version}", "correlation_id": version, "occurred_at": 1000},
            "model_id": M, "dataset_version_id": version, "manifest_uri": f"s3://d/{version}.json",
            "row_count": 10, "objects": [{"key": f"{version}/a", "etag": version, "rows": 10}],
            "first_object_at": 900})

    snaps = snapshots_from_log([ready("v1")])
    st = snaps[M].state
    assert st.pending is not None and st.pending.dataset.dataset_version_id == "v1" and st.pending_due_ms == 0


# --- the supervisor on moto S3 -----------------------------------------------------------------------------------

class Sink:
    """The broker as the workers see it: every published record, in order; can be made to fail."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    async def __call__(self, topic: str, record: dict[str, Any], acked: bool = False) -> None:
        if self.fail:
            raise RuntimeError("broker away")
        self.records.append((topic, record))

    def count(self, topic: str) -> Counter:
        return Counter(r.get("run_id") or r.get("model_version") for t, r in self.records if t == topic)


class Launcher:
    name = "local"

    def __init__(self) -> None:
        self.stopped: list[str] = []

    def stop(self, job_name: str) -> None:
        self.stopped.append(job_name)


class Jobs:
    """Training jobs shared by the workers (as SageMaker or the local runner's S3 records are): a job runs until
    released; each worker's workflow waits for it and stops waiting when its stop event is set."""

    def __init__(self) -> None:
        self.created: Counter = Counter()
        self.done: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def finish(self, run_id: str) -> None:
        with self.lock:
            self.done.setdefault(run_id, threading.Event()).set()


class Executor:
    def __init__(self, jobs: Jobs, context: TaskContext, hold: bool = False) -> None:
        self.jobs, self.context, self.hold = jobs, context, hold
        self.executed: list[str] = []

    def execute(self, spec: RunSpec, hyperparameters: dict[str, str]) -> dict[str, Any]:
        self.executed.append(spec.run_id)
        stop = self.context.stop_event(spec.run_id)
        with self.jobs.lock:
            if spec.run_id not in self.jobs.created:  # the launcher's start(): a no-op for an existing name
                self.jobs.created[spec.run_id] += 1
            done = self.jobs.done.setdefault(spec.run_id, threading.Event())
        if not self.hold:
            done.set()
        while not done.wait(0.02):
            if stop.is_set():
                raise Interrupted(spec.run_id)
        return {"artifact_uri": f"s3://{BUCKET}/models/{spec.model_id}/{spec.run_id}/model.tar.gz",
                "metrics": {"accuracy": 0.9}, "baseline_metrics": {"accuracy": 0.2}, "reference_distribution": {}}


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def worker(s3: Any, sink: Sink, jobs: Jobs, name: str, hold: bool = False, **policy: Any) -> Supervisor:
    context = TaskContext(s3=s3, launcher=Launcher(), artifact_bucket=BUCKET)
    orch = Orchestration(TriggerPolicy(**{"debounce_s": 0, **policy}))
    sup = Supervisor(orch, Executor(jobs, context, hold), context, sink, {"epochs": "1"},
                     store=StateStore(s3, BUCKET), ownership=Ownership(["dataset.version-ready"]), worker_id=name)
    sup.own_all()
    sup.migrated.set()
    return sup


async def until(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        await asyncio.sleep(0.02)


def doc(s3: Any, model: str = M) -> dict[str, Any]:
    return get_json(s3, BUCKET, state_key(model))


def test_a_run_is_claimed_written_then_announced_and_reported_once(s3):
    sink, jobs = Sink(), Jobs()

    async def main() -> None:
        a = worker(s3, sink, jobs, "a")
        assert await a.on_trigger(new_data(1))
        await until(lambda: sink.count("model.version-registered"), "registration")
        await until(lambda: not doc(s3)["state"]["in_flight"] and not doc(s3)["outbox"], "the run's end done")

    asyncio.run(main())
    run_id = ids.run_id(M, "ds1", "NEW_DATA", 1)
    assert sink.count("training.run-started") == {run_id: 1}
    assert sink.count("training.run-succeeded") == {run_id: 1}
    started = next(r for t, r in sink.records if t == "training.run-started")
    again = next(r for t, r in sink.records if t == "training.run-succeeded")
    assert again["envelope"]["causation_id"] == started["envelope"]["event_id"]
    claim = get_json(s3, BUCKET, run_key(run_id))
    assert claim["trigger_event_id"] == "e-data-1-" + M and claim["owner"] == "a"
    state = doc(s3)
    assert state["owner"] == "a" and state["epoch"] == 1 and state["outbox"] == []
    assert run_id in state["state"]["ended"] and state["state"]["trained_versions"] == ["ds1"]


def test_two_live_workers_for_one_model_never_duplicate_an_event_or_a_job(s3):
    """Both workers believe they own the model (rollout overlap, a missed heartbeat). Whoever writes last owns
    it: the other's writes are fenced out, it lets the model go, and when it touches the model again it
    decides on the state the other wrote, never on its own older memory."""
    sink, jobs = Sink(), Jobs()
    run1, run2 = ids.run_id(M, "ds1", "NEW_DATA", 1), ids.run_id(M, "ds2", "NEW_DATA", 1)

    async def main() -> None:
        a = worker(s3, sink, jobs, "a", hold=True)
        b = worker(s3, sink, jobs, "b", hold=True)
        await a.on_trigger(new_data(1))
        await until(lambda: jobs.created[run1] == 1, "A's job created")
        await b.with_model(M, b._flush_step)  # B takes the model (epoch 2) and re-attaches to A's run
        await until(lambda: b.executor.executed == [run1], "B re-attached")
        jobs.finish(run1)
        await until(lambda: sink.count("model.version-registered"), "one registration")
        await until(lambda: M not in a.leases, "A let go once fenced")
        await b.on_trigger(new_data(2))  # B's era: run 2
        await until(lambda: jobs.created[run2] == 1, "B's job for run 2")
        assert await a.on_trigger(new_data(2))  # redelivered to A: A takes the model back, from B's state
        await until(lambda: a.executor.executed[-1:] == [run2], "A re-attached to run 2")
        jobs.finish(run2)
        await until(lambda: sink.count("model.version-registered")[run2] == 1, "run 2 registered")
        await asyncio.sleep(0.3)
        b.shutdown(), a.shutdown()

    asyncio.run(main())
    assert jobs.created == {run1: 1, run2: 1}
    assert sink.count("training.run-started") == {run1: 1, run2: 1}
    assert sink.count("training.run-succeeded") == {run1: 1, run2: 1}
    assert sink.count("model.version-registered") == {run1: 1, run2: 1}
    assert doc(s3)["owner"] == "a" and doc(s3)["epoch"] == 3


def test_a_debounced_and_a_queued_trigger_survive_a_restart(s3):
    sink, jobs = Sink(), Jobs()

    async def main() -> None:
        a = worker(s3, sink, jobs, "a", hold=True, debounce_s=60)
        await a.on_trigger(new_data(1))
        assert doc(s3)["state"]["pending"]["event_id"] == "e-data-1-" + M
        a.shutdown()
        # the next worker loads the pending trigger and launches it once its window passed
        b = worker(s3, sink, jobs, "b", hold=True, debounce_s=0.0, supersede=False)
        await b.with_model(M, b._flush_step)
        b.leases[M].snapshot.state.pending_due_ms = 0
        await b.tick()
        await until(lambda: sink.count("training.run-started"), "the debounced version launched by B")
        await b.on_trigger(new_data(2))  # queued behind the run (max_concurrent_runs 1, no supersede)
        assert doc(s3)["state"]["queued"]["event_id"] == new_data(2).event_id
        b.shutdown()
        await asyncio.sleep(0.2)

    asyncio.run(main())
    assert [r["run_id"] for t, r in sink.records if t == "training.run-started"] == [ids.run_id(M, "ds1", "NEW_DATA")]


def test_shutdown_does_not_launch_a_queued_trigger(s3):
    sink, jobs = Sink(), Jobs()

    async def main() -> None:
        a = worker(s3, sink, jobs, "a", hold=True, supersede=False)
        await a.on_trigger(new_data(1))
        await a.on_trigger(new_data(2))  # queued
        await until(lambda: a.handles, "the run's workflow")
        a.shutdown()  # SIGTERM: the workflow stops waiting; its run must not look ended
        await until(lambda: not a.handles, "the workflow returned")

    asyncio.run(main())
    assert len(sink.count("training.run-started")) == 1
    state = doc(s3)["state"]
    assert state["queued"]["event_id"] == new_data(2).event_id and len(state["in_flight"]) == 1


def test_a_failing_publish_leaves_no_phantom_run_and_is_retried_from_the_outbox(s3):
    sink, jobs = Sink(), Jobs()

    async def main() -> None:
        a = worker(s3, sink, jobs, "a")
        sink.fail = True
        with pytest.raises(RuntimeError, match="broker away"):
            await a.on_trigger(new_data(1))
        state = doc(s3)
        assert state["outbox"][0]["topic"] == "training.run-started"  # written, not sent
        assert a.handles == {} and jobs.created == {}  # no workflow before its Started is out
        sink.fail = False
        await a.tick()  # reloads the model and finishes its outbox
        await until(lambda: sink.count("model.version-registered"), "the run completes")

    asyncio.run(main())
    assert len(sink.count("training.run-started")) == 1


def test_a_run_id_claimed_in_another_era_is_never_reused(s3):
    sink, jobs = Sink(), Jobs()
    taken = ids.run_id(M, "ds1", "NEW_DATA", 1)
    put_json(s3, BUCKET, run_key(taken), {"run_id": taken, "trigger_event_id": "an-older-trigger"})

    async def main() -> None:
        a = worker(s3, sink, jobs, "a")
        await a.on_trigger(new_data(1))
        await until(lambda: sink.count("model.version-registered"), "the run completes")

    asyncio.run(main())
    assert list(sink.count("training.run-started")) == [ids.run_id(M, "ds1", "NEW_DATA", 2)]
    assert taken not in jobs.created


def test_supersede_does_not_wait_behind_busy_workflow_threads(s3):
    sink, jobs = Sink(), Jobs()

    async def main() -> None:
        a = worker(s3, sink, jobs, "a", hold=True)
        a.pool._max_workers = 1  # every workflow thread busy
        await a.on_trigger(new_data(1))
        await until(lambda: a.handles, "run 1 holds the only workflow thread")
        started = time.monotonic()
        await asyncio.wait_for(a.on_trigger(new_data(2)), timeout=5)
        assert time.monotonic() - started < 5
        assert a.launcher.stopped == [ids.run_id(M, "ds1", "NEW_DATA")]
        a.shutdown()
        await asyncio.sleep(0.1)

    asyncio.run(main())
    assert len(sink.count("training.run-superseded")) == 1


def test_a_worker_decides_only_for_models_on_its_partitions(s3):
    sink, jobs = Sink(), Jobs()
    other = next(f"m{i}" for i in range(100) if partition_of(f"m{i}") != partition_of(M))

    async def main() -> None:
        a = worker(s3, sink, jobs, "a")
        await a.on_assigned([TP("dataset.version-ready", partition_of(M))])
        assert await a.on_trigger(new_data(1))
        assert not await a.on_trigger(new_data(1, model=other))
        await until(lambda: sink.count("model.version-registered"), "the owned model's run")
        await a.on_revoked()
        assert not await a.on_trigger(new_data(2))  # between revoke and assign: nothing is owned
        await a.on_assigned([TP("dataset.version-ready", partition_of(other))])
        assert M not in a.leases

    asyncio.run(main())
    assert {r["model_id"] for _, r in sink.records} == {M}
    assert doc(s3, other) is None


def test_snapshot_refuses_a_newer_format():
    with pytest.raises(ValueError, match="newer"):
        Snapshot.from_dict({"format": 99, "model_id": M})
    assert Snapshot.from_dict({"model_id": M}).state.in_flight == ModelState().in_flight


# --- the agent's handling of one record ----------------------------------------------------------------------

class Message:
    def __init__(self, model: str, topic: str = "dataset.version-ready", partition: int | None = None) -> None:
        self.topic, self.offset, self.key, self.value = topic, 7, model.encode(), b"v"
        self.partition = partition_of(model) if partition is None else partition


class Event:
    name = "flywheel.RetrainRequested"

    def __init__(self, model: str) -> None:
        self.record = {"envelope": {"event_id": f"ev-{model}", "correlation_id": "c"}, "model_id": model,
                       "trigger": "MANUAL"}


class DeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, BaseException]] = []

    async def send(self, source: Any, error: BaseException) -> None:
        self.sent.append((source, error))


class FlakySupervisor:
    """A supervisor whose step fails `failures` times (S3 or the broker away), then decides."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls, self.stopping = failures, 0, False

    async def on_trigger(self, trigger: Trigger) -> bool:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("S3 is away")
        return True


async def no_sleep(_: float) -> None:
    return None


@pytest.mark.parametrize(("failures", "dead"), [(0, 0), (3, 0), (99, 1)])
def test_a_failing_step_is_retried_at_the_record_then_dead_lettered_never_raised(failures, dead):
    from flywheel_orchestrator.handlers import TRIGGER_ATTEMPTS, handle
    from flywheel_orchestrator.settings import OrchestratorSettings

    supervisor, letters = FlakySupervisor(failures), DeadLetters()
    asyncio.run(handle(Message(M, "retrain.manual-requested"), Event(M), OrchestratorSettings(), supervisor,
                       letters, sleep=no_sleep))
    assert supervisor.calls == min(failures + 1, TRIGGER_ATTEMPTS)
    assert len(letters.sent) == dead
    if dead:
        assert "S3 is away" in str(letters.sent[0][1])


def test_a_record_on_another_partition_than_its_keys_is_dead_lettered_not_decided():
    from flywheel_orchestrator.handlers import NotOwned, handle
    from flywheel_orchestrator.settings import OrchestratorSettings

    supervisor, letters = FlakySupervisor(0), DeadLetters()
    wrong = (partition_of(M) + 1) % 4
    asyncio.run(handle(Message(M, "retrain.manual-requested", wrong), Event(M), OrchestratorSettings(), supervisor,
                       letters, sleep=no_sleep))
    assert supervisor.calls == 0
    [(source, error)] = letters.sent
    assert isinstance(error, NotOwned) and source.partition == wrong and "partitioner" in str(error)


def test_a_trigger_arriving_during_shutdown_is_never_acknowledged():
    from flywheel_orchestrator.handlers import handle
    from flywheel_orchestrator.settings import OrchestratorSettings

    supervisor, letters = FlakySupervisor(0), DeadLetters()
    supervisor.stopping = True

    async def main() -> None:
        with pytest.raises(TimeoutError):  # it waits to be cancelled with the agent, never returns
            await asyncio.wait_for(handle(Message(M, "retrain.manual-requested"), Event(M),
                                          OrchestratorSettings(), supervisor, letters, sleep=no_sleep), 0.2)

    asyncio.run(main())
    assert supervisor.calls == 0 and letters.sent == []
