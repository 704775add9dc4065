"""The serving dashboard checked like the monitor's: every panel's PromQL returns data from a real Prometheus
scraping a running serving process (a real MiniLM artifact on the local broker and moto S3) that answered
requests, joined feedback, shadowed a candidate (docs/decisions/0013-shadow-evaluation.md), swapped versions and
refused a broken artifact; and names only metrics it exports."""

from __future__ import annotations

import contextlib
import json
import math
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flywheel import lifecycle as lc
from flywheel.events import now_ms
from flywheel.lifecycle import StageStore
from flywheel_dev.harness.monitor import Bus, registration, wait_for
from flywheel_dev.harness.prometheus import Prometheus, metric_names
from flywheel_dev.harness.serving import (
    LABELS,
    broken_artifact,
    build_artifact,
    infer,
    promoted,
    register_and_promote,
    upload,
)
from flywheel_dev.localstack import free_port
from flywheel_dev.platform import ServiceProcess
from flywheel_monitor import dashboards

MODEL = f"dash-serving-{uuid.uuid4().hex[:6]}"
UID = "flywheel-serving"


@pytest.fixture(scope="module")
def scraped(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, ServiceProcess,
                                                                                      dict[str, str]]]:
    work = tmp_path_factory.mktemp("serving-dashboard")
    artifact = build_artifact(work / "artifact").read_bytes()
    s3, bucket = stack.client("s3"), stack.resources.artifact_bucket
    uris = {v: upload(s3, bucket, MODEL, v, artifact) for v in ("v1", "v2", "v4")}
    uris["v3"] = upload(s3, bucket, MODEL, "v3", broken_artifact())
    register_and_promote(StageStore(s3, bucket), MODEL, "v1", uris["v1"])
    at = now_ms()  # v4 in shadow beside v1, as the gate leaves it when shadow evaluation is on
    StageStore(s3, bucket).update(MODEL, lambda s: lc.start_shadow(lc.register(s, "v4", uris["v4"], at=at), "v4",
                                                                   at=at, reason="gate"))
    env = {**stack.env(), "FLYWHEEL_MODELS": MODEL, "FLYWHEEL_HARVEST_ENABLED": "false", "FLYWHEEL_CACHE_DIR": str(work / "cache"),
           "FLYWHEEL_TORCH_THREADS": "1", "FLYWHEEL_LOG_FORMAT": "json", "FLYWHEEL_SHADOW_FRACTION": "1.0",
           "FLYWHEEL_FEEDBACK_FORWARD": "false"}  # one replica: an unknown id is counted on the unknown panel
    serving = ServiceProcess("serving", free_port(), env, work / "serving.log")
    serving.start()
    prom = None
    try:
        serving.wait_healthy(timeout=120)
        wait_for(lambda: infer(serving.url, MODEL, "ready?")[0] == 200, "serving answers", timeout=120)
        wait_for(lambda: f'flywheel_serving_shadow_version_info{{model="{MODEL}",version="v4"}}' in exposition(serving.url),
                 "v4 shadowed", timeout=120)
        prom = Prometheus(work, dashboards.SCRAPES[UID], serving.web_port)
        yield prom, serving, uris
    finally:
        if prom is not None:
            prom.stop()
        serving.stop()
        print(Path(serving.log_path).read_text()[-3000:])


def exposition(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        return response.read().decode()


def shadow_scored(url: str) -> float:
    prefix = f'flywheel_serving_shadow_requests_total{{model="{MODEL}",outcome="scored"}} '
    return next((float(line.split()[-1]) for line in exposition(url).splitlines() if line.startswith(prefix)), 0.0)


def traffic(url: str, shadowed: bool = False) -> None:
    """Requests of several sizes, feedback for each (the first text labelled as answered, the rest otherwise:
    both outcomes every time), and feedback for a request id never answered. `shadowed`: each feedback waits
    for the shadow to have scored its request (the shadow runs after the response)."""
    for texts in (["where is my parcel"], ["refund please", "invoice wrong"], ["late delivery"] * 4):
        scored = shadow_scored(url) if shadowed else 0.0
        status, body = infer(url, MODEL, *texts)
        assert status == 200, body
        if shadowed:
            wait_for(lambda scored=scored: shadow_scored(url) > scored, "the shadow scored the request", timeout=30)
        answered = body["outputs"][0]["data"]
        labels = [answered[0]] + [next(x for x in LABELS if x != a) for a in answered[1:]]
        send(url, {"id": body["id"], "labels": labels})
    send(url, {"id": "never-answered", "label": "billing"})


def send(url: str, feedback: dict[str, Any]) -> None:
    request = urllib.request.Request(f"{url}/v2/models/{MODEL}/feedback", json.dumps(feedback).encode())
    with contextlib.suppress(urllib.error.HTTPError):  # an unknown id may be refused: it is counted all the same
        urllib.request.urlopen(request, timeout=5).close()


def scrapes_later(prom: Prometheus, n: int = 3) -> None:
    seen = prom.scrapes()
    wait_for(lambda: prom.scrapes() >= seen + n, f"{n} more scrapes")


def test_every_serving_panel_returns_data_and_names_only_exported_metrics(
        scraped: tuple[Prometheus, ServiceProcess, dict[str, str]], stack: Any) -> None:
    prom, serving, uris = scraped
    bus = Bus(stack.kafka_bootstrap)
    # Rounds a few scrapes apart so that rate() sees every counter move (a labelled series appears only with
    # its first increment); a swap to v2 and a refused v3 in between, then two rounds on v2.
    wait_for(lambda: prom.scrapes() >= 3, "three scrapes before round 0")
    traffic(serving.url, shadowed=True)
    scrapes_later(prom)
    traffic(serving.url, shadowed=True)
    bus.send("ModelVersionRegistered", {**registration(MODEL, "v2"), "artifact_uri": uris["v2"]})
    bus.send("ModelVersionPromoted", promoted(MODEL, "v2", uris["v2"], previous="v1"))
    wait_for(lambda: infer(serving.url, MODEL, "swapped?")[1].get("model_version") == "v2", "v2 serving",
             timeout=90)
    bus.send("ModelVersionPromoted", promoted(MODEL, "v3", uris["v3"], previous="v2"))
    wait_for(lambda: prom.query(f'flywheel_serving_load_failures_total{{model="{MODEL}"}}'), "v3 refused",
             timeout=90)
    for _ in range(2):
        scrapes_later(prom)
        traffic(serving.url, shadowed=True)
    scrapes_later(prom)
    exported = prom.names() | {"up"}
    for title, expr in dashboards.queries(dashboards.build(UID)):
        result = prom.query(expr)
        values = [float(r["value"][1]) for r in result]
        assert any(math.isfinite(v) for v in values), f"{UID} / {title}: no data for {expr} ({result})"
        named = set(metric_names(expr))
        assert named <= exported, f"{UID} / {title} names {named - exported}, not exported"
    [version] = prom.query(f'flywheel_serving_model_version_info{{model="{MODEL}"}} == 1')
    assert version["metric"]["version"] == "v2"  # the broken v3 never took production
