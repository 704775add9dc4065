"""Orchestrator settings (FLYWHEEL_* environment variables); a bad policy fails at start-up naming the field."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import model_validator

from flywheel.settings import FlywheelSettings
from flywheel_orchestrator.policy import TriggerPolicy, resolve_policies

# The training entry point beside this service in the repository (services/training/train.py).
DEFAULT_ENTRY_POINT = Path(__file__).resolve().parents[2] / "training" / "train.py"


class LauncherKind(StrEnum):
    LOCAL = "local"
    SAGEMAKER = "sagemaker"


class ExecutorKind(StrEnum):
    LOCAL = "local"  # flytekit local execution inside the service
    FLYTE_REMOTE = "flyte-remote"  # the registered launch plan on a Flyte cluster


class OrchestratorSettings(FlywheelSettings):
    data_bucket: str = "flywheel-data"
    artifact_bucket: str = "flywheel-artifacts"
    # FLYWHEEL_POLICY='{"debounce_s": 0}'; FLYWHEEL_MODEL_POLICIES='{"support-intent": {"cooldown_s": 60}}'
    policy: TriggerPolicy = TriggerPolicy()
    model_policies: dict[str, dict[str, Any]] = {}
    # Models this worker manages; empty means all (lets a canary or a test own its models only).
    models: list[str] = []
    launcher: LauncherKind = LauncherKind.LOCAL
    engine: ExecutorKind = ExecutorKind.LOCAL  # FLYWHEEL_ENGINE: which workflow executor (executors.py)
    # One epoch reaches held-out accuracy 1.0 on the 500-example demo in ~13 s of CPU training (bench).
    hyperparameters: dict[str, str] = {"epochs": "1", "batch_size": "16", "max_len": "64",
                                       "learning_rate": "0.0003", "threads": "1"}
    training_entry_point: Path = DEFAULT_ENTRY_POINT
    training_python: str = ""  # interpreter for the local launcher; empty: this one
    local_heartbeat_s: float = 2.0
    local_stale_s: float = 20.0
    poll_s: float = 0.5
    max_poll_s: float = 30.0
    sagemaker_role_arn: str = "arn:aws:iam::123456789012:role/flywheel-sagemaker-execution"
    sagemaker_image_uri: str = ""  # empty: resolved by the SageMaker SDK for the region
    sagemaker_framework_version: str = "2.3"
    sagemaker_instance_type: str = "ml.g5.xlarge"
    sagemaker_max_runtime_s: int = 3600
    sagemaker_use_spot: bool = False
    sagemaker_max_wait_s: int = 7200
    sagemaker_source_uri: str = ""  # s3:// sourcedir.tar.gz of services/training for script mode
    flyte_endpoint: str = ""
    flyte_project: str = "flywheel"
    flyte_domain: str = "production"
    flyte_version: str = ""

    @model_validator(mode="after")
    def _policies_valid(self) -> OrchestratorSettings:
        resolve_policies(self.policy, self.model_policies)  # raises naming the model's bad field
        if self.engine is ExecutorKind.FLYTE_REMOTE and not (self.flyte_endpoint and self.flyte_version):
            raise ValueError("engine=flyte-remote needs flyte_endpoint and flyte_version")
        return self

    def policies(self) -> dict[str, TriggerPolicy]:
        return resolve_policies(self.policy, self.model_policies)

    def manages(self, model_id: str) -> bool:
        return not self.models or model_id in self.models
