"""Feedback across replicas (docs/decisions/0007-serving.md): a label for an id this replica did not answer is
forwarded on serving.feedback-forwarded (202); the replica that answered joins it through the same path as
feedback posted to it; every other replica, and the origin itself, ignores it; nothing is forwarded twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_serving_http import infer_body, make

from flywheel.codec import AvroCodec
from flywheel.events import now_ms
from flywheel.registry import EmbeddedRegistry
from flywheel.schemas import SchemaSet
from flywheel.settings import REPO_SCHEMA_DIR
from flywheel_serving.adapters import EventFollower
from flywheel_serving.events import feedback_forwarded, forwarded_of
from flywheel_serving.handlers import Forwarding
from flywheel_serving.settings import ServingSettings
from flywheel_serving.topics import CONSUMES, FORWARDED_TOPIC

pytestmark = pytest.mark.unit


class Bus:
    """Every replica's publisher and follower at once: what one publishes on the forwarded topic, all get."""

    def __init__(self) -> None:
        self.replicas: list[Any] = []
        self.forwarded: list[dict[str, Any]] = []

    def replica(self, name: str) -> Any:
        app, publisher = make(models=("m",))
        app.state.handlers.forwarding = Forwarding(publisher, name)
        publisher.publish = lambda topic, record: self.send(topic, record)
        self.replicas.append(app)
        return app

    def send(self, topic: str, record: dict[str, Any]) -> None:
        if topic != FORWARDED_TOPIC:  # live windows at shut-down
            return
        self.forwarded.append(record)
        for app in self.replicas:
            app.state.handlers.forwarded(*forwarded_of(topic, record))


async def both(a: Any, b: Any, body) -> Any:
    import httpx

    async with a.router.lifespan_context(a), b.router.lifespan_context(b):
        clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=x), base_url="http://serving") for x in (a, b)]
        async with clients[0], clients[1]:
            return await body(*clients)


def test_feedback_posted_to_another_replica_is_joined_where_the_request_was_answered() -> None:
    bus = Bus()
    a, b = bus.replica("a"), bus.replica("b")

    async def body(to_a, to_b):
        answered = await to_a.post("/v2/models/m/infer", json=infer_body("x", "y", id="r-1"))
        forwarded = await to_b.post("/v2/models/m/feedback", json={"id": "r-1", "labels": ["pos@v1", "neg"]})
        again = await to_a.post("/v2/models/m/feedback", json={"id": "r-1", "labels": ["pos@v1", "neg"]})
        return answered, forwarded, again, (await to_a.get("/metrics")).text, (await to_b.get("/metrics")).text

    answered, forwarded, again, metrics_a, metrics_b = asyncio.run(both(a, b, body))
    assert answered.status_code == 200
    assert forwarded.status_code == 202 and forwarded.json() == {"id": "r-1", "forwarded": True}
    [record] = bus.forwarded[:1]
    assert record["origin_replica"] == "b" and record["labels"] == ["pos@v1", "neg"] and record["model_id"] == "m"
    assert record["envelope"]["correlation_id"] == "r-1" and record["envelope"]["producer"] == "serving"
    # joined once on A, through the same counters as direct feedback; A's second post finds nothing here
    assert 'flywheel_serving_feedback_total{model="m",outcome="correct",version="v1"} 1.0' in metrics_a
    assert 'flywheel_serving_feedback_total{model="m",outcome="incorrect",version="v1"} 1.0' in metrics_a
    assert 'flywheel_serving_feedback_forwarded_received_total{model="m",outcome="joined"} 1.0' in metrics_a
    assert 'flywheel_serving_feedback_forwarded_total{model="m"} 1.0' in metrics_b
    assert "flywheel_serving_feedback_total{" not in metrics_b
    assert again.status_code == 202  # already labelled: forwarded, and joined nowhere
    assert len(bus.forwarded) == 2  # the handler of a forwarded label never publishes: no loop


def test_feedback_for_a_model_not_served_here_is_unknown_not_forwarded() -> None:
    bus = Bus()
    a = bus.replica("a")

    async def body(client):
        return await client.post("/v2/models/other/feedback", json={"id": "r-1", "label": "x"})

    answer = asyncio.run(_with(a, body))
    assert answer.status_code == 404 and bus.forwarded == []


def test_a_replica_ignores_its_own_forwarded_labels_and_ids_it_did_not_answer() -> None:
    app, publisher = make(models=("m",))
    handlers = app.state.handlers
    handlers.forwarding = Forwarding(publisher, "a")

    async def body(client):
        await client.post("/v2/models/m/infer", json=infer_body("x", id="r-1"))
        handlers.forwarded("m", "r-1", ["pos@v1"], "a")  # its own: not joined even though it knows the id
        handlers.forwarded("m", "other", ["pos@v1"], "b")  # answered elsewhere: ignored
        handlers.forwarded("m", "r-1", ["pos@v1", "neg"], "b")  # labels that do not fit: refused, kept
        handlers.forwarded("n", "r-1", ["pos@v1"], "b")  # another model's id: ignored
        mid = (await client.get("/metrics")).text
        handlers.forwarded("m", "r-1", ["pos@v1"], "b")
        return mid, (await client.get("/metrics")).text

    mid, after = asyncio.run(_with(app, body))
    assert "flywheel_serving_feedback_total{" not in mid
    assert 'flywheel_serving_feedback_forwarded_received_total{model="m",outcome="refused"} 1.0' in mid
    assert 'flywheel_serving_feedback_total{model="m",outcome="correct",version="v1"} 1.0' in after
    assert not [t for t, _ in publisher.published if t == FORWARDED_TOPIC]


def test_without_forwarding_unknown_ids_are_counted_and_dropped() -> None:
    app, publisher = make(models=("m",))  # follow_events off: nothing would deliver forwarded labels
    assert app.state.handlers.forwarding is None

    async def body(client):
        return await client.post("/v2/models/m/feedback", json={"id": "never", "label": "x"})

    assert asyncio.run(_with(app, body)).status_code == 404
    assert not [t for t, _ in publisher.published if t == FORWARDED_TOPIC]


def test_a_failed_forward_is_a_503_to_retry() -> None:
    app, publisher = make(models=("m",))

    def refuse(topic: str, record: dict[str, Any]) -> None:
        raise TimeoutError("broker down")

    publisher.publish = refuse
    app.state.handlers.forwarding = Forwarding(publisher, "a")

    async def body(client):
        return await client.post("/v2/models/m/feedback", json={"id": "never", "label": "x"})

    answer = asyncio.run(_with(app, body))
    assert answer.status_code == 503 and "retry" in answer.json()["error"]


def test_the_forwarded_record_fits_its_contract_and_the_follower_routes_it() -> None:
    codec = AvroCodec(EmbeddedRegistry(SchemaSet(REPO_SCHEMA_DIR)))
    record = feedback_forwarded("m", "r-1", ["a", "b"], "pod-1-abcd", now_ms(), "serving")
    encoded = codec.encode("FeedbackForwarded", record, check=True)
    assert FORWARDED_TOPIC in CONSUMES
    got: list[tuple[Any, ...]] = []
    follower = EventFollower(ServingSettings(), codec, CONSUMES, lambda t: None, lambda t: None, None,
                             lambda: None, on_forwarded=lambda *args: got.append(args))

    class Message:
        def topic(self) -> str:
            return FORWARDED_TOPIC

        def value(self) -> bytes:
            return encoded

    follower._handle(Message())
    assert got == [("m", "r-1", ["a", "b"], "pod-1-abcd")]


async def _with(app: Any, body) -> Any:
    from test_serving_http import with_client

    return await with_client(app, body)
