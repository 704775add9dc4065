"""profile=eks accepts only MSK's TLS + IAM listener; SASL always means OAUTHBEARER (MSK IAM)."""

from __future__ import annotations

import pydantic
import pytest

from flywheel.settings import FlywheelSettings


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "plaintext", "SASL_PLAINTEXT", "SSL"])
def test_eks_profile_refuses_every_listener_but_sasl_ssl(protocol: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=f"refuses kafka_security_protocol={protocol.upper()}"):
        FlywheelSettings(profile="eks", kafka_security_protocol=protocol)


def test_eks_profile_refuses_plaintext_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_PROFILE", "eks")
    monkeypatch.setenv("FLYWHEEL_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    with pytest.raises(pydantic.ValidationError, match="SASL_SSL"):
        FlywheelSettings()


def test_eks_profile_with_sasl_ssl_defaults_to_msk_iam(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_PROFILE", "eks")
    monkeypatch.setenv("FLYWHEEL_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    settings = FlywheelSettings()
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "OAUTHBEARER")


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512", "AWS_MSK_IAM"])
def test_sasl_mechanisms_other_than_oauthbearer_are_refused(mechanism: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="kafka_sasl_mechanism"):
        FlywheelSettings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=mechanism)


def test_unknown_protocols_are_refused_naming_the_field() -> None:
    with pytest.raises(pydantic.ValidationError, match="kafka_security_protocol must be one of"):
        FlywheelSettings(kafka_security_protocol="TLS")


def test_local_profile_keeps_plaintext_and_no_mechanism() -> None:
    settings = FlywheelSettings()
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("PLAINTEXT", None)
