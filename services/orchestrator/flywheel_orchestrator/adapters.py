"""Adapters from settings: the launcher, the workflow engine and the tasks' runtime. Nothing runs at import."""

from __future__ import annotations

import sys
from typing import Any

from flywheel.bootstrap import aws_client
from flywheel_orchestrator.engine import Engine, FlyteRemoteEngine, LocalEngine
from flywheel_orchestrator.launchers.base import Launcher
from flywheel_orchestrator.runtime import Runtime
from flywheel_orchestrator.settings import EngineKind, LauncherKind, OrchestratorSettings


def build_launcher(settings: OrchestratorSettings, s3: Any) -> Launcher:
    if settings.launcher is LauncherKind.SAGEMAKER:
        from flywheel_orchestrator.launchers.sagemaker import (
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
        return SageMakerLauncher(aws_client(settings, "sagemaker"), config)
    from flywheel_orchestrator.launchers.local import LocalLauncher

    env = {"AWS_DEFAULT_REGION": settings.aws_region}
    if settings.aws_endpoint_url:
        env["AWS_ENDPOINT_URL"] = settings.aws_endpoint_url
    return LocalLauncher(s3, settings.artifact_bucket, settings.training_entry_point,
                         settings.data_dir.resolve() / "orchestrator" / "jobs", env,
                         heartbeat_s=settings.local_heartbeat_s, stale_s=settings.local_stale_s,
                         python=settings.training_python or sys.executable)


def build_runtime(settings: OrchestratorSettings) -> Runtime:
    s3 = aws_client(settings, "s3")
    max_poll = settings.max_poll_s if settings.launcher is LauncherKind.SAGEMAKER else 2.0
    return Runtime(s3=s3, launcher=build_launcher(settings, s3), artifact_bucket=settings.artifact_bucket,
                   poll_s=settings.poll_s, max_poll_s=max_poll)


def build_engine(settings: OrchestratorSettings) -> Engine:
    if settings.engine is EngineKind.FLYTE_REMOTE:
        return FlyteRemoteEngine(settings.flyte_endpoint, settings.flyte_project, settings.flyte_domain,
                                 settings.flyte_version)
    return LocalEngine()


def runtime_from_env() -> Runtime:
    """For a task running in a Flyte pod: the same adapters, from that pod's FLYWHEEL_* environment."""
    return build_runtime(OrchestratorSettings())
