"""Live metrics on the real broker: serving (a process, a real MiniLM artifact with reference.json) answers,
feedback joins its answers, and model.metrics-observed carries the measured accuracy within one window; a
drifted batch of inputs comes out as feature histograms that the monitor's drift rule flags against the
registered reference (its true sample size), while in-distribution traffic does not."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flywheel import features as fx
from flywheel.events import now_ms
from flywheel.lifecycle import StageStore
from flywheel.settings import FlywheelSettings
from flywheel.topicreader import read_raw_to_end
from flywheel_dev.harness.live import build_artifact_with_reference, drifted_texts, support_texts
from flywheel_dev.harness.monitor import Bus, registration, wait_for
from flywheel_dev.harness.serving import infer, register_and_promote, upload
from flywheel_dev.localstack import free_port
from flywheel_dev.platform import ServiceProcess
from flywheel_monitor import drift
from flywheel_monitor.core import MonitorCore
from flywheel_monitor.rules import RuleSet
from flywheel_monitor.windows import DictWindowStore

MODEL = f"live-{uuid.uuid4().hex[:6]}"
WINDOW_S = 2
MIN_SAMPLES = 5


@pytest.fixture(scope="module")
def reference(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> fx.Reference:
    archive, ref = build_artifact_with_reference(tmp_path_factory.mktemp("artifact"))
    s3, bucket = stack.client("s3"), stack.resources.artifact_bucket
    register_and_promote(StageStore(s3, bucket), MODEL, "v1", upload(s3, bucket, MODEL, "v1", archive.read_bytes()))
    return ref


@pytest.fixture(scope="module")
def serving(stack: Any, reference: fx.Reference,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("serving")
    env = {**stack.env(), "FLYWHEEL_MODELS": MODEL, "FLYWHEEL_HARVEST_ENABLED": "false", "FLYWHEEL_CACHE_DIR": str(work / "cache"),
           "FLYWHEEL_TORCH_THREADS": "1", "FLYWHEEL_LOG_FORMAT": "json", "FLYWHEEL_FOLLOW_EVENTS": "false",
           "FLYWHEEL_METRICS_WINDOW_S": str(WINDOW_S), "FLYWHEEL_METRICS_MIN_SAMPLES": str(MIN_SAMPLES)}
    proc = ServiceProcess("serving", free_port(), env, work / "serving.log")
    proc.start()
    try:
        proc.wait_healthy(timeout=120)
        wait_for(lambda: infer(proc.url, MODEL, "warm")[0] == 200, "serving answers", timeout=120)
        yield proc
    finally:
        proc.stop()
        print(Path(proc.log_path).read_text()[-3000:])


def observed(stack: Any) -> list[tuple[int, dict[str, Any]]]:
    """(broker CreateTime ms, record) of every model.metrics-observed of MODEL so far."""
    bus = Bus(stack.kafka_bootstrap)
    read = read_raw_to_end(FlywheelSettings(kafka_bootstrap=stack.kafka_bootstrap), ["model.metrics-observed"],
                           reader="live-test")
    found = []
    for m in read.messages:  # the topic is shared with other tests, some of which put garbage on it on purpose
        if m.key() != MODEL.encode():
            continue
        found.append((m.timestamp()[1], bus.codec.decode(m.value()).record))
    return found


def post_feedback(url: str, request_id: str, labels: list[str]) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/v2/models/{MODEL}/feedback",
                                     json.dumps({"id": request_id, "labels": labels}).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def millis(value: Any) -> int:
    from flywheel.events import to_millis

    return to_millis(value)


def test_feedback_comes_out_as_measured_accuracy_within_one_window(serving: ServiceProcess, stack: Any) -> None:
    rows = support_texts(40, seed=9)
    posted: list[int] = []
    correct = 0
    for i in range(0, len(rows), 5):
        chunk = rows[i:i + 5]
        status, body = infer(serving.url, MODEL, *[t for t, _ in chunk])
        assert status == 200
        posted.append(now_ms())
        correct += post_feedback(serving.url, body["id"], [label for _, label in chunk])["correct"]
        time.sleep(0.55)
    events = wait_for(lambda: (found := [(ts, r) for ts, r in observed(stack) if r["metric"] == "accuracy"])
                      and sum(r["sample_count"] for _, r in found) >= len(rows) and found,
                      "accuracy summaries covering every label", timeout=30)
    assert sum(r["sample_count"] for _, r in events) == len(rows)
    assert sum(round(r["value"] * r["sample_count"]) for _, r in events) == correct  # measured, not made up
    events.sort(key=lambda e: millis(e[1]["window_end"]))
    latencies = [next(ts for ts, r in events if millis(r["window_end"]) > t) - t for t in posted]
    print(f"feedback -> summary on the topic (ms, window {WINDOW_S * 1000}): {sorted(latencies)}")
    assert max(latencies) <= WINDOW_S * 1000 + 300  # p99 <= one window (+ the publish itself)
    f1 = [r for _, r in observed(stack) if r["metric"] == "macro_f1"]
    assert f1 and all(0 <= r["value"] <= 1 for r in f1)


def test_a_drifted_batch_is_flagged_by_the_monitors_drift_rule(serving: ServiceProcess, stack: Any,
                                                               reference: fx.Reference) -> None:
    time.sleep(WINDOW_S + 0.3)  # the earlier traffic's window has closed
    started = now_ms()
    texts = drifted_texts(120, seed=5)
    for i in range(0, len(texts), 8):
        assert infer(serving.url, MODEL, *texts[i:i + 8])[0] == 200

    def features(after: bool) -> list[dict[str, Any]]:
        return [r for _, r in observed(stack) if r["metric"].startswith(fx.FEATURE_PREFIX)
                and (millis(r["window_start"]) >= started) == after]

    drifted = wait_for(lambda: (found := features(True)) and sum(
        r["sample_count"] for r in found if r["metric"] == "feature:text_length") >= len(texts) and found,
        "feature summaries of the drifted batch", timeout=30)
    rules = RuleSet.model_validate({"drift": {"window_s": 86_400, "min_samples": 30}})

    def assess(records: list[dict[str, Any]]) -> list[Any]:
        core = MonitorCore(rules, DictWindowStore())
        core.register(registration(MODEL, "v1", reference=reference.distribution(), at_ms=started - 60_000))
        return [t for r in records for t in core.observe(r).triggers]

    assert assess(features(False)) == []  # the first test's in-distribution traffic
    [trigger] = assess(drifted)
    assert trigger.kind == "DRIFT"
    assert trigger.metric.startswith(fx.FEATURE_PREFIX)  # fired on the first drifted feature to arrive
    live: dict[str, list[int]] = {}
    for r in drifted:
        name = r["metric"][len(fx.FEATURE_PREFIX):]
        live[name] = [a + b for a, b in zip(live.get(name, [0] * len(r["summary"]["bucket_counts"])),
                                            r["summary"]["bucket_counts"], strict=True)]
    report = drift.assess(reference.distribution(), live, rules.drift)
    print({f: (round(s.psi, 3), s.p_adjusted, s.reference_samples) for f, s in report.features.items()})
    assert {fx.OOV_RATE, fx.TEXT_LENGTH} <= set(report.drifted)  # the new vocabulary, the longer texts
    assert report.features[fx.OOV_RATE].reference_samples == reference.rows["reference"] == 120  # not 10,000
