"""Every dashboard panel's PromQL returns data from a real Prometheus scraping a monitor fed with events,
and names only metrics the monitor exports."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from flywheel_dev.harness.monitor import (
    Bus,
    histogram_summary,
    metric_event,
    registration,
    training_events,
    wait_for,
)
from flywheel_dev.harness.prometheus import Prometheus, metric_names
from flywheel_dev.localstack import free_port
from flywheel_dev.platform import ServiceProcess
from flywheel_monitor import dashboards

RUN = uuid.uuid4().hex[:6]
REFERENCE = {"len": [0.25, 0.25, 0.25, 0.25]}


@pytest.fixture(scope="module")
def scraped(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, Bus]]:
    work = tmp_path_factory.mktemp("dashboards")
    monitor = ServiceProcess("monitor", free_port(), {**stack.env(), "FLYWHEEL_DATA_DIR": str(work / "state")},
                             work / "monitor.log")
    monitor.start()
    prom = None
    try:
        monitor.wait_healthy()
        prom = Prometheus(work, "flywheel-monitor", monitor.web_port)
        yield prom, Bus(stack.kafka_bootstrap)
    finally:
        if prom is not None:
            prom.stop()
        monitor.stop()


def feed_round(bus: Bus, n: int) -> None:
    """Everything the panels chart: metrics that breach, drifting features, training runs, bad input."""
    model = f"dash-{RUN}-{n}"
    bus.send("ModelVersionRegistered", registration(model, "v1", REFERENCE, at_ms=time.time_ns() // 10**6 - 60_000))
    now = time.time_ns() // 10**6
    for i, value in enumerate([0.95] * 5 + [0.6] * 10):
        bus.send("ModelMetricsObserved", metric_event(model, value, 200, at_ms=now + i * 100))
    drifted = histogram_summary([700, 100, 100, 100], [1, 2, 3], 0, 4)
    for i in range(2):
        bus.send("ModelMetricsObserved", metric_event(model, 1.0, metric="feature:len", summary=drifted,
                                                      at_ms=now + 2000 + i))
    for name, record in training_events(model, run_id=f"run-{n}"):
        bus.send(name, record)
    bus.send("ModelMetricsObserved", metric_event(f"ghost-{RUN}", 0.9))


def test_every_panel_returns_data_and_names_only_exported_metrics(scraped: tuple[Prometheus, Bus]):
    prom, bus = scraped
    # Two rounds, a few scrapes apart, so that rate() and increase() see counters move.
    for n in range(2):
        wait_for(lambda n=n: prom.scrapes() >= 3 * (n + 1), f"three scrapes before round {n}")
        feed_round(bus, n)
        wait_for(lambda n=n: prom.query(f'flywheel_monitor_retrain_triggers_total{{model="dash-{RUN}-{n}"}}'),
                 f"round {n} to reach Prometheus")
    wait_for(lambda: prom.scrapes() >= 9, "scrapes after the last round")
    exported = prom.names() | {"up"}
    for uid in dashboards.DASHBOARDS:
        if dashboards.SCRAPES[uid] != "flywheel-monitor":
            continue  # the serving dashboard: tests/integration/test_serving_dashboard.py
        for title, expr in dashboards.queries(dashboards.build(uid)):
            result = prom.query(expr)
            values = [float(r["value"][1]) for r in result]
            assert any(math.isfinite(v) for v in values), f"{uid} / {title}: no data for {expr} ({result})"
            named = set(metric_names(expr))
            assert named <= exported, f"{uid} / {title} names {named - exported}, not exported"
