"""Two monitor workers sharing models through the fenced rule state in S3 (docs/decisions/0015-monitor-scale-out.md).

Workers are MonitorHandlers over one moto S3 bucket (in process), each with its own core and window store, as two
pods; the publisher is a fake that encodes as the real one does.
"""

import asyncio
from types import SimpleNamespace

import pytest

from flywheel.bootstrap import build_codec
from flywheel.codec import Decoded
from flywheel.publish import TopicEncoder
from flywheel.settings import FlywheelSettings
from flywheel_dev.harness.monitor import metric_event, registration
from flywheel_monitor.core import MonitorCore
from flywheel_monitor.handlers import MonitorHandlers
from flywheel_monitor.rules import DEFAULT_RULES, RuleSet
from flywheel_monitor.statestore import ModelStates, S3RuleStates, state_key
from flywheel_monitor.windows import DictWindowStore

BUCKET = "flywheel-artifacts"
T0 = 1_700_000_000_000
MODEL = "m-scaleout"
CODEC = build_codec(FlywheelSettings())


class FakePublisher:
    """Encodes as FaustPublisher does (catalogue schema, key, framing); keeps (topic, key, decoded)."""

    def __init__(self) -> None:
        self.encoder = TopicEncoder(CODEC)
        self.sent: list = []

    async def publish(self, topic_name, record, *, acked=False):
        out = self.encoder.outgoing(topic_name, record)
        self.sent.append((out.topic, out.key, CODEC.decode(out.value)))


class FakeDeadLetters:
    def __init__(self) -> None:
        self.errors: list = []

    async def send(self, source, error):
        self.errors.append((source.topic, error))


@pytest.fixture
def s3(moto_s3):
    moto_s3.create_bucket(Bucket=BUCKET)
    return moto_s3


def worker(s3, name: str) -> MonitorHandlers:
    core = MonitorCore(RuleSet.model_validate(DEFAULT_RULES), DictWindowStore(), clock=lambda: T0 + 3_600_000)
    states = ModelStates(S3RuleStates(s3, BUCKET), core, worker=name)
    return MonitorHandlers(core, FakePublisher(), FakeDeadLetters(), "monitor", max_models=5, states=states)


def feed(h: MonitorHandlers, name: str, record: dict) -> None:
    message = SimpleNamespace(topic="t", partition=0, offset=0, key=b"k", value=b"v")
    asyncio.run(h.handle(message, Decoded(f"flywheel.{name}", record)))


def metrics(h: MonitorHandlers, values: list[float], start: int) -> None:
    for i, v in enumerate(values):
        feed(h, "ModelMetricsObserved", metric_event(MODEL, v, 200, at_ms=start + i * 250))


def requests(*workers: MonitorHandlers) -> list[dict]:
    return [d.record for w in workers for t, _, d in w.publisher.sent if t == "retrain.requested"]


def test_the_worker_taking_a_model_over_continues_its_breach_and_cooldown(s3) -> None:
    a, b = worker(s3, "a"), worker(s3, "b")
    feed(a, "ModelVersionRegistered", registration(MODEL, "v1", at_ms=T0 - 60_000))
    metrics(a, [0.6] * 20, T0)
    assert len(requests(a)) == 1
    # a dies; b never saw the registration (nor any topic replay: retention expired) and takes the model over
    metrics(b, [0.6] * 40, T0 + 6_000)  # the same breach, on b now
    assert requests(b) == [] and b.dead_letters.errors == []
    metrics(b, [0.93] * 20, T0 + 20_000)  # recovered: re-armed, written for the next owner
    metrics(b, [0.6] * 20, T0 + 30_000)  # breached again inside a's cooldown (300 s)
    assert requests(b) == []
    metrics(b, [0.6] * 20, T0 + 310_000)  # after it
    assert len(requests(b)) == 1 and len(requests(a, b)) == 2


def test_two_workers_that_both_believe_they_own_a_model_send_one_request(s3) -> None:
    a, b = worker(s3, "a"), worker(s3, "b")
    for w in (a, b):
        feed(w, "ModelVersionRegistered", registration(MODEL, "v1", at_ms=T0 - 60_000))
    for i in range(20):  # the same stream reaches both (a rebalance overlap, a missed heartbeat)
        event = metric_event(MODEL, 0.6, 200, at_ms=T0 + i * 250)
        feed(a, "ModelMetricsObserved", event)
        feed(b, "ModelMetricsObserved", event)
    assert len(requests(a, b)) == 1
    assert not requests(b), "b's claim was fenced: a wrote the model's state first"
    assert b.core.states[(MODEL, "accuracy-low")].breaching  # it adopted a's state


def test_a_claimed_request_not_yet_sent_is_sent_by_the_next_owner_with_its_id(s3) -> None:
    a, b = worker(s3, "a"), worker(s3, "b")
    feed(a, "ModelVersionRegistered", registration(MODEL, "v1", at_ms=T0 - 60_000))

    async def crash(topic_name, record, *, acked=False):
        raise SystemExit("killed between the claim and the broker's ack")

    a.publisher.publish = crash
    with pytest.raises(SystemExit):
        metrics(a, [0.6] * 20, T0)
    doc = s3.get_object(Bucket=BUCKET, Key=state_key(MODEL))["Body"].read()
    assert b'"pending": [{' in doc
    metrics(b, [0.6], T0 + 6_000)  # b takes the model: the outbox goes out, then is emptied
    [sent] = requests(b)
    assert sent["envelope"]["event_id"] in doc.decode()
    assert b'"pending": []' in s3.get_object(Bucket=BUCKET, Key=state_key(MODEL))["Body"].read()
    metrics(b, [0.6] * 20, T0 + 7_000)
    assert len(requests(b)) == 1


def test_a_rebalance_reloads_what_the_other_worker_decided(s3) -> None:
    a, b = worker(s3, "a"), worker(s3, "b")
    feed(a, "ModelVersionRegistered", registration(MODEL, "v1", at_ms=T0 - 60_000))
    metrics(b, [0.93] * 4, T0 - 10_000)  # b owned it once (knows v1, not breaching)
    metrics(a, [0.6] * 20, T0)  # then a, which fired
    b.states.forget()  # the partition comes back to b
    metrics(b, [0.6] * 20, T0 + 6_000)
    assert len(requests(a, b)) == 1
