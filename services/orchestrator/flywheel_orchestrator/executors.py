"""Where the workflow executes: in this process (embedded default) or on a Flyte cluster (by configuration)."""

from __future__ import annotations

import hashlib
from typing import Any

from flywheel_orchestrator.domain import RunSpec
from flywheel_orchestrator.taskcontext import TaskContext, scoped


def workflow_inputs(spec: RunSpec, hyperparameters: dict[str, str]) -> dict[str, Any]:
    tags = {"flywheel:run_id": spec.run_id, "flywheel:model_id": spec.model_id,
            "flywheel:correlation_id": spec.correlation_id, "flywheel:trigger": spec.kind.value,
            "flywheel:dataset_version_id": spec.dataset_version_id}
    return {"run_id": spec.run_id, "model_id": spec.model_id, "manifest_uri": spec.manifest_uri,
            "hyperparameters": dict(hyperparameters), "tags": tags,
            "champion_uri": spec.lineage.get("champion_uri", "")}


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


class FlyteRemoteWorkflowExecutor:
    """The registered launch plan on a Flyte cluster; the execution is named after the run, so it is idempotent."""

    LAUNCH_PLAN = "flywheel_orchestrator.workflow.training_workflow"

    def __init__(self, endpoint: str, project: str, domain: str, version: str) -> None:
        self.endpoint, self.project, self.domain, self.version = endpoint, project, domain, version

    def execute(self, spec: RunSpec, hyperparameters: dict[str, str]) -> Any:
        from flytekit.configuration import Config
        from flytekit.exceptions.user import FlyteEntityAlreadyExistsException
        from flytekit.remote import FlyteRemote

        remote = FlyteRemote(Config.for_endpoint(self.endpoint), default_project=self.project,
                             default_domain=self.domain)
        plan = remote.fetch_launch_plan(name=self.LAUNCH_PLAN, version=self.version)
        # Flyte wants short execution names; a digest of the run id keeps the name deterministic.
        name = "f" + hashlib.sha256(spec.run_id.encode()).hexdigest()[:19]
        try:
            execution = remote.execute(plan, workflow_inputs(spec, hyperparameters), execution_name=name)
        except FlyteEntityAlreadyExistsException:
            execution = remote.fetch_execution(name=name)
        execution = remote.wait(execution)
        if execution.error is not None:
            raise RuntimeError(execution.error.message)
        return execution.outputs["o0"]
