"""The shared Faust app factory: Tansu-safe settings, the fetch-wait override, dead-letter routing (no broker)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from flywheel.bootstrap import build_codec
from flywheel.events import envelope
from flywheel.faust_app import DEAD_LETTERS, DeadLetters, FaustPublisher, FlywheelTransport, decoded, make_app
from flywheel.settings import FlywheelSettings


@pytest.fixture
def settings(tmp_path: Path) -> FlywheelSettings:
    return FlywheelSettings(kafka_bootstrap="127.0.0.1:1", kafka_fetch_max_wait_ms=10, kafka_session_timeout_s=6,
                            data_dir=tmp_path)


def test_app_is_wired_from_settings_only(settings: FlywheelSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_SESSION_TIMEOUT", "99")  # Faust's own env name must not leak in
    app = make_app("monitor", settings)
    assert isinstance(app.transport, FlywheelTransport)
    assert str(app.conf.broker[0]) == "flywheel://127.0.0.1:1"
    assert (app.conf.id, app.conf.broker_session_timeout, app.conf.producer_max_batch_size) == (
        "flywheel-monitor", 6.0, 1)
    assert (settings.data_dir / "monitor").is_dir()


def test_eks_profile_batches_producer_records(tmp_path: Path) -> None:
    eks = FlywheelSettings(profile="eks", kafka_security_protocol="SASL_SSL", data_dir=tmp_path)
    assert make_app("monitor", eks).conf.producer_max_batch_size == 16384


def test_worker_consumer_gets_the_configured_fetch_wait(settings: FlywheelSettings) -> None:
    # Faust hard-codes 1500 ms for the worker consumer; Tansu would hold every fetch that long.
    async def build() -> int:
        app = make_app("monitor", settings)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(build()) == 10


class FakeTopic:
    """The one outbound edge of DeadLetters."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    async def send(self, key: bytes, value: bytes) -> None:
        self.sent.append((key, value))


def message(offset: int, value: Any, topic: str = "retrain.requested") -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=1, offset=offset, key=b"m1", value=value)


class FakeStream:
    def __init__(self, messages: list[SimpleNamespace]) -> None:
        self.messages = messages

    async def events(self) -> Any:
        for msg in self.messages:
            yield SimpleNamespace(message=msg)


def test_decoded_yields_good_records_and_dead_letters_the_rest(settings: FlywheelSettings) -> None:
    codec = build_codec(settings)
    dead_letters = DeadLetters(FaustPublisher(make_app("monitor", settings), codec, "monitor"))
    outbound = dead_letters.publisher._topics["monitor.dead-letter"] = FakeTopic()
    good = codec.encode("RetrainRequested", {"envelope": envelope("t"), "model_id": "m", "trigger": "MANUAL",
                                             "rule": "r"})
    before = DEAD_LETTERS.labels("monitor", "retrain.requested", "UndecodableRecord")._value.get()
    stream = FakeStream([message(0, b"\x00\x00"), message(1, good), message(2, None),
                         message(3, good, topic="model.metrics-observed")])

    async def drain() -> list[tuple[Any, Any]]:
        return [item async for item in decoded(stream, codec, dead_letters)]

    out = asyncio.run(drain())
    assert [(msg.offset, item.name) for msg, item in out] == [(1, "flywheel.RetrainRequested")]
    letters = [(key, codec.decode(value).record) for key, value in outbound.sent]
    assert [(key, r["source_offset"], r["error_type"]) for key, r in letters] == [
        (b"retrain.requested", 0, "UndecodableRecord"), (b"retrain.requested", 2, "UndecodableRecord"),
        (b"model.metrics-observed", 3, "InvalidEvent")]
    assert letters[0][1]["original_value"] == b"\x00\x00" and letters[1][1]["original_value"] is None
    assert letters[2][1]["original_value"] == good
    assert DEAD_LETTERS.labels("monitor", "retrain.requested", "UndecodableRecord")._value.get() == before + 2


def test_a_service_publishes_only_to_topics_it_owns(settings: FlywheelSettings) -> None:
    publisher = FaustPublisher(make_app("monitor", settings), build_codec(settings), "monitor")
    record = {"envelope": envelope("t"), "model_id": "m", "trigger": "MANUAL", "rule": "r"}
    with pytest.raises(ValueError, match="monitor does not produce retrain.manual-requested .*operator"):
        asyncio.run(publisher.publish("retrain.manual-requested", record))
    outbound = publisher._topics["retrain.requested"] = FakeTopic()
    asyncio.run(publisher.publish("retrain.requested", record))
    assert outbound.sent[0][0] == b"m"  # the key is the catalogue's key field
