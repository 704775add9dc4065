"""Every dashboard panel's PromQL returns data from a real Prometheus scraping a monitor fed with events,
and names only metrics the monitor exports."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
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
from flywheel_dev.localstack import free_port, wait_for_port
from flywheel_dev.platform import ServiceProcess
from flywheel_monitor import dashboards

RUN = uuid.uuid4().hex[:6]
REFERENCE = {"len": [0.25, 0.25, 0.25, 0.25]}


class Prometheus:
    def __init__(self, workdir: Path, target_port: int) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus not found: `make tools` installs Debian's prometheus package")
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "flywheel-monitor",
                                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}]}))
        self.log = workdir / "prometheus.log"
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"], stdout=sink, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_for_port(self.port, timeout=60)
        wait_for(self.ready, "prometheus ready")  # the port opens before the TSDB is: queries get 503 until then

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def names(self) -> set[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/label/__name__/values", timeout=10) as r:
            return set(json.load(r)["data"])

    def scrapes(self) -> int:
        found = self.query('count_over_time(up{job="flywheel-monitor"}[10m])')
        return int(float(found[0]["value"][1])) if found else 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def scraped(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, Bus]]:
    work = tmp_path_factory.mktemp("dashboards")
    monitor = ServiceProcess("monitor", free_port(), {**stack.env(), "FLYWHEEL_DATA_DIR": str(work / "state")},
                             work / "monitor.log")
    monitor.start()
    prom = None
    try:
        monitor.wait_healthy()
        prom = Prometheus(work, monitor.web_port)
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
        for title, expr in dashboards.queries(dashboards.build(uid)):
            result = prom.query(expr)
            values = [float(r["value"][1]) for r in result]
            assert any(math.isfinite(v) for v in values), f"{uid} / {title}: no data for {expr} ({result})"
            named = set(_metric_names(expr))
            assert named <= exported, f"{uid} / {title} names {named - exported}, not exported"


def _metric_names(expr: str) -> list[str]:
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    return [w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare) if w.startswith(("flywheel_", "process_"))]
