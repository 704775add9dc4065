"""The local stack on real Tansu + moto: topics, S3 -> SQS wiring, and the broker quirks the design relies on."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from urllib.parse import unquote_plus

import boto3
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from flywheel.catalogue import TOPICS
from flywheel.kafka import aiokafka_producer_config, confluent_producer_config
from flywheel.settings import FlywheelSettings

RECORDS = 60


def fresh_topic(bootstrap: str) -> str:
    """A private one-partition topic, so other tests' records never blur the watermark."""
    name = f"foundation-probe-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(20)
    return name


def high_watermark(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "foundation-watermarks"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=20)[1]
    finally:
        consumer.close()


def produce_all(conf: dict, topic: str) -> None:
    producer = Producer(conf)
    for i in range(RECORDS):
        producer.produce(topic, value=b"%d" % i)
    assert producer.flush(30) == 0


def test_every_catalogue_topic_exists_with_its_partitions(stack: object) -> None:
    found = AdminClient({"bootstrap.servers": stack.kafka_bootstrap}).list_topics(timeout=20).topics
    assert {t.name: len(found[t.name].partitions) for t in TOPICS if t.name in found} == {
        t.name: t.partitions for t in TOPICS}


def test_local_producer_config_keeps_the_high_watermark_exact(stack_env: dict[str, str]) -> None:
    settings = FlywheelSettings()
    topic = fresh_topic(settings.kafka_bootstrap)
    produce_all(confluent_producer_config(settings), topic)
    assert high_watermark(settings.kafka_bootstrap, topic) == RECORDS


def test_tansu_still_counts_batches_not_records(stack_env: dict[str, str]) -> None:
    """The quirk behind one-record batches; when this fails, Tansu is fixed and the workaround can go."""
    bootstrap = FlywheelSettings().kafka_bootstrap
    topic = fresh_topic(bootstrap)
    produce_all({"bootstrap.servers": bootstrap, "linger.ms": 200, "batch.num.messages": RECORDS}, topic)
    assert high_watermark(bootstrap, topic) < RECORDS


def test_aiokafka_producer_config_keeps_the_high_watermark_exact(stack_env: dict[str, str]) -> None:
    # Faust produces through aiokafka; make_app passes the same one-record batch size.
    from aiokafka import AIOKafkaProducer

    settings = FlywheelSettings()
    topic = fresh_topic(settings.kafka_bootstrap)

    async def produce() -> None:
        producer = AIOKafkaProducer(**aiokafka_producer_config(settings))
        await producer.start()
        try:
            sent = [await producer.send(topic, b"%d" % i) for i in range(RECORDS)]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(produce())
    assert high_watermark(settings.kafka_bootstrap, topic) == RECORDS


def test_dataset_uploads_notify_the_queue_with_url_encoded_keys(stack: object, stack_env: dict[str, str]) -> None:
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    key = f"datasets/m1/{uuid.uuid4().hex[:6]} part=1.csv"
    s3.put_object(Bucket=stack.resources.data_bucket, Key=key, Body=b"text,label\nhi,a\n")
    keys: list[str] = []
    deadline = time.monotonic() + 20
    while key not in keys and time.monotonic() < deadline:
        reply = sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in reply.get("Messages", []):
            body = json.loads(message["Body"])
            keys += [unquote_plus(r["s3"]["object"]["key"]) for r in body.get("Records", [])]
            sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert key in keys


def test_stack_provisions_buckets_and_the_training_role(stack: object, stack_env: dict[str, str]) -> None:
    buckets = {b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]}
    assert {stack.resources.data_bucket, stack.resources.artifact_bucket} <= buckets
    role = boto3.client("iam").get_role(RoleName=stack.resources.sagemaker_role)["Role"]
    assert "sagemaker.amazonaws.com" in json.dumps(role["AssumeRolePolicyDocument"])

