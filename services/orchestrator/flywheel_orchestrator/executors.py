"""Where the workflow executes: in this process (embedded default) or on a Flyte cluster (by configuration).

The remote engine (docs/decisions/0014-flyte-remote.md) launches the registered launch plan under an
execution name derived from the run id, so a restarted or new owner of the model re-attaches to the same
execution instead of launching a second one; its id (project:domain:name) goes into the run's events, and a
superseded run's execution is terminated.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

from flywheel_orchestrator.domain import RunSpec
from flywheel_orchestrator.launchers.base import Interrupted, TrainingFailed
from flywheel_orchestrator.taskcontext import TaskContext, scoped

log = logging.getLogger("orchestrator")

# The workflow's (and its default launch plan's) registered name: the module path of training_workflow.
LAUNCH_PLAN = "flywheel_orchestrator.workflow.training_workflow"


def workflow_inputs(spec: RunSpec, hyperparameters: dict[str, str]) -> dict[str, Any]:
    tags = {"flywheel:run_id": spec.run_id, "flywheel:model_id": spec.model_id,
            "flywheel:correlation_id": spec.correlation_id, "flywheel:trigger": spec.kind.value,
            "flywheel:dataset_version_id": spec.dataset_version_id}
    # Every dataset version's manifest the run trains on, base first (trainingdata.py, trainingset.py).
    return {"run_id": spec.run_id, "model_id": spec.model_id,
            "manifest_uris": [uri for _, uri in spec.training_versions],
            "hyperparameters": dict(hyperparameters), "tags": tags,
            "champion_uri": spec.lineage.get("champion_uri", "")}


def execution_name(run_id: str) -> str:
    """The Flyte execution's name for a run: deterministic, 20 characters, starting with a letter (Flyte
    limits execution names; a run id is longer), so a second launch of the run finds the first."""
    return "f" + hashlib.sha256(run_id.encode()).hexdigest()[:19]


class LocalWorkflowExecutor:
    """flytekit local execution: the same workflow object, run in-process with this service's adapters.

    flytekit runs the tasks synchronously in the calling thread, so the task context set around the call
    is the one the tasks see.
    """

    def __init__(self, context: TaskContext) -> None:
        self.context = context

    def execute(self, spec: RunSpec, hyperparameters: dict[str, str]) -> Any:
        # flytekit is heavy: it loads on the first run, in the worker thread, not at service start-up.
        from flywheel_orchestrator.workflow import training_workflow

        with scoped(self.context):
            return training_workflow(**workflow_inputs(spec, hyperparameters))

    def links(self, spec: RunSpec) -> dict[str, str]:
        return {}  # no execution outside this process

    def abort(self, run_id: str, cause: str) -> None:
        """In-process: the launcher's stop ends the job and the workflow's wait with it."""


@dataclass(frozen=True)
class FlyteTarget:
    """Where the launch plan is registered and how to reach Flyte admin (gRPC)."""

    endpoint: str  # host:port of flyteadmin's gRPC service, e.g. flyte-binary.flyte.svc.cluster.local:8089
    project: str
    domain: str
    version: str = ""  # the registered version (the image tag; flyteregistry.py); "": the active launch plan
    insecure: bool = False  # plain gRPC (an in-cluster flyte-binary without TLS); False: TLS
    service_account: str = ""  # the tasks' Kubernetes service account (IRSA); "": the namespace default

    def execution_id(self, run_id: str) -> str:
        return f"{self.project}:{self.domain}:{execution_name(run_id)}"


class FlyteRemoteWorkflowExecutor:
    """The registered launch plan on a Flyte cluster; the execution is named after the run, so it is idempotent.

    The wait polls the execution's phase (one GetExecution per poll) and returns early, leaving the execution
    running, when the run's stop event is set (shutdown, or the model went to another worker, which
    re-attaches by name).
    """

    def __init__(self, target: FlyteTarget, context: TaskContext | None = None, poll_s: float = 5.0) -> None:
        self.target, self.context, self.poll_s = target, context, poll_s
        self._remote: Any = None
        self._lock = threading.Lock()

    def remote(self) -> Any:
        """One FlyteRemote (one gRPC channel) for the service, made on first use (flytekit loads slowly)."""
        with self._lock:
            if self._remote is None:
                from flytekit.configuration import Config
                from flytekit.remote import FlyteRemote

                config = Config.for_endpoint(self.target.endpoint, insecure=self.target.insecure)
                self._remote = FlyteRemote(config, default_project=self.target.project,
                                           default_domain=self.target.domain)
            return self._remote

    def links(self, spec: RunSpec) -> dict[str, str]:
        return {"execution_id": self.target.execution_id(spec.run_id)}

    def launch_plan(self, remote: Any) -> Any:
        """The pinned version, or (no version configured) the active one: the version registered last."""
        if self.target.version:
            return remote.fetch_launch_plan(name=LAUNCH_PLAN, version=self.target.version)
        plan = remote.fetch_active_launchplan(name=LAUNCH_PLAN)
        if plan is None:
            raise TrainingFailed(f"no active launch plan {LAUNCH_PLAN} in {self.target.project}/{self.target.domain}:"
                                 " register it (flywheel-orchestrator flyte register, docs/deploy.md)")
        return plan

    def launch(self, spec: RunSpec, hyperparameters: dict[str, str]) -> Any:
        """Create the run's execution, or find it when it exists (a restart, a takeover, a redelivery): flyteadmin
        answers ALREADY_EXISTS for the name and FlyteRemote.execute returns the existing execution. (flytekit
        retries every failed call, that answer included, rpc_retries times before it gives up: a re-attach costs
        four rejected CreateExecution calls, a first launch one.)"""
        from flytekit.core.options import Options

        from flywheel_orchestrator.workflow import training_workflow

        remote, name = self.remote(), execution_name(spec.run_id)
        plan = self.launch_plan(remote)
        options = Options.default_from(k8s_service_account=self.target.service_account or None)
        execution = remote.execute(plan, workflow_inputs(spec, hyperparameters), execution_name=name,
                                   type_hints=dict(training_workflow.python_interface.inputs), options=options)
        log.info("Flyte execution %s for run %s", self.target.execution_id(spec.run_id), spec.run_id, extra={
            "run_id": spec.run_id, "model_id": spec.model_id, "execution_id": self.target.execution_id(spec.run_id),
            "launch_plan_version": plan.id.version})
        return execution

    def execute(self, spec: RunSpec, hyperparameters: dict[str, str]) -> Any:
        from flytekit.models.core.execution import WorkflowExecutionPhase

        from flywheel_orchestrator.workflow import Registration

        stop = self.context.stop_event(spec.run_id) if self.context is not None else threading.Event()
        where = f"Flyte execution {self.target.execution_id(spec.run_id)}"
        if stop.is_set():
            raise Interrupted(f"let go of {spec.run_id} before its {where} was started")
        execution = self.launch(spec, hyperparameters)
        remote = self.remote()
        while True:
            closure = self._phase(remote, execution.id, spec, where)
            if closure is not None and closure.phase in (
                    WorkflowExecutionPhase.SUCCEEDED, WorkflowExecutionPhase.FAILED, WorkflowExecutionPhase.ABORTED,
                    WorkflowExecutionPhase.TIMED_OUT):
                break
            if stop.wait(self.poll_s):
                raise Interrupted(f"stopped waiting for {where}")
        if closure.phase == WorkflowExecutionPhase.SUCCEEDED:
            synced = remote.sync_execution(execution, sync_nodes=False)
            return synced.outputs.get("o0", as_type=Registration)
        if closure.phase == WorkflowExecutionPhase.ABORTED:
            cause = closure.abort_metadata.cause if closure.abort_metadata else ""
            raise TrainingFailed(f"{where} was aborted: {cause or 'no cause given'}")
        if closure.phase == WorkflowExecutionPhase.TIMED_OUT:
            raise TrainingFailed(f"{where} timed out")
        message = closure.error.message if closure.error is not None else "no error message"
        raise TrainingFailed(f"{where} failed: {message}")

    def _phase(self, remote: Any, execution_id: Any, spec: RunSpec, where: str) -> Any:
        """The execution's closure; None while flyteadmin does not answer (after flytekit's own retries): the
        execution goes on without us, so the wait goes on too. An execution that is gone fails the run."""
        from flytekit.exceptions.user import FlyteEntityNotExistException

        try:
            return remote.client.get_execution(execution_id).closure
        except FlyteEntityNotExistException as exc:
            raise TrainingFailed(f"{where} no longer exists") from exc
        except Exception as exc:  # noqa: BLE001 (unavailable, deadline, internal: poll again)
            log.warning("could not read %s (%s); polling again", where, type(exc).__name__,
                        extra={"run_id": spec.run_id, "model_id": spec.model_id, "error": str(exc)})
            return None

    def abort(self, run_id: str, cause: str) -> None:
        """Terminate the run's execution (supersede). One that never started is left as is; any other refusal
        (it already ended, flyteadmin away) is raised for the caller, which logs it: stopping is best effort."""
        from flytekit.exceptions.user import FlyteEntityNotExistException
        from flytekit.models.core.identifier import WorkflowExecutionIdentifier

        execution_id = WorkflowExecutionIdentifier(self.target.project, self.target.domain, execution_name(run_id))
        try:
            self.remote().client.terminate_execution(execution_id, cause)
        except FlyteEntityNotExistException:
            log.info("no Flyte execution to terminate for run %s", run_id, extra={"run_id": run_id})
            return
        log.info("terminated Flyte execution %s: %s", self.target.execution_id(run_id), cause,
                 extra={"run_id": run_id, "execution_id": self.target.execution_id(run_id), "cause": cause})
