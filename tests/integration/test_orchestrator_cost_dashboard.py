"""The training-cost dashboard checked like the others: every panel's PromQL returns data from a real Prometheus
scraping a running orchestrator whose runs succeeded, and names only metrics the orchestrator exports.

The runs are local (a stub trainer honouring the entry point's contract, as in test_orchestrator_lifecycle), so
they are charted as instance_type="local" at 0 USD (flywheel_orchestrator.metrics); SageMaker's billing fields
reach the same counters from TrainingRunSucceeded (tests/unit/test_orchestrator_cost_metrics.py, and the
event's fields against moto in test_orchestrator_sagemaker.py)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from flywheel.bootstrap import build_codec
from flywheel.publish import KafkaPublisher
from flywheel.settings import FlywheelSettings
from flywheel_dev.demodata import make_examples
from flywheel_dev.harness import orchestrator as seed
from flywheel_dev.harness.monitor import wait_for
from flywheel_dev.harness.prometheus import Prometheus, metric_names
from flywheel_dev.platform import Platform
from flywheel_dev.timeline import Timeline
from flywheel_monitor import dashboards

UID = "flywheel-training-cost"
MODEL = f"dash-cost-{uuid.uuid4().hex[:6]}"
STUB = """
import json, os, pathlib
out = {"metrics": {"accuracy": 0.9, "macro_f1": 0.8}, "baseline_metrics": {"accuracy": 0.25}}
for d in (os.environ["SM_OUTPUT_DATA_DIR"], os.environ["SM_MODEL_DIR"]):
    pathlib.Path(d).mkdir(parents=True, exist_ok=True)
    pathlib.Path(d, "metrics.json").write_text(json.dumps(out))
pathlib.Path(os.environ["SM_MODEL_DIR"], "labels.json").write_text('["a", "b"]')
"""


@pytest.fixture(scope="module")
def scraped(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, Platform]]:
    work = tmp_path_factory.mktemp("cost-dashboard")
    stub = work / "stub_train.py"
    stub.write_text(STUB)
    env = {"FLYWHEEL_MODELS": json.dumps([MODEL]), "FLYWHEEL_POLICY": json.dumps({"debounce_s": 0}),
           "FLYWHEEL_TRAINING_ENTRY_POINT": str(stub), "FLYWHEEL_LOCAL_STALE_S": "8", "FLYWHEEL_LOG_FORMAT": "json"}
    platform = Platform(stack, work / "platform", services=("orchestrator",), extra_env=env)
    prom = None
    try:
        platform.start()
        prom = Prometheus(work, dashboards.SCRAPES[UID], platform.procs["orchestrator"].web_port)
        yield prom, platform
    finally:
        if prom is not None:
            prom.stop()
        platform.stop()
        log = Path(platform.workdir / "orchestrator.log")
        print(log.read_text()[-3000:] if log.exists() else "")


def publish(version: str, seed_: int) -> None:
    settings = FlywheelSettings()
    seed.publish_dataset(KafkaPublisher(settings, build_codec(settings)), boto3.client("s3"), MODEL, version,
                         make_examples(8, seed=seed_))


def test_every_training_cost_panel_returns_data_and_names_only_exported_metrics(
        scraped: tuple[Prometheus, Platform], stack_env: dict[str, str]) -> None:
    prom, _ = scraped
    settings = FlywheelSettings()
    watch = Timeline(settings, build_codec(settings))
    try:
        # Two runs a few scrapes apart, so that rate() and increase() see the counters move.
        for n in range(2):
            wait_for(lambda n=n: prom.scrapes() >= 3 * (n + 1), f"three scrapes before run {n}")
            publish(f"v{n + 1}", n + 1)
            seed.wait_for(watch, "training.run-succeeded", MODEL, n + 1, timeout_s=120)
            wait_for(lambda n=n: any(float(r["value"][1]) == n + 1 for r in prom.query(
                f'flywheel_orchestrator_run_cost_usd_count{{model_id="{MODEL}"}}')), f"run {n} to reach Prometheus")
    finally:
        watch.close()
    seen = prom.scrapes()
    wait_for(lambda: prom.scrapes() >= seen + 3, "scrapes after the last run")
    exported = prom.names() | {"up"}
    for title, expr in dashboards.queries(dashboards.build(UID)):
        result = prom.query(expr)
        values = [float(r["value"][1]) for r in result]
        assert any(math.isfinite(v) for v in values), f"{UID} / {title}: no data for {expr} ({result})"
        named = set(metric_names(expr))
        assert named <= exported, f"{UID} / {title} names {named - exported}, not exported"
    (local,) = prom.query(f'flywheel_orchestrator_training_billable_seconds_total{{model_id="{MODEL}"}}')
    assert local["metric"]["instance_type"] == "local" and float(local["value"][1]) > 0
    (cost,) = prom.query(f'flywheel_orchestrator_training_cost_usd_total{{model_id="{MODEL}"}}')
    assert float(cost["value"][1]) == 0.0
    p50 = prom.query(f'histogram_quantile(0.5, sum by (le) (rate(flywheel_orchestrator_run_cost_usd_bucket{{model_id="{MODEL}"}}[1d])))')
    assert [float(r["value"][1]) for r in p50] == [0.0]
