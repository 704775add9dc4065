"""Adapters from settings: the launcher and the workflow tasks' context. Nothing runs at import.

`app.py` assembles the service from these; a workflow task in a Flyte pod builds its context here from the
pod's FLYWHEEL_* environment. The workflow executors are chosen in `app.py` (they import the workflow).
"""

from __future__ import annotations

import sys
from typing import Any

from flywheel.bootstrap import aws_client
from flywheel_orchestrator.launchers.base import Launcher
from flywheel_orchestrator.launchers.local import LocalLauncher
from flywheel_orchestrator.settings import LauncherKind, OrchestratorSettings
from flywheel_orchestrator.taskcontext import TaskContext


def build_launcher(settings: OrchestratorSettings, s3: Any) -> Launcher:
    if settings.launcher is LauncherKind.SAGEMAKER:
        from flywheel_orchestrator.launchers.sagemaker import (  # the SageMaker SDK only when chosen
            SageMakerConfig,
            SageMakerLauncher,
            resolve_image_uri,
        )

        image = settings.sagemaker_image_uri or resolve_image_uri(
            settings.aws_region, settings.sagemaker_instance_type, settings.sagemaker_framework_version)
        config = SageMakerConfig(role_arn=settings.sagemaker_role_arn, image_uri=image,
                                 instance_type=settings.sagemaker_instance_type,
                                 max_runtime_s=settings.sagemaker_max_runtime_s, use_spot=settings.sagemaker_use_spot,
                                 max_wait_s=settings.sagemaker_max_wait_s, source_uri=settings.sagemaker_source_uri)
        return SageMakerLauncher(aws_client(settings, "sagemaker"), config, s3=s3)
    env = {"AWS_DEFAULT_REGION": settings.aws_region}
    if settings.aws_endpoint_url:
        env["AWS_ENDPOINT_URL"] = settings.aws_endpoint_url
    return LocalLauncher(s3, settings.artifact_bucket, settings.training_entry_point,
                         settings.data_dir.resolve() / "orchestrator" / "jobs", env,
                         heartbeat_s=settings.local_heartbeat_s, stale_s=settings.local_stale_s,
                         python=settings.training_python or sys.executable)


def build_task_context(settings: OrchestratorSettings) -> TaskContext:
    s3 = aws_client(settings, "s3")
    max_poll = settings.max_poll_s if settings.launcher is LauncherKind.SAGEMAKER else 2.0
    return TaskContext(s3=s3, launcher=build_launcher(settings, s3), artifact_bucket=settings.artifact_bucket,
                       poll_s=settings.poll_s, max_poll_s=max_poll)


def task_context_from_env() -> TaskContext:
    """For a task running in a Flyte pod: the same adapters, from that pod's FLYWHEEL_* environment."""
    return build_task_context(OrchestratorSettings())
