"""The HTTP app with fake adapters (no broker, no S3, no torch model): OIP v2 routes, request ids, 4xx
bodies, metrics, and hot swaps through the model manager with requests in flight."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from flywheel_serving.app import Parts, create_app
from flywheel_serving.core import Prediction, Target
from flywheel_serving.settings import ServingSettings


class FakePredictor:
    def __init__(self, version: str, delay_s: float = 0.0) -> None:
        self.version, self.labels, self.delay_s = version, ["pos", "neg"], delay_s

    def predict(self, texts: list[str]) -> list[Prediction]:
        time.sleep(self.delay_s)
        return [Prediction(f"pos@{self.version}", 0.75) for _ in texts]


class FakeLoader:
    def __init__(self, delay_s: float = 0.0, load_s: float = 0.0) -> None:
        self.delay_s, self.load_s = delay_s, load_s

    def load(self, directory: Path, version: str) -> FakePredictor:
        time.sleep(self.load_s)
        if "broken" in str(directory):
            raise ValueError("artifact lacks config.json")
        return FakePredictor(version, self.delay_s)


class FakeArtifacts:
    def fetch(self, target: Target) -> Path:
        return Path(target.artifact_uri.removeprefix("s3://"))


class FakeStages:
    def __init__(self, production: dict[str, Target]) -> None:
        self.production_of = production

    def models(self) -> list[str]:
        return list(self.production_of)

    def production(self, model_id: str) -> Target | None:
        return self.production_of.get(model_id)


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    def publish(self, topic_name: str, record: dict[str, Any]) -> None:
        self.published.append((topic_name, record))


def make(loader: FakeLoader | None = None, **settings: Any) -> tuple[Any, FakePublisher]:
    publisher = FakePublisher()
    parts = Parts(FakeStages({"m": Target("m", "v1", "s3://bucket/m/v1")}), FakeArtifacts(),
                  loader or FakeLoader(), publisher)
    app = create_app(ServingSettings(follow_events=False, max_texts_per_request=8, **settings), parts)
    return app, publisher


async def with_client(app: Any, body) -> Any:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            return await body(client)


def infer_body(*texts: str, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": list(texts)}], **extra}


def test_health_metadata_and_a_prediction_speak_oip_v2() -> None:
    app, _ = make()

    async def body(client):
        live = await client.get("/v2/health/live")
        ready = await client.get("/v2/health/ready")
        server = await client.get("/v2")
        meta = await client.get("/v2/models/m")
        model_ready = await client.get("/v2/models/m/ready")
        answer = await client.post("/v2/models/m/infer", json=infer_body("hello", "there", id="req-7"))
        return live, ready, server, meta, model_ready, answer

    live, ready, server, meta, model_ready, answer = asyncio.run(with_client(app, body))
    assert live.json() == {"live": True} and ready.status_code == 200 and ready.json()["models"] == {"m": "v1"}
    assert server.json()["name"] == "flywheel-serving"
    assert meta.json()["versions"] == ["v1"] and meta.json()["inputs"][0]["datatype"] == "BYTES"
    assert model_ready.json() == {"name": "m", "ready": True}
    out = answer.json()
    assert answer.status_code == 200 and out["id"] == "req-7" and out["model_version"] == "v1"
    assert out["outputs"][0]["data"] == ["pos@v1", "pos@v1"] and out["outputs"][1]["data"] == [0.75, 0.75]
    assert answer.headers["x-request-id"]


def test_a_request_id_is_generated_or_taken_from_the_header() -> None:
    app, _ = make()

    async def body(client):
        generated = await client.post("/v2/models/m/infer", json=infer_body("a"))
        given = await client.post("/v2/models/m/infer", json=infer_body("a"), headers={"X-Request-Id": "abc"})
        return generated, given

    generated, given = asyncio.run(with_client(app, body))
    assert generated.json()["id"] == generated.headers["x-request-id"] and len(generated.json()["id"]) == 32
    assert given.json()["id"] == "abc" and given.headers["x-request-id"] == "abc"


@pytest.mark.parametrize(("path", "payload", "status", "reason"), [
    ("/v2/models/m/infer", b"{oops", 400, "not valid JSON"),
    ("/v2/models/m/infer", b'{"inputs": []}', 400, "exactly one tensor"),
    ("/v2/models/m/infer", b'{"inputs": [{"datatype": "INT64", "shape": [1], "data": [1]}]}', 400, "BYTES"),
    ("/v2/models/nope/infer", b'{"inputs": [{"datatype": "BYTES", "shape": [1], "data": ["a"]}]}', 404,
     "not served"),
    ("/v2/models/m/versions/v9/infer", b'{"inputs": [{"datatype": "BYTES", "shape": [1], "data": ["a"]}]}', 404,
     "not served"),
    ("/v2/models/m/infer", b'{"inputs": [{"datatype": "BYTES", "shape": [9], "data": ["a","a","a","a","a",'
                           b'"a","a","a","a"]}]}', 413, "exceed"),
    ("/v1/predict", b'{"model": "m"}', 400, "give `text`"),
    ("/v1/nothing", b"{}", 404, "Not Found"),
])
def test_bad_requests_get_a_4xx_with_an_oip_error_body(path: str, payload: bytes, status: int, reason: str) -> None:
    app, _ = make()

    async def body(client):
        bad = await client.post(path, content=payload)
        after = await client.post("/v2/models/m/infer", json=infer_body("still up"))
        return bad, after

    bad, after = asyncio.run(with_client(app, body))
    assert bad.status_code == status and reason in bad.json()["error"]
    assert after.status_code == 200  # the server took it in its stride


def test_unknown_model_metadata_is_404() -> None:
    app, _ = make()
    response = asyncio.run(with_client(app, lambda c: c.get("/v2/models/nope")))
    assert response.status_code == 404 and "error" in response.json()


def test_the_plain_json_form_and_the_sagemaker_contract() -> None:
    app, _ = make()

    async def body(client):
        return (await client.post("/v1/predict", json={"model": "m", "text": "hi", "id": "q"}),
                await client.post("/invocations", json={"texts": ["a", "b"]}), await client.get("/ping"))

    simple, invocations, ping = asyncio.run(with_client(app, body))
    assert simple.json() == {"id": "q", "model": "m", "model_version": "v1",
                             "predictions": [{"label": "pos@v1", "probability": 0.75}]}
    assert len(invocations.json()["predictions"]) == 2 and ping.status_code == 200


def test_metrics_count_requests_batches_and_the_version_in_production() -> None:
    app, _ = make()

    async def body(client):
        await client.post("/v2/models/m/infer", json=infer_body("a", "b"))
        await client.post("/v2/models/m/infer", content=b"{")
        return (await client.get("/metrics")).text

    text = asyncio.run(with_client(app, body))
    assert 'flywheel_serving_requests_total{code="200",model="m",protocol="v2"} 1.0' in text
    assert 'flywheel_serving_requests_total{code="400",model="m",protocol="v2"} 1.0' in text
    assert 'flywheel_serving_batch_size_count{model="m"} 1.0' in text
    assert 'flywheel_serving_model_version_info{model="m",version="v1"} 1.0' in text


def test_a_swap_under_load_fails_no_request_and_answers_switch_to_the_new_version() -> None:
    app, _ = make(FakeLoader(delay_s=0.005, load_s=0.2), max_wait_ms=1.0)
    manager = app.state.manager

    async def body(client):
        async def client_loop(stop: asyncio.Event) -> list[tuple[int, str]]:
            seen = []
            while not stop.is_set():
                response = await client.post("/v2/models/m/infer", json=infer_body("x"))
                seen.append((response.status_code, response.json().get("model_version")))
            return seen

        stop = asyncio.Event()
        clients = [asyncio.create_task(client_loop(stop)) for _ in range(8)]
        await asyncio.sleep(0.1)
        swapped = await manager.want(Target("m", "v2", "s3://bucket/m/v2", {"event_id": "e", "correlation_id": "c"}))
        await asyncio.sleep(0.1)
        stop.set()
        return swapped, [r for c in clients for r in await c]

    swapped, seen = asyncio.run(with_client(app, body))
    assert swapped and seen and all(status == 200 for status, _ in seen)
    versions = [v for _, v in seen]
    assert "v1" in versions and versions[-1] == "v2" and set(versions) == {"v1", "v2"}


def test_a_broken_artifact_keeps_the_old_version_and_publishes_load_failed() -> None:
    app, publisher = make()
    manager = app.state.manager

    async def body(client):
        cause = {"event_id": "ev-1", "correlation_id": "corr-1"}
        swapped = await manager.want(Target("m", "v2", "s3://broken/m/v2", cause))
        answer = await client.post("/v2/models/m/infer", json=infer_body("x"))
        return swapped, answer, await client.get("/metrics")

    swapped, answer, metrics = asyncio.run(with_client(app, body))
    assert not swapped and answer.json()["model_version"] == "v1"
    [(topic, record)] = publisher.published
    assert topic == "model.load-failed" and record["model_version"] == "v2" and record["serving_version"] == "v1"
    assert "config.json" in record["reason"] and record["envelope"]["causation_id"] == "ev-1"
    assert record["envelope"]["correlation_id"] == "corr-1"
    assert 'flywheel_serving_load_failures_total{model="m"} 1.0' in metrics.text


def test_a_superseded_load_never_swaps_in() -> None:
    app, _ = make(FakeLoader(load_s=0.1))
    manager = app.state.manager

    async def body(client):
        older = asyncio.create_task(manager.want(Target("m", "v2", "s3://bucket/m/v2")))
        await asyncio.sleep(0.02)
        newer = asyncio.create_task(manager.want(Target("m", "v3", "s3://bucket/m/v3")))
        await asyncio.gather(older, newer)
        return (await client.post("/v2/models/m/infer", json=infer_body("x"))).json()["model_version"]

    assert asyncio.run(with_client(app, body)) == "v3"


class CountingArtifacts(FakeArtifacts):
    def __init__(self) -> None:
        self.fetched: list[str] = []

    def fetch(self, target: Target) -> Path:
        self.fetched.append(target.version)
        return super().fetch(target)


def test_registered_versions_are_prefetched_for_served_models_only() -> None:
    artifacts = CountingArtifacts()
    parts = Parts(FakeStages({"m": Target("m", "v1", "s3://bucket/m/v1")}), artifacts, FakeLoader(), FakePublisher())
    app = create_app(ServingSettings(follow_events=False, models=("m",)), parts)
    manager = app.state.manager

    async def body(client):
        manager.prefetch_from_thread(Target("m", "v2", "s3://bucket/m/v2"))
        manager.prefetch_from_thread(Target("other", "v9", "s3://bucket/other/v9"))
        await asyncio.sleep(0.2)
        return (await client.post("/v2/models/m/infer", json=infer_body("x"))).json()["model_version"]

    assert asyncio.run(with_client(app, body)) == "v1"  # prefetched, not promoted
    assert artifacts.fetched == ["v1", "v2"]


def test_feedback_joins_labels_to_predictions_and_counts_unknown_ids() -> None:
    app, _ = make()

    async def body(client):
        answered = await client.post("/v2/models/m/infer", json=infer_body("a", "b", id="r-1"))
        simple = await client.post("/v1/predict", json={"model": "m", "text": "c"})
        joined = await client.post("/v2/models/m/feedback", json={"id": "r-1", "labels": ["pos@v1", "neg"]})
        again = await client.post("/v2/models/m/feedback", json={"id": "r-1", "labels": ["pos@v1", "neg"]})
        single = await client.post("/v2/models/m/feedback", json={"id": simple.json()["id"], "label": "pos@v1"})
        unknown = await client.post("/v2/models/m/feedback", json={"id": "never", "label": "x"})
        bad = await client.post("/v2/models/m/feedback", content=b'{"id": "x"}')
        return answered, joined, again, single, unknown, bad, (await client.get("/metrics")).text

    answered, joined, again, single, unknown, bad, metrics = asyncio.run(with_client(app, body))
    assert answered.status_code == 200
    assert joined.json() == {"id": "r-1", "model_version": "v1", "count": 2, "correct": 1}
    assert again.status_code == 404 and unknown.status_code == 404 and "dropped" in unknown.json()["error"]
    assert single.json()["correct"] == 1 and bad.status_code == 400
    assert 'flywheel_serving_feedback_total{model="m",outcome="correct",version="v1"} 2.0' in metrics
    assert 'flywheel_serving_feedback_total{model="m",outcome="incorrect",version="v1"} 1.0' in metrics
    assert 'flywheel_serving_feedback_unknown_total{model="m"} 2.0' in metrics
