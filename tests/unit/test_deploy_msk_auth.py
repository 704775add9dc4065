"""MSK IAM over TLS is chosen by settings alone: Faust/aiokafka and confluent-kafka get OAUTHBEARER + tokens."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer
from faust.auth import OAuthCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from flywheel import msk
from flywheel.faust_app import make_app
from flywheel.kafka import aiokafka_producer_config, confluent_consumer_config, confluent_producer_config
from flywheel.settings import FlywheelSettings

MSK_BOOTSTRAP = "b-1.flywheel.abc123.c2.kafka.eu-west-1.amazonaws.com:9098"


def eks(tmp_path: Path, **extra: object) -> FlywheelSettings:
    return FlywheelSettings(profile="eks", kafka_bootstrap=MSK_BOOTSTRAP, kafka_security_protocol="SASL_SSL",
                            kafka_sasl_mechanism="OAUTHBEARER", aws_region="eu-west-1", data_dir=tmp_path, **extra)


def test_faust_app_gets_oauth_credentials_over_tls(tmp_path: Path) -> None:
    app = make_app("ingest", eks(tmp_path))
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, OAuthCredentials)
    assert isinstance(credentials.oauth_cb, msk.MSKTokenProvider) and credentials.oauth_cb.region == "eu-west-1"
    auth = credentials_to_aiokafka_auth(credentials, app.conf.ssl_context)  # what Faust hands aiokafka
    assert (auth["security_protocol"], auth["sasl_mechanism"]) == ("SASL_SSL", "OAUTHBEARER")
    assert isinstance(auth["ssl_context"], ssl.SSLContext) and auth["ssl_context"].verify_mode is ssl.CERT_REQUIRED


def test_faust_worker_consumer_speaks_sasl_ssl_oauthbearer(tmp_path: Path) -> None:
    async def build() -> tuple[str, str, object]:
        app = make_app("monitor", eks(tmp_path))
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            client = consumer._client
            return client._security_protocol, client._sasl_mechanism, client._sasl_oauth_token_provider
        finally:
            await consumer.stop()

    protocol, mechanism, provider = asyncio.run(build())
    assert (protocol, mechanism) == ("SASL_SSL", "OAUTHBEARER")
    assert isinstance(provider, msk.MSKTokenProvider)


def test_local_faust_app_stays_plaintext_without_credentials(tmp_path: Path) -> None:
    app = make_app("ingest", FlywheelSettings(data_dir=tmp_path))
    assert app.conf.broker_credentials is None and app.conf.ssl_context is None


def test_aiokafka_producer_accepts_the_msk_config(tmp_path: Path) -> None:
    conf = aiokafka_producer_config(eks(tmp_path))
    assert (conf["security_protocol"], conf["sasl_mechanism"]) == ("SASL_SSL", "OAUTHBEARER")

    async def build() -> AIOKafkaProducer:
        return AIOKafkaProducer(**conf)  # aiokafka validates SASL/TLS arguments in its constructor

    producer = asyncio.run(build())
    assert producer.client._sasl_oauth_token_provider is conf["sasl_oauth_token_provider"]


def test_confluent_clients_sign_tokens_through_oauth_cb(tmp_path: Path) -> None:
    settings = eks(tmp_path)
    for conf in (confluent_producer_config(settings), confluent_consumer_config(settings, "g", from_beginning=True)):
        assert (conf["security.protocol"], conf["sasl.mechanism"]) == ("SASL_SSL", "OAUTHBEARER")
        assert callable(conf["oauth_cb"])


def test_librdkafka_calls_the_oauth_cb_with_the_configured_region(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    regions: list[str] = []

    def fake_signer(region: str) -> tuple[str, float]:
        regions.append(region)
        return "signed-token", 4_102_444_800.0

    monkeypatch.setattr(msk, "signed_token", fake_signer)
    producer = Producer(confluent_producer_config(eks(tmp_path)) | {"log_level": 0})
    for _ in range(20):
        if regions:
            break
        producer.poll(0.1)
    assert regions and set(regions) == {"eu-west-1"}


def test_plaintext_profile_has_no_oauth_cb() -> None:
    conf = confluent_producer_config(FlywheelSettings())
    assert conf["security.protocol"] == "PLAINTEXT" and "oauth_cb" not in conf and "sasl.mechanism" not in conf
    assert aiokafka_producer_config(FlywheelSettings())["security_protocol"] == "PLAINTEXT"


def test_token_provider_caches_until_shortly_before_expiry() -> None:
    now = [1000.0]
    minted: list[float] = []

    def source(region: str) -> tuple[str, float]:
        minted.append(now[0])
        return f"token-{len(minted)}", now[0] + 900

    provider = msk.MSKTokenProvider("eu-west-1", source=source, clock=lambda: now[0])

    async def tokens() -> list[str]:
        first = await provider.token()
        now[0] += 900 - msk.REFRESH_MARGIN_S - 1
        second = await provider.token()
        now[0] += 2
        return [first, second, await provider.token()]

    assert asyncio.run(tokens()) == ["token-1", "token-1", "token-2"]


def test_signer_expiry_is_converted_to_epoch_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    monkeypatch.setattr(MSKAuthTokenProvider, "generate_auth_token", lambda region: (f"t-{region}", 1_700_000_900_000))
    assert msk.signed_token("eu-west-1") == ("t-eu-west-1", 1_700_000_900.0)


def test_signer_builds_a_real_token_from_the_standard_credential_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    # IRSA supplies credentials through the standard chain; static test values stand in for them here.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    token, expiry = msk.signed_token("eu-west-1")
    assert token and "=" not in token  # base64url without padding, as MSK expects
    assert expiry > 1_700_000_000
