"""Monitor benchmark (c): breach -> RetrainRequested latency beside a bare produce -> consume hop."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from flywheel_dev.localstack import LocalStack, free_port


def breach_latency(samples: int) -> tuple[list[float], list[float]]:
    """Seconds from producing a tipping metric event to reading its RetrainRequested, and a bare hop."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from flywheel.bootstrap import build_codec
    from flywheel.kafka import confluent_consumer_config, confluent_producer_config
    from flywheel.settings import FlywheelSettings
    from flywheel_dev.harness.monitor import registration
    from flywheel_dev.platform import ServiceProcess

    with tempfile.TemporaryDirectory() as tmp, LocalStack() as stack:
        settings = FlywheelSettings(kafka_bootstrap=stack.kafka_bootstrap, kafka_fetch_max_wait_ms=10)
        codec, producer = build_codec(settings), Producer(confluent_producer_config(settings))
        models = [f"lat-{uuid.uuid4().hex[:6]}" for _ in range(samples)]
        for model in models:
            producer.produce("model.version-registered", key=model.encode(),
                             value=codec.encode("ModelVersionRegistered", registration(model)))
        producer.flush(30)
        monitor = ServiceProcess("monitor", free_port(), {**stack.env(), "FLYWHEEL_DATA_DIR": f"{tmp}/state",
                                                         "FLYWHEEL_LOG_LEVEL": "WARNING"}, Path(tmp) / "m.log")
        monitor.start()
        try:
            monitor.wait_healthy()
            consumer = Consumer(confluent_consumer_config(settings, "bench-latency", from_beginning=True))
            consumer.assign([TopicPartition(t, p, 0) for t in ("retrain.requested", "dataset.rejected")
                             for p in range(4)])
            _warm_up(producer, codec, consumer, models[0])
            breach = [_one_breach(producer, codec, consumer, m) for m in models[1:]]
            bare = [_one_hop(producer, consumer) for _ in models[1:]]
            consumer.close()
        finally:
            monitor.stop()
        return breach, bare


def _warm_up(producer: Any, codec: Any, consumer: Any, model: str) -> None:
    """The first event waits for the worker's group join; not part of the steady-state figure."""
    _one_breach(producer, codec, consumer, model, timeout=120)


def _one_breach(producer: Any, codec: Any, consumer: Any, model: str, timeout: float = 30) -> float:
    from flywheel_dev.harness.monitor import metric_event

    record = metric_event(model, 0.5, 600)
    start = time.perf_counter()
    producer.produce("model.metrics-observed", key=model.encode(), value=codec.encode("ModelMetricsObserved", record))
    producer.flush(10)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(0.05)
        if msg is not None and not msg.error() and msg.topic() == "retrain.requested" and \
                codec.decode(msg.value()).record["envelope"]["causation_id"] == record["envelope"]["event_id"]:
            return time.perf_counter() - start
    raise TimeoutError(f"no RetrainRequested for {model}")


def _one_hop(producer: Any, consumer: Any) -> float:
    """Baseline: bytes produced to a topic nobody processes, read back by the same consumer."""
    marker = uuid.uuid4().bytes
    start = time.perf_counter()
    producer.produce("dataset.rejected", key=b"bench", value=marker)
    producer.flush(10)
    while True:
        msg = consumer.poll(0.05)
        if msg is not None and not msg.error() and msg.value() == marker:
            return time.perf_counter() - start
