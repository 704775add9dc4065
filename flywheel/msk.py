"""MSK IAM authentication: SASL OAUTHBEARER tokens signed with the pod's AWS credentials (IRSA on EKS).

Chosen by settings alone: kafka_security_protocol=SASL_SSL with kafka_sasl_mechanism=OAUTHBEARER.
Tokens come from aws-msk-iam-sasl-signer-python, which reads the standard AWS credential chain; on EKS
that is the web-identity token IRSA mounts into the pod, so no secret is ever configured.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiokafka.abc import AbstractTokenProvider

from flywheel.settings import FlywheelSettings

OAUTHBEARER = "OAUTHBEARER"
# Signed tokens live 15 minutes; fetch a fresh one a minute before the old one expires.
REFRESH_MARGIN_S = 60.0

TokenSource = Callable[[str], tuple[str, float]]


def signed_token(region: str) -> tuple[str, float]:
    """A fresh MSK IAM token and its expiry in epoch seconds (the signer returns milliseconds)."""
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
    return token, expiry_ms / 1000


def uses_msk_iam(settings: FlywheelSettings) -> bool:
    return settings.kafka_security_protocol.startswith("SASL_") and settings.kafka_sasl_mechanism == OAUTHBEARER


def uses_tls(settings: FlywheelSettings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


class MSKTokenProvider(AbstractTokenProvider):
    """aiokafka (and so Faust) token provider; signing runs in an executor, never on the event loop."""

    def __init__(self, region: str, source: TokenSource | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.region = region
        self._source = source
        self._clock = clock
        self._token: str | None = None
        self._expiry = 0.0

    async def token(self) -> str:
        if self._token is None or self._clock() >= self._expiry - REFRESH_MARGIN_S:
            loop = asyncio.get_running_loop()
            source = self._source or signed_token
            self._token, self._expiry = await loop.run_in_executor(None, source, self.region)
        return self._token


def confluent_oauth_cb(region: str, source: TokenSource | None = None) -> Callable[[str], tuple[str, float]]:
    """librdkafka calls this (from poll/flush) whenever it needs a token: (token, expiry epoch seconds)."""

    def oauth_cb(_oauthbearer_config: str) -> tuple[str, float]:
        return (source or signed_token)(region)

    return oauth_cb


def confluent_auth(settings: FlywheelSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {"security.protocol": settings.kafka_security_protocol}
    if settings.kafka_sasl_mechanism:
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
    if uses_msk_iam(settings):
        conf["oauth_cb"] = confluent_oauth_cb(settings.aws_region)
    return conf


def aiokafka_auth(settings: FlywheelSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if uses_tls(settings):
        conf["ssl_context"] = ssl.create_default_context()
    if uses_msk_iam(settings):
        conf |= {"sasl_mechanism": OAUTHBEARER, "sasl_oauth_token_provider": MSKTokenProvider(settings.aws_region)}
    return conf


def faust_auth(settings: FlywheelSettings) -> dict[str, Any]:
    """Faust app options: OAuthCredentials over TLS for MSK IAM, a TLS context for SSL, nothing for PLAINTEXT."""
    from faust.auth import OAuthCredentials

    context = ssl.create_default_context() if uses_tls(settings) else None
    if uses_msk_iam(settings):
        return {"broker_credentials": OAuthCredentials(oauth_cb=MSKTokenProvider(settings.aws_region),
                                                       ssl_context=context)}
    return {"ssl_context": context} if context else {}
