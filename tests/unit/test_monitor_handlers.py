import asyncio
import math
from types import SimpleNamespace

from prometheus_client import REGISTRY

from flywheel.bootstrap import build_codec
from flywheel.codec import Decoded
from flywheel.publish import TopicEncoder
from flywheel.settings import FlywheelSettings
from flywheel_dev.harness.monitor import metric_event, registration, training_events
from flywheel_monitor.core import MonitorCore
from flywheel_monitor.handlers import MonitorHandlers
from flywheel_monitor.rules import DEFAULT_RULES, RuleSet
from flywheel_monitor.windows import DictWindowStore

CODEC = build_codec(FlywheelSettings())


class FakePublisher:
    """Encodes like FaustPublisher (catalogue schema, key and framing) and keeps (topic, key, decoded)."""

    def __init__(self):
        self.encoder = TopicEncoder(CODEC)
        self.sent = []

    async def publish(self, topic_name, record, *, acked=False):
        out = self.encoder.outgoing(topic_name, record)
        self.sent.append((out.topic, out.key, CODEC.decode(out.value)))


class FakeDeadLetters:
    def __init__(self):
        self.errors = []

    async def send(self, source, error):
        self.errors.append((source.topic, error))


def handlers():
    core = MonitorCore(RuleSet.model_validate(DEFAULT_RULES), DictWindowStore())
    return MonitorHandlers(core, FakePublisher(), FakeDeadLetters(), "monitor", max_models=5)


def feed(h, name, record, topic="t"):
    message = SimpleNamespace(topic=topic, partition=0, offset=0, key=b"k", value=b"v")
    asyncio.run(h.handle(message, Decoded(f"flywheel.{name}", record)))


def sample(name, labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_breach_sends_one_retrain_request_keyed_by_model():
    h = handlers()
    feed(h, "ModelVersionRegistered", registration("m-handlers"))
    for i in range(10):
        feed(h, "ModelMetricsObserved", metric_event("m-handlers", 0.5, 200, at_ms=1_700_000_000_000 + i))
    assert [(t, k, d.name) for t, k, d in h.publisher.sent] == \
        [("retrain.requested", b"m-handlers", "flywheel.RetrainRequested")]
    assert sample("flywheel_monitor_retrain_triggers_total",
                  {"model": "m-handlers", "rule": "accuracy-low", "trigger": "METRIC_BREACH"}) == 1
    assert sample("flywheel_monitor_rule_threshold", {"model": "m-handlers", "rule": "accuracy-low"}) == 0.8
    assert h.dead_letters.errors == []


def test_bad_input_is_dead_lettered_and_processing_goes_on():
    h = handlers()
    feed(h, "ModelMetricsObserved", metric_event("m-unknown", 0.9), topic="model.metrics-observed")
    feed(h, "ModelVersionRegistered", registration("m-bad"))
    feed(h, "ModelMetricsObserved", metric_event("m-bad", math.nan))
    feed(h, "ModelMetricsObserved", metric_event("m-bad", 0.9, -1))
    feed(h, "DatasetRejected", {"envelope": {}})
    feed(h, "ModelMetricsObserved", metric_event("m-bad", 0.9, 10))
    reasons = [str(e) for _, e in h.dead_letters.errors]
    assert len(reasons) == 4
    assert "m-unknown" in reasons[0] and "finite" in reasons[1] and "negative" in reasons[2]
    assert "does not consume" in reasons[3]
    assert sample("flywheel_monitor_observations_total", {"model": "m-bad"}) == 10


def test_training_events_feed_pipeline_metrics():
    before = {s: sample("flywheel_training_runs_total", {"status": s})
              for s in ("started", "succeeded", "failed", "superseded")}
    landed = sample("flywheel_training_data_to_start_seconds_count", {})
    h = handlers()
    for name, record in training_events("m-train"):
        feed(h, name, record)
    for status, count in before.items():
        assert sample("flywheel_training_runs_total", {"status": status}) == count + 1
    assert sample("flywheel_training_data_to_start_seconds_count", {}) == landed + 1
    assert sample("flywheel_training_run_duration_seconds_count", {"status": "succeeded"}) >= 1


def test_model_label_is_capped():
    h = handlers()
    labels = [h.model_label(f"m{i}") for i in range(8)]
    assert labels[:5] == [f"m{i}" for i in range(5)] and set(labels[5:]) == {"_other"}
