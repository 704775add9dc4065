import asyncio
import itertools
import math
from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from prometheus_client import REGISTRY

from flywheel.bootstrap import build_codec
from flywheel.codec import Decoded
from flywheel.errors import InvalidEvent
from flywheel.events import now_ms
from flywheel.publish import TopicEncoder
from flywheel.settings import FlywheelSettings
from flywheel_dev.harness.monitor import metric_event, registration, training_events
from flywheel_monitor.core import MonitorCore
from flywheel_monitor.decoding import MillisDecoder
from flywheel_monitor.handlers import Backoff, MonitorHandlers, consume
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


class FlakyPublisher(FakePublisher):
    """Fails the first `failures` publishes the way a broker away does, then publishes."""

    def __init__(self, failures, error=KafkaTimeoutError):
        super().__init__()
        self.failures, self.error, self.attempts = failures, error, 0

    async def publish(self, topic_name, record, *, acked=False):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error()
        await super().publish(topic_name, record, acked=acked)


class FlakyDeadLetters(FakeDeadLetters):
    def __init__(self, failures):
        super().__init__()
        self.failures, self.attempts = failures, 0

    async def send(self, source, error):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise KafkaTimeoutError()
        await super().send(source, error)


def retrying_handlers(publisher, dead_letters=None):
    """Handlers whose backoff sleeps are recorded instead of slept."""
    slept = []

    async def sleep(seconds):
        slept.append(seconds)

    core = MonitorCore(RuleSet.model_validate(DEFAULT_RULES), DictWindowStore())
    h = MonitorHandlers(core, publisher, dead_letters or FakeDeadLetters(), "monitor", max_models=5,
                        backoff=Backoff(0.1, 0.3), sleep=sleep)
    return h, slept


def test_a_failing_publish_is_retried_until_it_succeeds_and_nothing_is_dead_lettered(caplog):
    """A broker timeout is not bad input: the retrain request goes out exactly once, after the retries."""
    publisher = FlakyPublisher(failures=4)
    h, slept = retrying_handlers(publisher)
    retries = sample("flywheel_monitor_publish_retries_total", {"topic": "retrain.requested"})
    feed(h, "ModelVersionRegistered", registration("m-flaky"))
    for i in range(10):
        feed(h, "ModelMetricsObserved", metric_event("m-flaky", 0.5, 200, at_ms=1_700_000_000_000 + i))
    assert [(t, k) for t, k, _ in publisher.sent] == [("retrain.requested", b"m-flaky")]
    assert h.dead_letters.errors == []
    assert slept == [0.1, 0.2, 0.3, 0.3]  # doubling, capped
    assert sample("flywheel_monitor_publish_retries_total", {"topic": "retrain.requested"}) == retries + 4
    request = publisher.sent[0][2].record
    warnings = [r for r in caplog.records if r.getMessage().startswith("publishing to retrain.requested failed")]
    assert len(warnings) == 4
    assert {(r.event_id, r.correlation_id, r.causation_id) for r in warnings} == \
        {(request["envelope"]["event_id"], request["envelope"]["correlation_id"],
          request["envelope"]["causation_id"])}


@pytest.mark.parametrize("error", [lambda: InvalidEvent("cannot encode"), MessageSizeTooLargeError])
def test_a_publish_no_retry_can_cure_is_dead_lettered_at_once(error):
    publisher = FlakyPublisher(failures=1, error=error)
    h, slept = retrying_handlers(publisher)
    feed(h, "ModelVersionRegistered", registration("m-permanent"))
    for i in range(10):
        feed(h, "ModelMetricsObserved", metric_event("m-permanent", 0.5, 200, at_ms=1_700_000_000_000 + i))
    assert publisher.sent == [] and slept == []
    assert [type(e) for _, e in h.dead_letters.errors] == [type(error())]


def test_a_failing_dead_letter_send_is_retried_not_raised():
    dead_letters = FlakyDeadLetters(failures=2)
    h, slept = retrying_handlers(FakePublisher(), dead_letters)
    feed(h, "ModelMetricsObserved", metric_event("m-nobody", 0.9))
    assert [str(e) for _, e in dead_letters.errors] == ["model 'm-nobody' has no registered version"]
    assert slept == [0.1, 0.2]


def test_metrics_from_the_future_are_dead_lettered_and_not_counted():
    h = handlers()
    feed(h, "ModelVersionRegistered", registration("m-future"))
    feed(h, "ModelMetricsObserved", metric_event("m-future", 0.9, 10, at_ms=now_ms() + 86_400_000))
    [(_, error)] = h.dead_letters.errors
    assert isinstance(error, InvalidEvent) and "ahead of the monitor's clock" in str(error)
    assert sample("flywheel_monitor_observations_total", {"model": "m-future"}) == 0


def test_unwatched_metrics_are_counted_as_ignored():
    h = handlers()
    before = sample("flywheel_monitor_observations_ignored_total", {"reason": "unwatched_metric"})
    feed(h, "ModelVersionRegistered", registration("m-unwatched"))
    for i in range(3):
        feed(h, "ModelMetricsObserved", metric_event("m-unwatched", 0.9, metric=f"made-up-{i}"))
    assert sample("flywheel_monitor_observations_ignored_total", {"reason": "unwatched_metric"}) == before + 3
    assert sample("flywheel_monitor_observations_total", {"model": "m-unwatched"}) == 0
    assert h.dead_letters.errors == []


def test_backoff_doubles_up_to_its_cap():
    assert list(itertools.islice(Backoff(0.5, 3.0).delays(), 6)) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


class FakeStream:
    def __init__(self, messages):
        self.messages = messages

    async def events(self):
        for message in self.messages:
            yield SimpleNamespace(message=message)


def test_consume_decodes_good_records_and_dead_letters_garbage_through_the_retries():
    dead_letters = FlakyDeadLetters(failures=1)
    h, slept = retrying_handlers(FakePublisher(), dead_letters)
    good = CODEC.encode("ModelVersionRegistered", registration("m-consume"))
    messages = [SimpleNamespace(topic=topic, partition=0, offset=i, key=b"k", value=value)
                for i, (topic, value) in enumerate([("model.metrics-observed", b"\x00garbage"),
                                                     ("model.version-registered", good)])]
    handled = []

    async def handle(message, item):
        handled.append((message.offset, item.name))

    asyncio.run(consume(FakeStream(messages), MillisDecoder(CODEC), h, handle))
    assert handled == [(1, "flywheel.ModelVersionRegistered")]
    assert [(topic, type(e).__name__) for topic, e in dead_letters.errors] == \
        [("model.metrics-observed", "UnknownSchemaId")]
    assert slept == [0.1]
