"""Shadow evaluation on the local broker and moto S3 (docs/decisions/0013-shadow-evaluation.md), with serving and
the orchestrator as real processes and real MiniLM artifacts.

The candidate is the production model with its two label names swapped, so it answers the other label for every
text; labelling each request with the label production did not give makes production wrong and the candidate
right on every pair. Serving shadows the candidate from the stage store, pairs the feedback, and emits
model.shadow-evaluated; the orchestrator adds the windows up and promotes the candidate once it has
FLYWHEEL_SHADOW_MIN_PAIRS pairs; serving swaps to it. Then a candidate whose artifact is broken: production goes
on answering and serving publishes model.load-failed; unknown request ids and windows about a version that is
not in shadow change nothing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from flywheel import lifecycle as lc
from flywheel.events import envelope, now_ms
from flywheel_dev.harness.monitor import Bus, wait_for
from flywheel_dev.harness.serving import broken_artifact, build_artifact, infer, register_and_promote, upload
from flywheel_dev.localstack import free_port
from flywheel_dev.platform import Platform, ServiceProcess

pytestmark = pytest.mark.integration
MODEL = f"shadow-{uuid.uuid4().hex[:6]}"
PAIRS = 24  # FLYWHEEL_SHADOW_MIN_PAIRS


@pytest.fixture(scope="module")
def uris(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    s3, bucket = stack.client("s3"), stack.resources.artifact_bucket
    production = build_artifact(tmp_path_factory.mktemp("v1"), labels=["a", "b"], seed=3).read_bytes()
    swapped = build_artifact(tmp_path_factory.mktemp("v2"), labels=["b", "a"], seed=3).read_bytes()
    found = {"v1": upload(s3, bucket, MODEL, "v1", production), "v2": upload(s3, bucket, MODEL, "v2", swapped),
             "v3": upload(s3, bucket, MODEL, "v3", broken_artifact())}
    store = lc.StageStore(s3, bucket)
    register_and_promote(store, MODEL, "v1", found["v1"])
    shadow(store, "v2", found["v2"])  # what the orchestrator's gate does when shadow evaluation is on
    return found


def shadow(store: lc.StageStore, version: str, uri: str) -> lc.ModelStages:
    at = now_ms()
    return store.update(MODEL, lambda s: lc.start_shadow(lc.register(s, version, uri, at=at), version, at=at,
                                                         reason="gate", extra={"cause": f"test-{version}"}))


@pytest.fixture(scope="module")
def services(stack: Any, uris: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("shadow")
    orchestrator = Platform(stack, work / "platform", services=("orchestrator",), extra_env={
        "FLYWHEEL_MODELS": json.dumps([MODEL]), "FLYWHEEL_SHADOW_MIN_PAIRS": str(PAIRS),
        "FLYWHEEL_LOG_FORMAT": "json"}).start()
    env = {**stack.env(), "FLYWHEEL_MODELS": MODEL, "FLYWHEEL_HARVEST_ENABLED": "false",
           "FLYWHEEL_CACHE_DIR": str(work / "cache"), "FLYWHEEL_TORCH_THREADS": "1", "FLYWHEEL_LOG_FORMAT": "json",
           "FLYWHEEL_METRICS_WINDOW_S": "2", "FLYWHEEL_SHADOW_FRACTION": "1.0"}
    serving = ServiceProcess("serving", free_port(), env, work / "serving.log")
    serving.start()
    try:
        serving.wait_healthy(timeout=120)
        shadowed = f'flywheel_serving_shadow_version_info{{model="{MODEL}",version="v2"}} 1.0'
        wait_for(lambda: shadowed in metrics(serving.url), "the candidate shadowed", timeout=120)
        yield serving
    finally:
        serving.stop()
        orchestrator.stop()


@pytest.fixture(scope="module")
def bus(stack: Any) -> Bus:
    return Bus(stack.kafka_bootstrap)


def metrics(url: str) -> str:
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def mine(bus: Bus, topic: str) -> list[dict[str, Any]]:
    return [r for r in bus.read(topic) if r["model_id"] == MODEL]


def test_live_pairs_promote_the_shadowed_candidate_and_serving_swaps_to_it(services: ServiceProcess,
                                                                          bus: Bus) -> None:
    texts = [f"where is parcel {i}, it was due on day {i % 7}" for i in range(PAIRS)]
    answered = []
    for i, text in enumerate(texts):
        status, body = post(f"{services.url}/v1/predict", {"model": MODEL, "id": f"{MODEL}-r{i}", "text": text})
        assert status == 200 and body["model_version"] == "v1"
        answered.append(body["predictions"][0]["label"])
    wait_for(lambda: f'flywheel_serving_shadow_requests_total{{model="{MODEL}",outcome="scored"}} {PAIRS}.0'
             in metrics(services.url), "every request scored by the shadow", timeout=60)
    for i, label in enumerate(answered):
        status, body = post(f"{services.url}/v2/models/{MODEL}/feedback",
                            {"id": f"{MODEL}-r{i}", "label": "b" if label == "a" else "a"})
        assert status == 200 and body["correct"] == 0
    status, _ = post(f"{services.url}/v2/models/{MODEL}/feedback", {"id": "never-answered", "label": "a"})
    assert status == 202  # not answered here: forwarded to the other replicas (docs/decisions/0007-serving.md)

    [promoted] = wait_for(lambda: mine(bus, "model.version-promoted"), "the shadow promotion", timeout=90)
    assert promoted["model_version"] == "v2" and promoted["previous_version"] == "v1"
    assert promoted["reason"] == "shadow"
    evidence = promoted["evidence"]
    assert evidence["live_n"] == PAIRS and evidence["live_b"] == 0 and evidence["live_c"] == PAIRS
    assert evidence["live_candidate_accuracy"] == 1.0 and evidence["live_production_accuracy"] == 0.0
    assert evidence["live_p_value"] == pytest.approx(2.0 ** -PAIRS)
    windows = mine(bus, "model.shadow-evaluated")
    assert sum(w["pairs"] for w in windows) == PAIRS and {w["candidate_version"] for w in windows} == {"v2"}
    assert promoted["envelope"]["causation_id"] in {w["envelope"]["event_id"] for w in windows}

    wait_for(lambda: infer(services.url, MODEL, "where is my parcel")[1].get("model_version") == "v2",
             "serving swapped to the promoted candidate", timeout=60)
    text = metrics(services.url)
    assert f'flywheel_serving_shadow_feedback_total{{model="{MODEL}",outcome="correct",role="shadow"}} {PAIRS}.0' in text
    assert f'flywheel_serving_feedback_forwarded_total{{model="{MODEL}"}} 1.0' in text  # and joined nowhere
    assert f'flywheel_serving_feedback_forwarded_received_total{{model="{MODEL}"' not in text
    assert f'flywheel_serving_shadow_version_info{{model="{MODEL}"' not in text  # promoted: no shadow left


def test_a_broken_candidate_leaves_production_serving_and_unknown_windows_change_nothing(
        services: ServiceProcess, bus: Bus, stack: Any, uris: dict[str, str]) -> None:
    store = lc.StageStore(stack.client("s3"), stack.resources.artifact_bucket)
    wait_for(lambda: (store.read(MODEL) or lc.empty(MODEL)).production == "v2", "v2 in production", timeout=30)
    stages = shadow(store, "v3", uris["v3"])
    bus.send("ModelVersionShadowed", {"envelope": envelope("orchestrator"), "model_id": MODEL, "model_version": "v3",
                                      "artifact_uri": uris["v3"], "production_version": "v2", "reason": "gate",
                                      "evidence": {}})
    [failure] = wait_for(lambda: [r for r in mine(bus, "model.load-failed") if r["model_version"] == "v3"],
                         "model.load-failed for the candidate", timeout=60)
    assert failure["serving_version"] == "v2" and "config.json" in failure["reason"]
    status, body = infer(services.url, MODEL, "still answering?")
    assert status == 200 and body["model_version"] == "v2"

    generation = stages.generation
    bus.send("ModelShadowEvaluated", {
        "envelope": envelope("serving"), "model_id": MODEL, "production_version": "v2", "candidate_version": "v9",
        "window_start": now_ms(), "window_end": now_ms(), "pairs": 50, "production_correct": 0,
        "candidate_correct": 50, "b": 0, "c": 50, "p_value": 0.0, "replica": "test"})
    marker = {"envelope": envelope("serving"), "model_id": MODEL, "production_version": "v2",
              "candidate_version": "v3", "window_start": now_ms(), "window_end": now_ms(), "pairs": 1,
              "production_correct": 1, "candidate_correct": 1, "b": 0, "c": 0, "p_value": 1.0, "replica": "test"}
    bus.send("ModelShadowEvaluated", marker)  # consumed after the unknown one (same key, same partition)
    after = wait_for(lambda: (s := store.read(MODEL)) and s.versions["v3"].shadow.get("n") == 1 and s,
                     "the orchestrator counted the v3 window", timeout=60)
    assert after.generation == generation + 1 and "v9" not in after.versions and after.production == "v2"
