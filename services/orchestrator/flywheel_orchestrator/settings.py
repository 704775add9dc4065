"""Orchestrator settings (FLYWHEEL_* environment variables); a bad policy fails at start-up naming the field."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from flywheel.settings import FlywheelSettings
from flywheel_orchestrator.policy import TriggerPolicy, resolve_policies
from flywheel_orchestrator.promotion import GatePolicy

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
    # The SageMaker path (launchers/sagemaker.py, docs/decisions/0011): with launcher=sagemaker the images,
    # subnets and security groups are required (checked at start-up); lists are JSON ('["subnet-1"]').
    sagemaker_role_arn: str = "arn:aws:iam::123456789012:role/flywheel-sagemaker-execution"
    sagemaker_image_uri: str = ""  # flywheel-training in ECR (entry point baked in): CPU instance types
    sagemaker_gpu_image_uri: str = ""  # flywheel-training-cuda: GPU instance types (ml.g*, ml.p*)
    sagemaker_instance_type: str = "ml.m5.xlarge"
    sagemaker_volume_gb: int = Field(30, ge=1)
    sagemaker_max_runtime_s: int = Field(3600, ge=1)
    sagemaker_use_spot: bool = True  # managed spot with checkpoints under the run's prefix
    sagemaker_max_wait_s: int = Field(7200, ge=1)  # spot: runtime plus waiting for capacity
    sagemaker_subnets: list[str] = []
    sagemaker_security_group_ids: list[str] = []
    sagemaker_volume_kms_key_id: str = ""  # empty: the AWS-managed key
    sagemaker_output_kms_key_id: str = ""
    sagemaker_network_isolation: bool = True
    sagemaker_inter_container_encryption: bool = True
    sagemaker_prices: dict[str, float] = {}  # USD/hour per instance type over launchers/pricing.py's table
    sagemaker_source_uri: str = ""  # opt-in script mode of a framework image (not the default path)
    # Promotion gate (promotion.py): a challenger replaces the champion only when its held-out accuracy on
    # the same rows is higher by at least the margin and McNemar's one-sided p-value is below alpha.
    promotion_margin: float = Field(0.01, ge=0, le=1)
    promotion_alpha: float = Field(0.05, gt=0, le=1)
    # A breach or drift of the production version within this many seconds of its promotion rolls it back.
    probation_s: float = Field(1800.0, ge=0)
    # Shadow evaluation (docs/decisions/0013-shadow-evaluation.md): > 0, a version that passes the gate becomes
    # a candidate serving shadows beside production, promoted once it beats production on at least this many
    # labelled live pairs (same margin and alpha), rejected when it does not or after shadow_max_s. 0: off.
    shadow_min_pairs: int = Field(0, ge=0)
    shadow_max_s: float = Field(86_400.0, gt=0)
    # engine=flyte-remote (executors.py, docs/decisions/0014): flyteadmin's gRPC host:port, plain gRPC when
    # insecure (an in-cluster flyte-binary), the registered version to run (the image tag; flyteregistry.py;
    # empty: the active launch plan, i.e. the version registered last).
    flyte_endpoint: str = ""
    flyte_insecure: bool = False
    flyte_project: str = "flywheel"
    flyte_domain: str = "production"
    flyte_version: str = ""
    flyte_service_account: str = ""  # the task pods' service account (IRSA); "": the namespace default
    flyte_poll_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _policies_valid(self) -> OrchestratorSettings:
        resolve_policies(self.policy, self.model_policies)  # raises naming the model's bad field
        if self.engine is ExecutorKind.FLYTE_REMOTE and not self.flyte_endpoint:
            raise ValueError("engine=flyte-remote needs flyte_endpoint (FLYWHEEL_FLYTE_ENDPOINT)")
        if self.launcher is LauncherKind.SAGEMAKER:
            self._sagemaker_complete()
        return self

    def _sagemaker_complete(self) -> None:
        """What the SageMaker path needs, named by its variable, so a bad deployment fails at start-up."""
        from flywheel_orchestrator.launchers.sagemaker import is_gpu_instance

        missing = [name for name, value in (("SAGEMAKER_ROLE_ARN", self.sagemaker_role_arn),
                                            ("SAGEMAKER_IMAGE_URI", self.sagemaker_image_uri),
                                            ("SAGEMAKER_SUBNETS", self.sagemaker_subnets),
                                            ("SAGEMAKER_SECURITY_GROUP_IDS", self.sagemaker_security_group_ids))
                   if not value]
        if is_gpu_instance(self.sagemaker_instance_type) and not self.sagemaker_gpu_image_uri:
            missing.append("SAGEMAKER_GPU_IMAGE_URI")
        if missing:
            raise ValueError(f"launcher=sagemaker ({self.sagemaker_instance_type}) needs "
                             + ", ".join(f"FLYWHEEL_{m}" for m in missing) + " (docs/deploy.md, SageMaker)")
        if self.sagemaker_source_uri and self.sagemaker_network_isolation:
            raise ValueError("FLYWHEEL_SAGEMAKER_SOURCE_URI (script mode) downloads code in the container: it "
                             "needs FLYWHEEL_SAGEMAKER_NETWORK_ISOLATION=false")
        if self.sagemaker_use_spot and self.sagemaker_max_wait_s < self.sagemaker_max_runtime_s:
            raise ValueError("FLYWHEEL_SAGEMAKER_MAX_WAIT_S must be >= FLYWHEEL_SAGEMAKER_MAX_RUNTIME_S with spot")

    def gate(self) -> GatePolicy:
        return GatePolicy(self.promotion_margin, self.promotion_alpha, self.probation_s, self.shadow_min_pairs,
                          self.shadow_max_s)

    def policies(self) -> dict[str, TriggerPolicy]:
        return resolve_policies(self.policy, self.model_policies)

    def manages(self, model_id: str) -> bool:
        return not self.models or model_id in self.models
