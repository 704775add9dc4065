"""Shadow evaluation in serving (docs/decisions/0013-shadow-evaluation.md) with fake adapters: the pure pairing,
the shadow off the response path, feedback joined for both versions, and a candidate that fails to load."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from flywheel.bootstrap import build_codec
from flywheel.settings import FlywheelSettings
from flywheel_serving.app import Parts, create_app
from flywheel_serving.core import Prediction, Target
from flywheel_serving.settings import ServingSettings
from flywheel_serving.shadow import Scored, ShadowBook, ShadowWindows, sampled

pytestmark = pytest.mark.unit


# -- pure ---------------------------------------------------------------------------------------------------
def test_windows_pair_production_and_candidate_on_the_true_labels() -> None:
    windows = ShadowWindows(10, replica="r1")
    scored = Scored("m", "v1", "v2", ("a", "a", "b", "b"), ("a", "b", "b", "a"))
    paired = windows.pair(scored, "v1", ["a", "b", "a", "a"], at_ms=1_000)
    assert (paired.production_correct, paired.candidate_correct, paired.n) == (1, 3, 4)
    assert windows.pair(scored, "v9", ["a"] * 4, at_ms=1_000) is None  # another version answered
    assert windows.pair(scored, "v1", ["a"], at_ms=1_000) is None  # labels do not fit
    assert windows.close(500) == []  # opened after that boundary
    [record] = windows.close(10_000)
    assert (record["pairs"], record["production_correct"], record["candidate_correct"]) == (4, 1, 3)
    assert (record["b"], record["c"], record["p_value"], record["replica"]) == (0, 2, 0.25, "r1")
    assert windows.close(20_000) == []
    build_codec(FlywheelSettings()).encode("ModelShadowEvaluated", record, check=True)


def test_book_is_bounded_and_a_take_is_once_and_per_model() -> None:
    book = ShadowBook(2)
    for i in range(3):
        book.remember(f"r{i}", Scored("m", "v1", "v2", ("a",), ("b",)))
    assert len(book) == 2 and book.take("m", "r0") is None and book.take("other", "r1") is None
    assert book.take("m", "r1") is not None and book.take("m", "r1") is None


def test_sampling_is_stable_per_request_id() -> None:
    ids = [f"req-{i}" for i in range(2000)]
    share = sum(sampled(i, 0.25) for i in ids) / len(ids)
    assert 0.2 < share < 0.3 and [sampled(i, 0.25) for i in ids] == [sampled(i, 0.25) for i in ids]
    assert all(sampled(i, 1.0) for i in ids[:10]) and not any(sampled(i, 0.0) for i in ids[:10])


# -- the app with fakes -------------------------------------------------------------------------------------
class FakePredictor:
    """Production says `a` for everything; the candidate says `a` unless the text starts with `b`."""

    def __init__(self, version: str, delay_s: float = 0.0) -> None:
        self.version, self.labels, self.delay_s = version, ["a", "b"], delay_s

    def predict(self, texts: list[str]) -> list[Prediction]:
        time.sleep(self.delay_s)
        if self.version == "v1":
            return [Prediction("a", 0.6) for _ in texts]
        return [Prediction("b" if t.startswith("b") else "a", 0.7) for t in texts]


class FakeLoader:
    def __init__(self, shadow_delay_s: float = 0.0) -> None:
        self.shadow_delay_s = shadow_delay_s

    def load(self, directory: Path, version: str) -> FakePredictor:
        if "broken" in str(directory):
            raise ValueError("artifact lacks config.json")
        return FakePredictor(version, self.shadow_delay_s if version != "v1" else 0.0)


class FakeArtifacts:
    def fetch(self, target: Target) -> Path:
        return Path(target.artifact_uri.removeprefix("s3://"))


class FakeStages:
    def __init__(self, shadow: Target | None) -> None:
        self.shadow_target = shadow

    def models(self) -> list[str]:
        return ["m"]

    def production(self, model_id: str) -> Target | None:
        return Target("m", "v1", "s3://bucket/m/v1")

    def shadow(self, model_id: str) -> Target | None:
        return self.shadow_target


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    def publish(self, topic_name: str, record: dict[str, Any]) -> None:
        self.published.append((topic_name, record))


def make(shadow: Target | None, loader: FakeLoader | None = None, **settings: Any) -> tuple[Any, FakePublisher]:
    publisher = FakePublisher()
    parts = Parts(FakeStages(shadow), FakeArtifacts(), loader or FakeLoader(), publisher)
    settings = {"shadow_fraction": 1.0, **settings}
    return create_app(ServingSettings(follow_events=False, harvest_enabled=False, **settings), parts), publisher


async def with_client(app: Any, body) -> Any:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            return await body(client)


async def until(check, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_the_shadow_scores_after_the_response_and_feedback_pairs_both_versions() -> None:
    app, publisher = make(Target("m", "v2", "s3://bucket/m/v2"), FakeLoader(shadow_delay_s=0.3), metrics_window_s=3600)
    manager = app.state.manager

    async def body(client):
        await until(lambda: "m" in manager.shadows)
        answers, latencies = [], []
        for i, text in enumerate(["apple", "banana", "berry", "avocado"]):
            started = time.perf_counter()
            answers.append(await client.post("/v1/predict", json={"model": "m", "id": f"r{i}", "text": text}))
            latencies.append(time.perf_counter() - started)
        assert all(a.json()["model_version"] == "v1" for a in answers)
        await until(lambda: len(manager.shadow_book) == 4)
        for i, truth in enumerate(["a", "b", "b", "b"]):
            assert (await client.post("/v2/models/m/feedback", json={"id": f"r{i}", "label": truth})).status_code == 200
        metrics = (await client.get("/metrics")).text
        return latencies, metrics

    latencies, metrics = asyncio.run(with_client(app, body))
    # the first answer does not wait for its own shadow (0.3 s); a later one waits for at most one shadow forward
    assert latencies[0] < 0.25 and max(latencies) < 0.55, latencies
    [(topic, record)] = [(t, r) for t, r in publisher.published if t == "model.shadow-evaluated"]  # at shut-down
    assert (record["production_version"], record["candidate_version"], record["pairs"]) == ("v1", "v2", 4)
    assert (record["production_correct"], record["candidate_correct"], record["b"], record["c"]) == (1, 3, 0, 2)
    assert 'flywheel_serving_shadow_feedback_total{model="m",outcome="correct",role="shadow"} 3.0' in metrics
    assert 'flywheel_serving_shadow_version_info{model="m",version="v2"} 1.0' in metrics
    assert 'flywheel_serving_shadow_requests_total{model="m",outcome="scored"} 4.0' in metrics


def test_a_bounded_queue_skips_the_shadow_and_promotion_reuses_the_loaded_candidate() -> None:
    app, _ = make(Target("m", "v2", "s3://bucket/m/v2"), FakeLoader(shadow_delay_s=0.2), shadow_max_pending=1)
    manager = app.state.manager

    async def body(client):
        await until(lambda: "m" in manager.shadows)
        shadow = manager.shadows["m"]
        await asyncio.gather(*(client.post("/v1/predict", json={"model": "m", "id": f"r{i}", "text": "b"})
                               for i in range(3)))  # answered in one batch: one shadowed, two find it busy
        assert await manager.want(Target("m", "v2", "s3://bucket/m/v2"))
        swapped = manager.current["m"] is shadow and "m" not in manager.shadows
        return swapped, (await client.get("/metrics")).text

    swapped, metrics = asyncio.run(with_client(app, body))
    assert swapped
    assert 'flywheel_serving_shadow_requests_total{model="m",outcome="busy"} 2.0' in metrics


def test_a_candidate_that_fails_to_load_leaves_production_serving_and_says_why() -> None:
    app, publisher = make(Target("m", "v2", "s3://broken/m/v2"))
    manager = app.state.manager

    async def body(client):
        await until(lambda: any(t == "model.load-failed" for t, _ in publisher.published))
        answer = await client.post("/v1/predict", json={"model": "m", "text": "b"})
        unknown = await client.post("/v2/models/m/feedback", json={"id": "never", "label": "b"})
        manager.rejected_from_thread(Target("m", "v9", ""))  # a rejection of a version never shadowed: nothing
        return answer, unknown

    answer, unknown = asyncio.run(with_client(app, body))
    assert answer.status_code == 200 and answer.json()["model_version"] == "v1"
    assert unknown.status_code == 404 and manager.shadows == {}
    [failed] = [r for t, r in publisher.published if t == "model.load-failed"]
    assert failed["model_version"] == "v2" and failed["serving_version"] == "v1"
    assert "config.json" in failed["reason"]
