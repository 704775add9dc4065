"""The Flyte remote engine against a fake Flyte admin (a real gRPC server on loopback that records the calls).

The workflow is registered with the registration command's code (flyteregistry.py), then the real remote
executor, and the real run supervisor around it, drive it as flyteadmin would be driven: the launch creates
the execution with the run's inputs under a name derived from the run, polling reports the end, a second
launch re-attaches, a superseded run's execution is terminated, and the run events carry the execution id
(docs/decisions/0014-flyte-remote.md).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import boto3
import pytest
from flytekit import FlyteContextManager
from flytekit.configuration import Config
from flytekit.core.type_engine import TypeEngine
from flytekit.exceptions.system import FlyteSystemException
from flytekit.models.literals import LiteralMap
from flytekit.remote import FlyteRemote
from moto import mock_aws

from flywheel.codec import AvroCodec
from flywheel.registry import EmbeddedRegistry
from flywheel.schemas import SchemaSet
from flywheel.settings import REPO_SCHEMA_DIR
from flywheel_orchestrator import flyteregistry, ids
from flywheel_orchestrator.core import Orchestration
from flywheel_orchestrator.domain import DatasetRef, RunSpec, Trigger
from flywheel_orchestrator.executors import (
    LAUNCH_PLAN,
    FlyteRemoteWorkflowExecutor,
    FlyteTarget,
    execution_name,
    workflow_inputs,
)
from flywheel_orchestrator.launchers.base import Interrupted, TrainingFailed
from flywheel_orchestrator.ownership import Ownership
from flywheel_orchestrator.policy import Kind, TriggerPolicy
from flywheel_orchestrator.runs import Supervisor
from flywheel_orchestrator.statestore import StateStore
from flywheel_orchestrator.taskcontext import TaskContext
from flywheel_orchestrator.workflow import Registration, training_workflow
from support.fake_flyte_admin import Phase, running_fake_admin

pytestmark = pytest.mark.integration

PROJECT, DOMAIN, IMAGE = "flywheel", "production", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/flywheel-orchestrator:abc1234"
BUCKET, M = "flywheel-artifacts", "flyte-remote-model"
TASK_ENV = {"FLYWHEEL_ARTIFACT_BUCKET": BUCKET, "FLYWHEEL_LAUNCHER": "sagemaker", "FLYWHEEL_WEB_PORT": "6066"}


@pytest.fixture
def admin():
    with running_fake_admin() as (fake, endpoint):
        remote = FlyteRemote(Config.for_endpoint(endpoint, insecure=True), default_project=PROJECT,
                             default_domain=DOMAIN)
        flyteregistry.register(remote, IMAGE, flyteregistry.version_of(IMAGE),
                               flyteregistry.task_environment(TASK_ENV))
        yield fake, endpoint


def spec(n: int, model: str = M) -> RunSpec:
    return RunSpec(run_id=ids.run_id(model, f"ds{n}", "NEW_DATA", 1), model_id=model, dataset_version_id=f"ds{n}",
                   kind=Kind.NEW_DATA, manifest_uri=f"s3://flywheel-data/manifests/{model}/ds{n}.json",
                   trigger_event_id=f"e{n}", correlation_id=f"c{n}")


def registration(run_id: str) -> Registration:
    return Registration(f"s3://{BUCKET}/models/{M}/{run_id}/model.tar.gz", {"accuracy": 0.9}, {"accuracy": 0.2},
                        job={"job_arn": f"arn:aws:sagemaker:eu-west-1:123456789012:training-job/{run_id}"})


def outputs(value: Registration) -> Any:
    """The workflow's output as its register task would write it (flytekit's own encoding)."""
    ctx = FlyteContextManager.current_context()
    literal = TypeEngine.to_literal(ctx, value, Registration, TypeEngine.to_literal_type(Registration))
    return LiteralMap({"o0": literal}).to_flyte_idl()


def wait_for(check, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(0.02)


def in_thread(fn, *args) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            box["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def test_registration_creates_tasks_workflow_and_the_active_launch_plan_with_the_image_and_settings(admin):
    fake, _ = admin
    assert fake.methods()[:7] == ["RegisterProject"] + ["CreateTask"] * 4 + ["CreateWorkflow", "CreateLaunchPlan"]
    assert fake.projects == {PROJECT}
    assert "UpdateLaunchPlan" in fake.methods()
    tasks = fake.requests("CreateTask")
    assert {t.id.version for t in tasks} == {"abc1234"}
    for task in tasks:
        container = task.spec.template.container
        assert container.image == IMAGE and container.args[0] == "pyflyte-execute"
        env = {kv.key: kv.value for kv in container.env}
        assert env == {"FLYWHEEL_ARTIFACT_BUCKET": BUCKET, "FLYWHEEL_LAUNCHER": "sagemaker"}  # no service-only ones
    (plan,) = fake.requests("CreateLaunchPlan")
    assert plan.id.name == LAUNCH_PLAN and fake.active[(PROJECT, DOMAIN, LAUNCH_PLAN)] == "abc1234"


def test_registering_again_is_a_no_op_and_a_new_version_becomes_the_active_one(admin):
    fake, endpoint = admin
    remote = FlyteRemote(Config.for_endpoint(endpoint, insecure=True), default_project=PROJECT, default_domain=DOMAIN)
    env = flyteregistry.task_environment(TASK_ENV)
    flyteregistry.register(remote, IMAGE, "abc1234", env)  # the same version again (a rebuilt cache, a re-run)
    assert len(fake.tasks) == 4 and len(fake.launch_plans) == 1
    flyteregistry.register(remote, IMAGE.replace("abc1234", "def5678"), "def5678", env)
    assert len(fake.launch_plans) == 2 and fake.active[(PROJECT, DOMAIN, LAUNCH_PLAN)] == "def5678"


def test_launch_polls_to_success_and_a_second_launch_re_attaches(admin):
    fake, endpoint = admin
    context = TaskContext(s3=None, launcher=None, artifact_bucket=BUCKET)
    executor = FlyteRemoteWorkflowExecutor(FlyteTarget(endpoint, PROJECT, DOMAIN, insecure=True), context, 0.05)
    run = spec(1)
    thread, box = in_thread(executor.execute, run, {"epochs": "1"})
    wait_for(lambda: fake.requests("CreateExecution"), "the execution created")
    (created,) = fake.requests("CreateExecution")
    assert (created.project, created.domain, created.name) == (PROJECT, DOMAIN, execution_name(run.run_id))
    assert created.spec.launch_plan.version == "abc1234"  # the active launch plan
    sent = TypeEngine.literal_map_to_kwargs(FlyteContextManager.current_context(),
                                            LiteralMap.from_flyte_idl(created.inputs),
                                            training_workflow.python_interface.inputs)
    assert sent == workflow_inputs(run, {"epochs": "1"})  # every input, decoded as a task pod would
    time.sleep(0.2)
    assert thread.is_alive()  # still RUNNING: polling
    fake.succeed(PROJECT, DOMAIN, created.name, outputs(registration(run.run_id)))
    thread.join(10)
    assert box.get("result") == registration(run.run_id), box.get("error")
    assert executor.links(run) == {"execution_id": f"{PROJECT}:{DOMAIN}:{created.name}"}

    again = executor.execute(run, {"epochs": "1"})  # a restart: the same name, found, not launched twice
    assert again == registration(run.run_id)
    assert len(fake.executions) == 1
    # rejected with ALREADY_EXISTS, which flytekit retries rpc_retries (3) times before it returns the existing one
    assert [r.name for r in fake.requests("CreateExecution")] == [created.name] * (1 + 4)

    with pytest.raises(FlyteSystemException):
        executor.abort(run.run_id, "late")  # it ended: refused (the supervisor logs it; stopping is best effort)
    executor.abort(spec(9).run_id, "never started")  # no execution: nothing to terminate
    assert fake.execution(PROJECT, DOMAIN, created.name).closure.phase == Phase.SUCCEEDED


def test_a_failure_fails_the_run_an_outage_does_not_and_a_stop_leaves_it_running(admin):
    fake, endpoint = admin
    context = TaskContext(s3=None, launcher=None, artifact_bucket=BUCKET)
    executor = FlyteRemoteWorkflowExecutor(FlyteTarget(endpoint, PROJECT, DOMAIN, "abc1234", insecure=True),
                                           context, 0.05)
    failing, left = spec(2), spec(3)
    thread, box = in_thread(executor.execute, failing, {})
    wait_for(lambda: len(fake.requests("CreateExecution")) == 1, "created")
    fake.fail(PROJECT, DOMAIN, execution_name(failing.run_id), "evaluation: accuracy 0.1 does not beat 0.2")
    thread.join(10)
    assert isinstance(box.get("error"), TrainingFailed) and "does not beat" in str(box["error"])

    outage = spec(4)
    thread, box = in_thread(executor.execute, outage, {})
    wait_for(lambda: len(fake.requests("CreateExecution")) == 2, "created")
    polled = len(fake.requests("GetExecution"))
    fake.unavailable["GetExecution"] = 6  # more than flytekit's own retries: the executor's poll sees errors
    wait_for(lambda: not fake.unavailable["GetExecution"], "the outage over")
    assert thread.is_alive() and len(fake.requests("GetExecution")) >= polled + 6  # still waiting, not failed
    fake.succeed(PROJECT, DOMAIN, execution_name(outage.run_id), outputs(registration(outage.run_id)))
    thread.join(10)
    assert box.get("result") == registration(outage.run_id), box.get("error")

    thread, box = in_thread(executor.execute, left, {})
    wait_for(lambda: len(fake.requests("CreateExecution")) == 3, "created")
    context.release(left.run_id)  # the model went to another worker
    thread.join(10)
    assert isinstance(box.get("error"), Interrupted)
    assert fake.execution(PROJECT, DOMAIN, execution_name(left.run_id)).closure.phase == Phase.RUNNING
    assert not fake.requests("TerminateExecution")


# --- the run supervisor: events carry the execution id, supersede terminates ---------------------------------

class Sink:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, topic: str, record: dict[str, Any], acked: bool = False) -> None:
        self.records.append((topic, record))

    def of(self, topic: str) -> list[dict[str, Any]]:
        return [r for t, r in self.records if t == topic]


class Launcher:
    name = "sagemaker"

    def __init__(self) -> None:
        self.stopped: list[str] = []

    def stop(self, job_name: str) -> None:
        self.stopped.append(job_name)


def trigger(n: int) -> Trigger:
    ref = DatasetRef(M, f"ds{n}", f"s3://flywheel-data/manifests/{M}/ds{n}.json", 10,
                     ((f"datasets/{M}/v{n}/a.jsonl", f"etag{n}", 10),), 1_000)
    return Trigger(Kind.NEW_DATA, M, f"e-data-{n}", {"event_id": f"e-data-{n}", "correlation_id": f"c{n}",
                                                      "occurred_at": 5}, 10, ref)


def test_supervisor_supersede_terminates_the_execution_and_events_carry_its_id(admin):
    fake, endpoint = admin
    sink, launcher = Sink(), Launcher()
    codec = AvroCodec(EmbeddedRegistry(SchemaSet(REPO_SCHEMA_DIR)))
    run1, run2 = ids.run_id(M, "ds1", "NEW_DATA", 1), ids.run_id(M, "ds2", "NEW_DATA", 1)

    async def until(check, what: str) -> None:
        deadline = time.monotonic() + 20
        while not check():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.02)

    async def main(s3: Any) -> None:
        context = TaskContext(s3=s3, launcher=launcher, artifact_bucket=BUCKET)
        executor = FlyteRemoteWorkflowExecutor(FlyteTarget(endpoint, PROJECT, DOMAIN, insecure=True), context, 0.05)
        sup = Supervisor(Orchestration(TriggerPolicy(debounce_s=0, supersede=True)), executor, context, sink,
                         {"epochs": "1"}, store=StateStore(s3, BUCKET), ownership=Ownership(["dataset.version-ready"]),
                         worker_id="w")
        sup.own_all()
        sup.migrated.set()
        await sup.on_trigger(trigger(1))
        await until(lambda: len(fake.requests("CreateExecution")) == 1, "run 1's execution")
        await sup.on_trigger(trigger(2))  # newer data: run 1 is superseded
        await until(lambda: fake.requests("TerminateExecution"), "run 1's execution terminated")
        await until(lambda: len(fake.requests("CreateExecution")) == 2, "run 2's execution")
        fake.succeed(PROJECT, DOMAIN, execution_name(run2), outputs(registration(run2)))
        await until(lambda: sink.of("training.run-succeeded"), "run 2 succeeded")
        await asyncio.sleep(0.2)  # run 1's wait sees ABORTED: nothing more is reported for it
        sup.shutdown()

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        asyncio.run(main(s3))

    (terminated,) = fake.requests("TerminateExecution")
    assert terminated.id.name == execution_name(run1) and terminated.cause == f"superseded by run {run2}"
    assert fake.execution(PROJECT, DOMAIN, execution_name(run1)).closure.phase == Phase.ABORTED
    assert launcher.stopped == [run1]  # the SageMaker job the execution started is stopped too
    started = {r["run_id"]: r for r in sink.of("training.run-started")}
    assert started[run1]["execution_id"] == f"{PROJECT}:{DOMAIN}:{execution_name(run1)}"
    assert started[run2]["execution_id"] == f"{PROJECT}:{DOMAIN}:{execution_name(run2)}"
    (succeeded,) = sink.of("training.run-succeeded")
    assert succeeded["run_id"] == run2 and succeeded["execution_id"] == started[run2]["execution_id"]
    assert succeeded["job_arn"].endswith(run2)  # the launcher's job details from the workflow's output
    assert not sink.of("training.run-failed")
    for topic, name in (("training.run-started", "flywheel.TrainingRunStarted"),
                        ("training.run-succeeded", "flywheel.TrainingRunSucceeded"),
                        ("training.run-superseded", "flywheel.TrainingRunSuperseded")):
        for record in sink.of(topic):
            codec.validate(name, record)
