"""Frozen, environment-driven settings shared by every service (the only config source)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


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
    # Tansu answers a fetch only when the wait expires; real Kafka answers on arrival (BRIEF.md).
    kafka_fetch_max_wait_ms: int = 1500
    kafka_session_timeout_s: float = 10.0
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
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
    # Never set from code or manifests; only present for clients that need a secret (e.g. SASL/SCRAM).
    kafka_sasl_password: SecretStr | None = None

    @field_validator("kafka_fetch_max_wait_ms")
    @classmethod
    def _positive_wait(cls, value: int) -> int:
        if value < 1:
            raise ValueError("kafka_fetch_max_wait_ms must be >= 1")
        return value

    @model_validator(mode="after")
    def _eks_refuses_plaintext(self) -> FlywheelSettings:
        if self.profile is Profile.EKS and self.kafka_security_protocol.upper() == "PLAINTEXT":
            raise ValueError("profile=eks refuses kafka_security_protocol=PLAINTEXT: MSK needs SASL_SSL")
        return self

    @property
    def one_record_per_batch(self) -> bool:
        """Tansu's high watermark is only exact with one record per produce batch (BRIEF.md)."""
        return self.profile is Profile.LOCAL
