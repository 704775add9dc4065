"""Kafka client configuration from settings, for confluent-kafka (CLI, local stack, tools) and aiokafka."""

from __future__ import annotations

from typing import Any

from flywheel.msk import aiokafka_auth, confluent_auth
from flywheel.settings import FlywheelSettings


def confluent_security(settings: FlywheelSettings) -> dict[str, Any]:
    """TLS and SASL options; MSK IAM adds an oauth_cb that signs tokens (flywheel/msk.py)."""
    return confluent_auth(settings)


def confluent_producer_config(settings: FlywheelSettings) -> dict[str, Any]:
    # Kafka's default partitioner (murmur2 of the key), as aiokafka and so Faust use it: a model's events reach
    # the same partition whichever client produced them (librdkafka's own default hashes with CRC32), which
    # partition ownership relies on (docs/decisions/0009-orchestrator-scale-out.md).
    conf = {"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "partitioner": "murmur2_random",
            **confluent_security(settings)}
    if settings.one_record_per_batch:
        # Tansu advances the high watermark by one per batch, not per record (docs/decisions/0003-tansu-quirks.md).
        conf |= {"linger.ms": 0, "batch.num.messages": 1}
    return conf


def confluent_consumer_config(settings: FlywheelSettings, group_id: str, *, from_beginning: bool) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group_id,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": min(settings.kafka_fetch_max_wait_ms, 500),
        "session.timeout.ms": int(settings.kafka_session_timeout_s * 1000),
        **confluent_security(settings),
    }


def aiokafka_producer_config(settings: FlywheelSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap, "acks": "all", "linger_ms": 0,
                            **aiokafka_auth(settings)}
    if settings.one_record_per_batch:
        conf["max_batch_size"] = 1
    return conf
