"""Frozen, environment-driven settings shared by every service (the only config source)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


# Kafka security protocols the clients accept; profile=eks allows only SASL_SSL (MSK IAM over TLS).
KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


class Profile(StrEnum):
    LOCAL = "local"
    EKS = "eks"


class RegistryKind(StrEnum):
    EMBEDDED = "embedded"
    GLUE = "glue"


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class FlywheelSettings(BaseSettings):
    """Settings every Flywheel process reads; services subclass it with their own prefix-free fields."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", frozen=True, extra="ignore")

    profile: Profile = Profile.LOCAL
    kafka_bootstrap: str = "127.0.0.1:19092"
    # Tansu answers a fetch only when the wait expires; real Kafka answers on arrival (docs/decisions/0003-tansu-quirks.md).
    kafka_fetch_max_wait_ms: int = 1500
    kafka_session_timeout_s: float = 10.0
    kafka_security_protocol: str = "PLAINTEXT"
    # Under SASL_* it defaults to OAUTHBEARER, the one mechanism wired (MSK IAM, flywheel/msk.py).
    kafka_sasl_mechanism: str | None = Field(default=None, validate_default=True)
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = None
    schema_dir: Path = REPO_SCHEMA_DIR
    registry: RegistryKind = RegistryKind.EMBEDDED
    glue_registry_name: str = "flywheel"
    log_format: LogFormat = LogFormat.AUTO
    log_level: str = "INFO"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    data_dir: Path = Path(".flywheel")
    # Health (flywheel/health.py): /livez fails when records wait on a partition this long with no committed
    # offset advance, or a watched worker pool's oldest task is older than liveness_task_max_s.
    liveness_stall_s: float = Field(default=120.0, gt=0)
    liveness_task_max_s: float = Field(default=900.0, gt=0)
    health_sample_s: float = Field(default=1.0, gt=0)
    # Never set from code or manifests; only present for clients that need a secret (e.g. SASL/SCRAM).
    kafka_sasl_password: SecretStr | None = None

    @field_validator("kafka_fetch_max_wait_ms")
    @classmethod
    def _positive_wait(cls, value: int) -> int:
        if value < 1:
            raise ValueError("kafka_fetch_max_wait_ms must be >= 1")
        return value

    @field_validator("kafka_security_protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        if value.upper() not in KAFKA_PROTOCOLS:
            raise ValueError(f"kafka_security_protocol must be one of {', '.join(KAFKA_PROTOCOLS)}")
        return value.upper()

    @field_validator("kafka_sasl_mechanism")
    @classmethod
    def _sasl_means_msk_iam(cls, value: str | None, info: ValidationInfo) -> str | None:
        # MSK IAM (OAUTHBEARER) is the one SASL mechanism the clients are wired for (flywheel/msk.py).
        if not str(info.data.get("kafka_security_protocol", "")).startswith("SASL_"):
            return value
        mechanism = (value or "OAUTHBEARER").upper()
        if mechanism != "OAUTHBEARER":
            raise ValueError(f"kafka_sasl_mechanism={mechanism} is not supported: use OAUTHBEARER (MSK IAM)")
        return mechanism

    @model_validator(mode="after")
    def _eks_refuses_plaintext(self) -> FlywheelSettings:
        if self.profile is Profile.EKS and self.kafka_security_protocol != "SASL_SSL":
            raise ValueError(f"profile=eks refuses kafka_security_protocol={self.kafka_security_protocol}: "
                             "MSK needs SASL_SSL (TLS with IAM auth)")
        return self

    @property
    def one_record_per_batch(self) -> bool:
        """Tansu's high watermark is only exact with one record per produce batch (docs/decisions/0003-tansu-quirks.md)."""
        return self.profile is Profile.LOCAL
