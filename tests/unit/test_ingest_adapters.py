"""Ingest's adapters at the Kafka edge: which publish failures are permanent (Unpublishable) and which are
retried; the encoded size the Ingestor checks before publishing. The FaustPublisher is faked at its edge (what
Faust's producer raises); the encoder is the real one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import errors as kafka_errors
from botocore.exceptions import ClientError
from faust.exceptions import ProducerSendError

from flywheel.bootstrap import build_codec
from flywheel.errors import InvalidEvent
from flywheel.publish import TopicEncoder
from flywheel.settings import FlywheelSettings
from flywheel_ingest.adapters import AckedPublish, permanent_publish_error, transient_store_error
from flywheel_ingest.ports import Unpublishable

ENCODER = TopicEncoder(build_codec(FlywheelSettings()))
RECORD = {"envelope": {"event_id": "e", "occurred_at": 1, "correlation_id": "c", "causation_id": None,
                       "producer": "ingest"},
          "model_id": "m", "dataset_version_id": None, "bucket": "b", "key": "k", "reason": "NO_DATA",
          "detail": "d", "line": None}


class FailingPublisher:
    """FaustPublisher's edge: the real encoder, a send that raises what Faust's producer raised."""

    def __init__(self, error: BaseException | None) -> None:
        self.encoder, self.error, self.calls = ENCODER, error, []

    async def publish(self, topic: str, record: dict[str, Any], *, acked: bool = False) -> None:
        self.calls.append((topic, acked))
        if self.error is not None:
            raise self.error


def wrapped(error: BaseException) -> BaseException:
    """What Faust's producer raises: ProducerSendError from the Kafka error."""
    try:
        raise ProducerSendError(f"Error while sending: {error!r}") from error
    except ProducerSendError as exc:
        return exc


@pytest.mark.parametrize(("error", "too_large"), [
    (wrapped(kafka_errors.MessageSizeTooLargeError("The message is 1200000 bytes")), True),
    (kafka_errors.MessageSizeTooLargeError(), True),  # the broker's answer, raised by the delivery future
    (kafka_errors.RecordListTooLargeError(), True),
    (wrapped(kafka_errors.CorruptRecordException()), False),
    (InvalidEvent("dataset.rejected is keyed by model_id, which the record does not have"), False),
])
def test_a_record_refused_for_good_is_unpublishable(error: BaseException, too_large: bool) -> None:
    publish = AckedPublish(FailingPublisher(error))  # type: ignore[arg-type]
    with pytest.raises(Unpublishable) as caught:
        asyncio.run(publish.publish("dataset.rejected", RECORD))
    assert caught.value.too_large is too_large and caught.value.__cause__ is error
    assert permanent_publish_error(error)


@pytest.mark.parametrize("error", [
    wrapped(kafka_errors.KafkaConnectionError("broker away")), kafka_errors.KafkaTimeoutError(),
    kafka_errors.NotLeaderForPartitionError(), wrapped(kafka_errors.TopicAuthorizationFailedError()),
    TimeoutError(), ConnectionError("reset"),
])
def test_broker_trouble_is_raised_as_is_to_be_retried(error: BaseException) -> None:
    publish = AckedPublish(FailingPublisher(error))  # type: ignore[arg-type]
    with pytest.raises(type(error)):
        asyncio.run(publish.publish("dataset.rejected", RECORD))
    assert not permanent_publish_error(error)


def test_publish_waits_for_the_ack_and_size_is_the_encoded_key_and_value() -> None:
    publisher = FailingPublisher(None)
    publish = AckedPublish(publisher)  # type: ignore[arg-type]
    asyncio.run(publish.publish("dataset.rejected", RECORD))
    out = ENCODER.outgoing("dataset.rejected", RECORD)
    assert publisher.calls == [("dataset.rejected", True)]
    assert publish.size("dataset.rejected", RECORD) == len(out.value) + len(b"m")


def test_an_error_raised_while_handling_another_is_not_its_cause() -> None:
    try:
        try:
            raise ValueError("handled inside the client")
        except ValueError:
            raise kafka_errors.KafkaConnectionError("broker away") from None
    except kafka_errors.KafkaConnectionError as exc:
        assert not permanent_publish_error(exc)
    try:
        try:
            raise KeyError("handled")
        except KeyError:
            raise ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
                              "GetObject") from None
    except ClientError as exc:
        assert transient_store_error(exc)
