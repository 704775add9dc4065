"""Partition ownership rests on every producer putting a model's records on the same partition
(docs/decisions/0009-orchestrator-scale-out.md): checked on the local broker for both clients the platform uses."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaProducer

from flywheel.bootstrap import build_codec
from flywheel.kafka import aiokafka_producer_config
from flywheel.publish import KafkaPublisher, TopicEncoder
from flywheel.settings import FlywheelSettings
from flywheel_dev.harness.orchestrator import retrain_requested
from flywheel_orchestrator.ownership import partition_of

MODELS = [f"own-{uuid.uuid4().hex[:6]}-{i}" for i in range(12)]


def test_the_cli_producer_puts_a_model_on_its_owners_partition(stack_env):
    settings = FlywheelSettings()
    publisher = KafkaPublisher(settings, build_codec(settings))
    for model in MODELS:
        report = publisher.publish("retrain.manual-requested", retrain_requested(model, trigger="MANUAL"))
        assert report.partition() == partition_of(model), model
    assert len({partition_of(m) for m in MODELS}) > 1


def test_the_faust_producer_agrees(stack_env):
    settings = FlywheelSettings()
    encoder = TopicEncoder(build_codec(settings))
    records = [encoder.outgoing("retrain.manual-requested", retrain_requested(m, trigger="MANUAL")) for m in MODELS]

    async def main() -> list[tuple[str, int]]:
        producer = AIOKafkaProducer(**aiokafka_producer_config(settings))
        await producer.start()
        try:
            return [(m, (await producer.send_and_wait(r.topic, r.value, key=r.key)).partition)
                    for m, r in zip(MODELS, records, strict=True)]
        finally:
            await producer.stop()

    for model, partition in asyncio.run(main()):
        assert partition == partition_of(model), model
