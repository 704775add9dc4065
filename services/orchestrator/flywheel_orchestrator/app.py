"""Assembly only: the Faust app, codec, publisher, adapters from settings and the run supervisor; handlers."""

from __future__ import annotations

import faust

from flywheel.bootstrap import build_codec
from flywheel.faust_app import DeadLetters, FaustPublisher, make_app
from flywheel.lifecycle import StageStore
from flywheel_orchestrator import handlers
from flywheel_orchestrator.adapters import build_task_context, registration_reader
from flywheel_orchestrator.core import Orchestration
from flywheel_orchestrator.executors import FlyteRemoteWorkflowExecutor, FlyteTarget, LocalWorkflowExecutor
from flywheel_orchestrator.ownership import Ownership
from flywheel_orchestrator.ports import WorkflowExecutor
from flywheel_orchestrator.promotions import Promotions
from flywheel_orchestrator.runs import Supervisor
from flywheel_orchestrator.settings import ExecutorKind, OrchestratorSettings
from flywheel_orchestrator.statestore import StateStore
from flywheel_orchestrator.taskcontext import TaskContext
from flywheel_orchestrator.topics import CONSUMES, SERVICE


def build_executor(settings: OrchestratorSettings, context: TaskContext) -> WorkflowExecutor:
    if settings.engine is ExecutorKind.FLYTE_REMOTE:
        target = FlyteTarget(settings.flyte_endpoint, settings.flyte_project, settings.flyte_domain,
                             settings.flyte_version, settings.flyte_insecure, settings.flyte_service_account)
        return FlyteRemoteWorkflowExecutor(target, context, settings.flyte_poll_s)
    return LocalWorkflowExecutor(context)


def create_app(settings: OrchestratorSettings) -> faust.App:
    app = make_app(SERVICE, settings)
    codec = build_codec(settings)
    publisher = FaustPublisher(app, codec, SERVICE)
    context = build_task_context(settings)
    orchestration = Orchestration(settings.policy, settings.policies())
    promotions = Promotions(StageStore(context.s3, settings.artifact_bucket), publisher.publish, settings.gate(),
                            registration_reader(context.s3, settings.artifact_bucket))
    supervisor = Supervisor(orchestration, build_executor(settings, context), context, publisher.publish,
                            settings.hyperparameters, store=StateStore(context.s3, settings.artifact_bucket),
                            ownership=Ownership(CONSUMES), promotions=promotions)
    handlers.register(app, settings, codec, DeadLetters(publisher), supervisor, promotions)
    return app
