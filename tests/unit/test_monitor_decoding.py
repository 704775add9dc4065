"""The monitor's decoder (timestamps as epoch ms) and its Faust window store (event time on read and write)."""

from datetime import UTC, datetime

import pytest

from flywheel.bootstrap import build_codec
from flywheel.codec import decode_for_topic
from flywheel.errors import CodecError, InvalidEvent, UndecodableRecord
from flywheel.settings import FlywheelSettings
from flywheel_dev.harness.monitor import histogram_summary, metric_event, registration
from flywheel_monitor.decoding import MillisDecoder, without_millis

CODEC = build_codec(FlywheelSettings())
DECODER = MillisDecoder(CODEC)
AT = 1_700_000_000_123


def test_same_record_as_the_codec_with_timestamps_as_epoch_ms():
    summary = histogram_summary([5, 5], [0.5], 0.0, 1.0)
    payload = CODEC.encode("ModelMetricsObserved", metric_event("m-dec", 0.9, 10, at_ms=AT, summary=summary))
    fast = DECODER.decode_for_topic("model.metrics-observed", payload)
    slow = decode_for_topic(CODEC, "model.metrics-observed", payload)
    assert fast.name == slow.name == "flywheel.ModelMetricsObserved"
    assert fast.record["window_end"] == AT and fast.record["envelope"]["occurred_at"] == AT
    assert slow.record["window_end"] == datetime.fromtimestamp(AT / 1000, UTC)
    as_ms = {**slow.record, "window_start": AT - 1000, "window_end": AT,
             "envelope": {**slow.record["envelope"], "occurred_at": AT}}
    assert fast.record == as_ms


def test_registration_keeps_its_reference_and_int_timestamps():
    payload = CODEC.encode("ModelVersionRegistered", registration("m-dec", reference={"f": [0.5, 0.5]}, at_ms=AT))
    record = DECODER.decode_for_topic("model.version-registered", payload).record
    assert record["envelope"]["occurred_at"] == AT and record["reference_distribution"] == {"f": [0.5, 0.5]}


@pytest.mark.parametrize("data", [b"\x00not avro at all", None, b""])
def test_garbage_is_a_codec_error(data):
    with pytest.raises(CodecError):
        DECODER.decode(data)


def test_trailing_bytes_are_undecodable():
    payload = CODEC.encode("ModelMetricsObserved", metric_event("m-dec", 0.9, at_ms=AT))
    with pytest.raises(UndecodableRecord, match="trailing"):
        DECODER.decode(payload + b"\x00")


def test_a_record_on_the_wrong_topic_is_invalid():
    payload = CODEC.encode("ModelMetricsObserved", metric_event("m-dec", 0.9, at_ms=AT))
    with pytest.raises(InvalidEvent, match="carries ModelVersionRegistered"):
        DECODER.decode_for_topic("model.version-registered", payload)


def test_only_timestamp_millis_loses_its_logical_type():
    schema = {"type": "record", "name": "r", "fields": [
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "u", "type": {"type": "string", "logicalType": "uuid"}}]}
    assert without_millis(schema)["fields"] == [{"name": "t", "type": {"type": "long"}},
                                                {"name": "u", "type": {"type": "string", "logicalType": "uuid"}}]
