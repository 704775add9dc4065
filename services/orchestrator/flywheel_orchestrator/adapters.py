"""Adapters from settings: the launcher and the workflow tasks' context. Nothing runs at import.

`app.py` assembles the service from these; a workflow task in a Flyte pod builds its context here from the
pod's FLYWHEEL_* environment. The workflow executors are chosen in `app.py` (they import the workflow).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from flywheel.bootstrap import aws_client
from flywheel.s3json import get_json
from flywheel_orchestrator.ids import output_prefix
from flywheel_orchestrator.launchers.base import Launcher
from flywheel_orchestrator.launchers.local import LocalLauncher
from flywheel_orchestrator.settings import LauncherKind, OrchestratorSettings
from flywheel_orchestrator.taskcontext import TaskContext


def build_launcher(settings: OrchestratorSettings, s3: Any) -> Launcher:
    if settings.launcher is LauncherKind.SAGEMAKER:
        from flywheel_orchestrator.launchers.sagemaker import SageMakerConfig, SageMakerLauncher

        config = SageMakerConfig(
            role_arn=settings.sagemaker_role_arn, image_uri=settings.sagemaker_image_uri,
            gpu_image_uri=settings.sagemaker_gpu_image_uri, instance_type=settings.sagemaker_instance_type,
            region=settings.aws_region, volume_gb=settings.sagemaker_volume_gb,
            max_runtime_s=settings.sagemaker_max_runtime_s, use_spot=settings.sagemaker_use_spot,
            max_wait_s=settings.sagemaker_max_wait_s, subnets=tuple(settings.sagemaker_subnets),
            security_group_ids=tuple(settings.sagemaker_security_group_ids),
            volume_kms_key_id=settings.sagemaker_volume_kms_key_id,
            output_kms_key_id=settings.sagemaker_output_kms_key_id,
            network_isolation=settings.sagemaker_network_isolation,
            inter_container_encryption=settings.sagemaker_inter_container_encryption,
            prices=dict(settings.sagemaker_prices), source_uri=settings.sagemaker_source_uri)
        return SageMakerLauncher(aws_client(settings, "sagemaker"), config, s3=s3)
    env = {"AWS_DEFAULT_REGION": settings.aws_region}
    if settings.aws_endpoint_url:
        env["AWS_ENDPOINT_URL"] = settings.aws_endpoint_url
    return LocalLauncher(s3, settings.artifact_bucket, settings.training_entry_point,
                         settings.data_dir.resolve() / "orchestrator" / "jobs", env,
                         heartbeat_s=settings.local_heartbeat_s, stale_s=settings.local_stale_s,
                         python=settings.training_python or sys.executable)


def registration_reader(s3: Any, bucket: str) -> Callable[[str, str], dict[str, Any] | None]:
    """What the workflow's register step wrote beside a version's artifact (None when it is not there)."""
    return lambda model_id, run_id: get_json(s3, bucket, f"{output_prefix(model_id, run_id)}registration.json")


def build_task_context(settings: OrchestratorSettings) -> TaskContext:
    s3 = aws_client(settings, "s3")
    max_poll = settings.max_poll_s if settings.launcher is LauncherKind.SAGEMAKER else 2.0
    return TaskContext(s3=s3, launcher=build_launcher(settings, s3), artifact_bucket=settings.artifact_bucket,
                       poll_s=settings.poll_s, max_poll_s=max_poll)


def task_context_from_env() -> TaskContext:
    """For a task running in a Flyte pod: the same adapters, from that pod's FLYWHEEL_* environment."""
    return build_task_context(OrchestratorSettings())
