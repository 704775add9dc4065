"""Serving at two replicas on the local broker and moto S3 (docs/decisions/0007-serving.md): requests answered
by replica A, their feedback posted to replica B, as behind a Kubernetes Service. B does not know the ids, so
it forwards the labels on serving.feedback-forwarded (202); A follows that topic, joins them to its answers and
its model.metrics-observed accuracy summary counts every one of them; B joins none."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flywheel.lifecycle import StageStore
from flywheel.settings import FlywheelSettings
from flywheel.topicreader import read_raw_to_end
from flywheel_dev.harness.live import build_artifact_with_reference
from flywheel_dev.harness.monitor import Bus, wait_for
from flywheel_dev.harness.serving import infer, register_and_promote, upload
from flywheel_dev.localstack import free_port
from flywheel_dev.platform import ServiceProcess

pytestmark = pytest.mark.integration
MODEL = f"replicas-{uuid.uuid4().hex[:6]}"
TEXTS = [f"where is parcel {i}, it was due on day {i % 7}" for i in range(12)]


@pytest.fixture(scope="module")
def replicas(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    archive, _ = build_artifact_with_reference(tmp_path_factory.mktemp("artifact"))
    s3, bucket = stack.client("s3"), stack.resources.artifact_bucket
    register_and_promote(StageStore(s3, bucket), MODEL, "v1", upload(s3, bucket, MODEL, "v1", archive.read_bytes()))
    work = tmp_path_factory.mktemp("replicas")
    started: dict[str, ServiceProcess] = {}
    try:
        for name in ("a", "b"):
            env = {**stack.env(), "FLYWHEEL_MODELS": MODEL, "FLYWHEEL_HARVEST_ENABLED": "false",
                   "FLYWHEEL_CACHE_DIR": str(work / f"cache-{name}"), "FLYWHEEL_TORCH_THREADS": "1",
                   "FLYWHEEL_LOG_FORMAT": "json", "FLYWHEEL_REPLICA_ID": f"serving-{name}",
                   "FLYWHEEL_PREFETCH_REGISTERED": "false", "FLYWHEEL_SHADOW_FRACTION": "0",
                   "FLYWHEEL_METRICS_WINDOW_S": "2", "FLYWHEEL_METRICS_MIN_SAMPLES": "1"}
            started[name] = ServiceProcess("serving", free_port(), env, work / f"serving-{name}.log")
            started[name].start()
        for proc in started.values():
            proc.wait_healthy(timeout=180)
            wait_for(lambda p=proc: infer(p.url, MODEL, "warm")[0] == 200, "serving answers", timeout=120)
        yield started
    finally:
        for name, proc in started.items():
            proc.stop()
            print(name, Path(proc.log_path).read_text()[-2000:])


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def metrics(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        return response.read().decode()


def counted(text: str, name: str) -> float:
    """The sum of every sample of `name` for MODEL in a /metrics exposition."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and f'model="{MODEL}"' in line)


def mine(stack: Any, topic: str) -> list[dict[str, Any]]:
    bus = Bus(stack.kafka_bootstrap)
    read = read_raw_to_end(FlywheelSettings(kafka_bootstrap=stack.kafka_bootstrap), [topic], reader="replicas-test")
    return [bus.codec.decode(m.value()).record for m in read.messages if m.key() == MODEL.encode()]


def test_feedback_posted_to_the_other_replica_is_joined_where_the_request_was_answered(
        replicas: dict[str, ServiceProcess], stack: Any) -> None:
    a, b = replicas["a"], replicas["b"]
    answered = []
    for i, text in enumerate(TEXTS):
        status, body = post(f"{a.url}/v1/predict", {"model": MODEL, "id": f"{MODEL}-r{i}", "text": text})
        assert status == 200
        answered.append(body["predictions"][0]["label"])
    labels = ["not-this" if i % 3 == 0 else label for i, label in enumerate(answered)]  # 8 of 12 right
    for i, label in enumerate(labels):
        status, body = post(f"{b.url}/v2/models/{MODEL}/feedback", {"id": f"{MODEL}-r{i}", "label": label})
        assert (status, body) == (202, {"id": f"{MODEL}-r{i}", "forwarded": True})

    wait_for(lambda: counted(metrics(a.url), "flywheel_serving_feedback_total") == len(TEXTS),
             "replica A joined every forwarded label", timeout=30)
    text_a, text_b = metrics(a.url), metrics(b.url)
    assert counted(text_a, "flywheel_serving_feedback_forwarded_received_total") == len(TEXTS)
    assert counted(text_b, "flywheel_serving_feedback_forwarded_total") == len(TEXTS)
    assert counted(text_b, "flywheel_serving_feedback_total") == 0  # B answered none of them
    correct = sum(label == given for label, given in zip(answered, labels, strict=True))
    summaries = wait_for(lambda: (found := [r for r in mine(stack, "model.metrics-observed")
                                            if r["metric"] == "accuracy"])
                         and sum(r["sample_count"] for r in found) >= len(TEXTS) and found,
                         "A's accuracy summaries covering every forwarded label", timeout=30)
    assert sum(r["sample_count"] for r in summaries) == len(TEXTS)
    assert sum(round(r["value"] * r["sample_count"]) for r in summaries) == correct
    forwarded = mine(stack, "serving.feedback-forwarded")
    assert len(forwarded) == len(TEXTS)  # each label once: nothing forwarded again
    assert {r["origin_replica"].rsplit("-", 1)[0] for r in forwarded} == {"serving-b"}
