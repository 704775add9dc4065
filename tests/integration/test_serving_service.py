"""Serving as a process on the local broker and moto S3 with a real MiniLM artifact: start-up loads the
production version from the stage store (and feedback joins its answers); a promotion swaps versions while requests are in flight (all
succeed, answers move to the new version); a broken artifact publishes model.load-failed and the old
version keeps answering."""

from __future__ import annotations

import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flywheel.lifecycle import StageStore
from flywheel_dev.harness.monitor import Bus, registration, wait_for
from flywheel_dev.harness.serving import (
    broken_artifact,
    build_artifact,
    infer,
    promoted,
    register_and_promote,
    upload,
)
from flywheel_dev.localstack import free_port
from flywheel_dev.platform import ServiceProcess

MODEL = f"support-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build_artifact(tmp_path_factory.mktemp("artifact")).read_bytes()


@pytest.fixture(scope="module")
def uris(stack: Any, artifact: bytes) -> dict[str, str]:
    s3, bucket = stack.client("s3"), stack.resources.artifact_bucket
    found = {v: upload(s3, bucket, MODEL, v, artifact) for v in ("v1", "v2")}
    found["v3"] = upload(s3, bucket, MODEL, "v3", broken_artifact())
    register_and_promote(StageStore(s3, bucket), MODEL, "v1", found["v1"])
    return found


@pytest.fixture(scope="module")
def serving(stack: Any, uris: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("serving")
    env = {**stack.env(), "FLYWHEEL_MODELS": MODEL, "FLYWHEEL_HARVEST_ENABLED": "false", "FLYWHEEL_CACHE_DIR": str(work / "cache"),
           "FLYWHEEL_TORCH_THREADS": "1", "FLYWHEEL_LOG_FORMAT": "json"}
    proc = ServiceProcess("serving", free_port(), env, work / "serving.log")
    proc.start()
    try:
        proc.wait_healthy(timeout=120)
        wait_for(lambda: ready(proc.url), "serving ready", timeout=120)
        yield proc
    finally:
        proc.stop()
        print(Path(proc.log_path).read_text()[-4000:])


def serving_cache(proc: ServiceProcess) -> Path:
    return Path(proc.env["FLYWHEEL_CACHE_DIR"])


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def bus(stack: Any) -> Bus:
    return Bus(stack.kafka_bootstrap)


def test_start_up_serves_the_production_version_from_the_stage_store(serving: ServiceProcess) -> None:
    status, body = infer(serving.url, MODEL, "where is my parcel", "refund please")
    assert status == 200 and body["model_version"] == "v1"
    labels, probabilities = body["outputs"][0]["data"], body["outputs"][1]["data"]
    assert set(labels) <= {"billing", "shipping", "returns"} and len(labels) == 2
    assert all(1 / 3 <= p <= 1 for p in probabilities)
    with urllib.request.urlopen(f"{serving.url}/v2/models/{MODEL}", timeout=5) as response:
        assert json.loads(response.read())["versions"] == ["v1"]
    feedback = urllib.request.Request(f"{serving.url}/v2/models/{MODEL}/feedback",
                                      json.dumps({"id": body["id"], "labels": ["shipping", "returns"]}).encode())
    with urllib.request.urlopen(feedback, timeout=5) as response:
        joined = json.loads(response.read())
    assert joined["model_version"] == "v1" and joined["count"] == 2
    assert joined["correct"] == sum(a == b for a, b in zip(labels, ["shipping", "returns"], strict=True))


def test_a_promotion_swaps_with_every_request_in_flight_answered(serving: ServiceProcess, bus: Bus,
                                                                 uris: dict[str, str]) -> None:
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            status, body = infer(serving.url, MODEL, "my invoice is wrong")
            seen.append((status, body.get("model_version")))

    # Registered first: serving prefetches the artifact, so the promotion only has to load it.
    bus.send("ModelVersionRegistered", {**registration(MODEL, "v2"), "artifact_uri": uris["v2"]})
    wait_for(lambda: (serving_cache(serving) / MODEL / "v2" / "config.json").is_file(), "v2 prefetched", timeout=60)
    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        wait_for(lambda: len(seen) >= 8, "requests flowing before the swap", timeout=30)
        bus.send("ModelVersionPromoted", promoted(MODEL, "v2", uris["v2"], previous="v1"))
        wait_for(lambda: sum(1 for _, v in seen[-8:] if v == "v2") == 8, "answers from v2", timeout=60)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=30)
    assert all(status == 200 for status, _ in seen), [s for s in seen if s[0] != 200][:5]
    versions = [v for _, v in seen]
    assert versions[0] == "v1" and versions[-1] == "v2"
    first_v2 = versions.index("v2")
    assert set(versions[first_v2 + 8:]) == {"v2"}  # no flapping back (a few v1 may finish in flight)


def test_a_broken_artifact_publishes_load_failed_and_the_old_version_keeps_serving(
        serving: ServiceProcess, bus: Bus, uris: dict[str, str]) -> None:
    event = promoted(MODEL, "v3", uris["v3"], previous="v2")
    bus.send("ModelVersionPromoted", event)
    [failure] = wait_for(lambda: [r for r in bus.read("model.load-failed") if r["model_id"] == MODEL],
                         "model.load-failed", timeout=60)
    assert failure["model_version"] == "v3" and failure["serving_version"] == "v2"
    assert "config.json" in failure["reason"]
    assert failure["envelope"]["causation_id"] == event["envelope"]["event_id"]
    status, body = infer(serving.url, MODEL, "still answering?")
    assert status == 200 and body["model_version"] == "v2"
    with urllib.request.urlopen(f"{serving.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert f'flywheel_serving_model_version_info{{model="{MODEL}",version="v2"}} 1.0' in text
    assert f'flywheel_serving_load_failures_total{{model="{MODEL}"}} 1.0' in text
