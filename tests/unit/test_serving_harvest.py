"""The data flywheel without S3: rows with provenance in the model's columns, batching (max rows, interval,
min rows, shut-down), version names in ingest's layout, create-only writes retried with the rows kept, and the
HTTP path from an answer and its feedback to a written version."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from flywheel.datareader import Rules
from flywheel_ingest.layout import Place, place
from flywheel_serving.app import Parts, create_app
from flywheel_serving.core import Joined, RecentPredictions, Served, Target
from flywheel_serving.harvest import Harvest, HarvestConfig, replica_name, version_name
from flywheel_serving.harvest_store import KeyTaken
from flywheel_serving.harvester import HarvestCounters, Harvester
from flywheel_serving.settings import ServingSettings

T0 = 1_764_300_000_000  # 2025-11-28T03:20:00Z
RULES = {"reviews": Rules(("review", "label"))}


def rules_for(model: str) -> Rules:
    return RULES.get(model, Rules())


def joined(model: str = "m", n: int = 1, rid: str = "r1", texts: tuple[str, ...] | None = None,
           labels: tuple[str, ...] | None = None) -> Joined:
    texts = texts if texts is not None else tuple(f"text {i}" for i in range(n))
    labels = labels if labels is not None else ("b",) * len(texts)
    return Joined(model, "fw-1", tuple(zip(("a",) * len(texts), labels, strict=True)), rid, texts,
                  (0.9,) * len(texts), T0 - 5)


def harvest(**config: Any) -> Harvest:
    return Harvest(HarvestConfig(**{"replica": "pod-1", "interval_ms": 1_000, "max_rows": 4, "min_rows": 2,
                                    **config}), rules_for)


def rows(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines()]


class FakeStore:
    def __init__(self, fail: int = 0, taken: set[str] | None = None, land_then_fail: bool = False) -> None:
        self.objects: dict[str, bytes] = {}
        self.fail, self.taken, self.land_then_fail = fail, taken or set(), land_then_fail

    def put_new(self, key: str, body: bytes) -> None:
        if key in self.objects or key in self.taken:
            raise KeyTaken(key)
        if self.land_then_fail:  # the put lands, its answer is lost
            self.land_then_fail = False
            self.objects[key] = body
            raise ConnectionError("read timeout")
        if self.fail:
            self.fail -= 1
            raise ConnectionError("S3 away")
        self.objects[key] = body


def harvester(store: FakeStore, **config: Any) -> tuple[Harvester, CollectorRegistry]:
    registry = CollectorRegistry()
    return Harvester(harvest(**config), store, HarvestCounters(registry), max_pending_rows=6,
                     clock=lambda: T0), registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_rows_carry_the_text_the_true_label_and_provenance() -> None:
    h = harvest()
    assert h.add(joined(n=2, rid="req-7"), T0).rows == 2
    [batch] = h.due(T0, everything=True)
    first = rows(batch.body)[0]
    assert first == {"request_id": "req-7", "index": 0, "model_version": "fw-1", "predicted_label": "a",
                     "confidence": 0.9, "answered_at": T0 - 5, "labelled_at": T0, "source": "feedback",
                     "text": "text 0", "label": "b"}
    assert batch.prefix == "datasets/m/feedback-20251128T032000-pod-1/"
    assert batch.data_key == batch.prefix + "part-0000.jsonl" and batch.marker_key == batch.prefix + "_SUCCESS"


def test_the_models_text_column_is_used() -> None:
    h = harvest()
    h.add(joined("reviews"), T0)
    [batch] = h.due(T0, everything=True)
    row = rows(batch.body)[0]
    assert row["review"] == "text 0" and "text" not in row


def test_rows_ingest_would_refuse_are_dropped_and_counted() -> None:
    RULES["extra"] = Rules(("text", "lang", "label"))
    h = harvest()
    added = h.add(joined(texts=("fine", "   ", "ok"), labels=("b", "b", "x" * 1001)), T0)
    assert (added.rows, added.dropped) == (1, Counter(invalid=2))
    assert h.add(joined("extra"), T0).dropped == Counter(columns=1)  # a column feedback cannot fill
    assert h.add(joined("bad/model"), T0).dropped == Counter(model_id=1)
    assert h.add(Joined("m", "fw-1", (("a", "b"),)), T0).dropped == Counter(no_text=1)
    assert h.add(joined(texts=("\ud800",)), T0).dropped == Counter(invalid=1)  # not encodable
    assert h.held_rows == 1


def test_batches_are_due_at_max_rows_or_after_the_interval_with_min_rows() -> None:
    h = harvest()
    h.add(joined(n=1), T0)
    assert h.due(T0 + 5_000) == []  # aged but under min_rows: carried
    h.add(joined(n=1), T0 + 5_000)
    [aged] = h.due(T0 + 5_000)
    assert aged.rows == 2
    h.add(joined(n=9), T0 + 6_000)
    assert h.full()
    full = h.due(T0 + 6_000)
    assert [b.rows for b in full] == [4, 4]  # max_rows each; the ninth row waits
    assert len({b.version for b in full}) == 2  # same second, distinct names
    assert h.due(T0 + 6_500) == [] and h.held_rows == 1
    assert [b.rows for b in h.due(T0 + 6_500, everything=True)] == [1]  # shut-down writes whatever is held


def test_version_names_fit_ingests_layout() -> None:
    name = version_name(T0, replica_name("flywheel-serving-7d9f/ü:x" + "y" * 200))
    found = place(f"datasets/m/{name}-12/part-0000.jsonl", ("datasets/",))
    assert isinstance(found, Place) and found.version == name + "-12"
    assert replica_name("///") == "serving"


def test_recent_predictions_bound_the_texts_they_keep() -> None:
    recent = RecentPredictions(capacity=10, max_text_chars=10)
    recent.remember("a", Served("m", "v1", ("x",), ("12345",), (0.5,), T0))
    recent.remember("b", Served("m", "v1", ("x",), ("123456",), (0.5,), T0))  # 11 chars: "a" is forgotten
    assert recent.join("m", "a", ["y"]) is None
    got = recent.join("m", "b", ["y"])
    assert got == Joined("m", "v1", (("x", "y"),), "b", ("123456",), (0.5,), T0)
    assert recent.text_chars == 0 and len(recent) == 0


def test_a_version_is_its_data_object_then_its_marker() -> None:
    store = FakeStore()
    hv, registry = harvester(store)
    hv.add(joined(n=4), T0)
    hv.collect()
    hv.write_pending()
    prefix = "datasets/m/feedback-20251128T032000-pod-1/"
    assert list(store.objects) == [prefix + "part-0000.jsonl", prefix + "_SUCCESS"]
    assert store.objects[prefix + "_SUCCESS"] == b""
    assert value(registry, "flywheel_serving_harvest_rows_total", model="m") == 4
    assert value(registry, "flywheel_serving_harvest_versions_total", model="m") == 1


def test_a_failed_write_keeps_its_rows_and_is_retried_under_the_same_name() -> None:
    store = FakeStore(fail=1)
    hv, registry = harvester(store)
    hv.add(joined(n=4), T0)
    hv.collect()
    hv.write_pending()
    assert store.objects == {} and value(registry, "flywheel_serving_harvest_write_failures_total", model="m") == 1
    hv.write_pending()
    assert sorted(store.objects) == ["datasets/m/feedback-20251128T032000-pod-1/_SUCCESS",
                                     "datasets/m/feedback-20251128T032000-pod-1/part-0000.jsonl"]


def test_a_write_that_landed_before_its_answer_was_lost_is_not_written_twice() -> None:
    store = FakeStore(land_then_fail=True)
    hv, _ = harvester(store)
    hv.add(joined(n=4), T0)
    hv.collect()
    hv.write_pending()
    hv.write_pending()  # the retry finds its own object: goes on to the marker, no second version
    assert len(store.objects) == 2 and all("feedback-20251128T032000-pod-1/" in k for k in store.objects)


def test_a_name_taken_by_someone_else_moves_to_the_next() -> None:
    store = FakeStore(taken={"datasets/m/feedback-20251128T032000-pod-1/part-0000.jsonl"})
    hv, _ = harvester(store)
    hv.add(joined(n=4), T0)
    hv.collect()
    hv.write_pending()
    assert sorted(store.objects) == ["datasets/m/feedback-20251128T032000-pod-1-1/_SUCCESS",
                                     "datasets/m/feedback-20251128T032000-pod-1-1/part-0000.jsonl"]


def test_rows_beyond_the_pending_bound_are_dropped_and_counted() -> None:
    store = FakeStore(fail=100)
    hv, registry = harvester(store)
    for i in range(3):
        hv.add(joined(n=4, rid=f"r{i}"), T0)
        hv.collect()
    assert value(registry, "flywheel_serving_harvest_rows_dropped_total", model="m", reason="overflow") == 8
    assert value(registry, "flywheel_serving_harvest_pending_rows") == 4


def test_stop_writes_what_is_held_and_counts_what_it_cannot() -> None:
    store = FakeStore()
    hv, registry = harvester(store)

    async def run() -> None:
        hv.start()
        hv.add(joined(n=1), T0)  # under min_rows: only stop writes it
        await hv.stop()

    asyncio.run(run())
    assert len(store.objects) == 2
    failing, registry = harvester(FakeStore(fail=100))

    async def run_failing() -> None:
        failing.start()
        failing.add(joined(n=3), T0)
        await failing.stop()

    asyncio.run(run_failing())
    assert value(registry, "flywheel_serving_harvest_rows_dropped_total", model="m", reason="shutdown") == 3


class _Predictor:
    version, labels = "fw-1", ["a", "b"]

    def predict(self, texts: list[str]) -> list[Any]:
        from flywheel_serving.core import Prediction

        return [Prediction("a", 0.8) for _ in texts]


class _Loader:
    def load(self, directory: Any, version: str) -> _Predictor:
        return _Predictor()


class _Artifacts:
    def fetch(self, target: Target) -> Any:
        return target.artifact_uri


class _Stages:
    def models(self) -> list[str]:
        return ["m"]

    def production(self, model_id: str) -> Target | None:
        return Target("m", "fw-1", "s3://b/m") if model_id == "m" else None


class _Publisher:
    def publish(self, topic_name: str, record: dict[str, Any]) -> None:
        pass


@pytest.mark.parametrize("enabled", [True, False])
def test_feedback_over_http_becomes_a_version_when_enabled(enabled: bool) -> None:
    store = FakeStore()
    settings = ServingSettings(follow_events=False, harvest_enabled=enabled, harvest_min_rows=1,
                               replica_id="pod-a")
    app = create_app(settings, Parts(_Stages(), _Artifacts(), _Loader(), _Publisher(), store))

    async def body() -> None:
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                       base_url="http://s") as client:
            await client.post("/v1/predict", json={"model": "m", "texts": ["where is it", "refund"], "id": "q1"})
            answer = await client.post("/v2/models/m/feedback", json={"id": "q1", "labels": ["b", "a"]})
            assert answer.status_code == 200

    asyncio.run(body())
    data = [v for k, v in store.objects.items() if k.endswith(".jsonl")]
    if not enabled:
        assert data == [] and app.state.harvester is None
        return
    [written] = data
    got = rows(written)
    assert [(r["text"], r["label"], r["predicted_label"], r["request_id"]) for r in got] == [
        ("where is it", "b", "a", "q1"), ("refund", "a", "a", "q1")]
    assert got[0]["confidence"] == 0.8 and got[0]["answered_at"] <= got[0]["labelled_at"]
