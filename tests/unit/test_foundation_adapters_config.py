"""Kafka client configs and dead-letter records built from settings: the Tansu workarounds live here."""

from __future__ import annotations

from flywheel.deadletter import SourceRecord, dead_letter
from flywheel.errors import UnknownSchemaId
from flywheel.kafka import aiokafka_producer_config, confluent_consumer_config, confluent_producer_config
from flywheel.settings import FlywheelSettings

LOCAL = FlywheelSettings(kafka_bootstrap="127.0.0.1:1", kafka_fetch_max_wait_ms=10, kafka_session_timeout_s=6)
EKS = FlywheelSettings(profile="eks", kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="OAUTHBEARER",
                       kafka_fetch_max_wait_ms=1500)


def test_local_producers_send_one_record_per_batch() -> None:
    # Tansu advances the high watermark by one per batch, so only single-record batches keep it exact.
    assert confluent_producer_config(LOCAL) | {"linger.ms": 0, "batch.num.messages": 1} == confluent_producer_config(LOCAL)
    assert aiokafka_producer_config(LOCAL)["max_batch_size"] == 1


def test_eks_producers_batch_and_speak_sasl() -> None:
    conf = confluent_producer_config(EKS)
    assert "batch.num.messages" not in conf and conf["acks"] == "all"
    assert (conf["security.protocol"], conf["sasl.mechanism"]) == ("SASL_SSL", "OAUTHBEARER")
    assert "max_batch_size" not in aiokafka_producer_config(EKS)


def test_consumer_fetch_wait_and_session_come_from_settings() -> None:
    conf = confluent_consumer_config(LOCAL, "g", from_beginning=True)
    assert (conf["fetch.wait.max.ms"], conf["session.timeout.ms"]) == (10, 6000)
    assert (conf["auto.offset.reset"], conf["enable.auto.commit"]) == ("earliest", False)


def test_consumer_fetch_wait_is_capped_for_interactive_tools() -> None:
    conf = confluent_consumer_config(EKS, "g", from_beginning=False)
    assert (conf["fetch.wait.max.ms"], conf["auto.offset.reset"]) == (500, "latest")


def test_dead_letter_keeps_the_original_bytes_and_the_reason() -> None:
    source = SourceRecord("dataset.version-ready", 2, 41, b"m1", b"\x00garbage")
    record = dead_letter(source, UnknownSchemaId("schema id 7 is unknown"), "orchestrator")
    assert record["envelope"]["correlation_id"] == "dataset.version-ready/2/41"
    assert record["envelope"]["producer"] == "orchestrator"
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == (
        "dataset.version-ready", 2, 41)
    assert (record["original_key"], record["original_value"]) == (b"m1", b"\x00garbage")
    assert (record["error_type"], record["reason"], record["consumer"]) == (
        "UnknownSchemaId", "schema id 7 is unknown", "orchestrator")


def test_dead_letter_of_a_tombstone_with_a_text_key() -> None:
    record = dead_letter(SourceRecord("t", 0, 0, "k", None), ValueError(), "monitor")
    assert (record["original_key"], record["original_value"]) == (b"k", None)
    assert record["reason"] == "ValueError()"
