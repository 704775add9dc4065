"""FlywheelSettings: the only config source, read from FLYWHEEL_* variables, frozen, secrets masked."""

from __future__ import annotations

import pydantic
import pytest

from flywheel.settings import FlywheelSettings, Profile, RegistryKind


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("FLYWHEEL_")]:
        monkeypatch.delenv(key)


def test_defaults_need_no_environment() -> None:
    settings = FlywheelSettings()
    assert settings.profile is Profile.LOCAL
    assert settings.registry is RegistryKind.EMBEDDED
    assert (settings.schema_dir / "flywheel.Envelope.avsc").is_file()


def test_values_come_from_flywheel_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_KAFKA_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("FLYWHEEL_KAFKA_FETCH_MAX_WAIT_MS", "10")
    monkeypatch.setenv("FLYWHEEL_REGISTRY", "glue")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "ignored:1")
    settings = FlywheelSettings()
    assert (settings.kafka_bootstrap, settings.kafka_fetch_max_wait_ms) == ("broker:9092", 10)
    assert settings.registry is RegistryKind.GLUE


def test_settings_are_frozen() -> None:
    settings = FlywheelSettings()
    with pytest.raises(pydantic.ValidationError):
        settings.kafka_bootstrap = "elsewhere:9092"


def test_a_zero_fetch_wait_is_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_KAFKA_FETCH_MAX_WAIT_MS", "0")
    with pytest.raises(pydantic.ValidationError, match="kafka_fetch_max_wait_ms"):
        FlywheelSettings()


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "plaintext"])
def test_eks_profile_refuses_plaintext_kafka(protocol: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="SASL_SSL"):
        FlywheelSettings(profile="eks", kafka_security_protocol=protocol)


def test_eks_profile_accepts_sasl_ssl_and_batches_freely() -> None:
    settings = FlywheelSettings(profile="eks", kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="OAUTHBEARER")
    assert settings.one_record_per_batch is False


def test_local_profile_sends_one_record_per_batch() -> None:
    assert FlywheelSettings().one_record_per_batch is True


def test_secret_is_masked_when_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_KAFKA_SASL_PASSWORD", "hunter2")
    settings = FlywheelSettings()
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    assert settings.kafka_sasl_password.get_secret_value() == "hunter2"


def test_service_settings_inherit_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    from flywheel_orchestrator.settings import OrchestratorSettings

    monkeypatch.setenv("FLYWHEEL_ARTIFACT_BUCKET", "models")
    monkeypatch.setenv("FLYWHEEL_WEB_PORT", "7000")
    settings = OrchestratorSettings()
    assert (settings.artifact_bucket, settings.web_port) == ("models", 7000)
