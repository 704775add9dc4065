"""The monitor as a process on Tansu: a degrading stream -> exactly one RetrainRequested with its evidence,
a recovering one -> none, bad input dead-lettered, and no duplicate after a restart (cooldown rebuilt)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flywheel.events import now_ms, to_millis
from flywheel_dev.harness.monitor import Bus, metric_event, registration, wait_for
from flywheel_dev.localstack import free_port
from flywheel_dev.platform import ServiceProcess

RUN = uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def bus(stack: Any) -> Bus:
    return Bus(stack.kafka_bootstrap)


@pytest.fixture(scope="module")
def monitor(stack: Any, tmp_path_factory: pytest.TempPathFactory, bus: Bus) -> Iterator[ServiceProcess]:
    # Registered before the monitor starts: it must learn them from the topic at start-up.
    for model in (f"degrading-{RUN}", f"recovering-{RUN}", f"bad-{RUN}"):
        bus.send("ModelVersionRegistered", registration(model, "v1", at_ms=now_ms() - 60_000))
    work = tmp_path_factory.mktemp("monitor")
    proc = ServiceProcess("monitor", free_port(), {**stack.env(), "FLYWHEEL_DATA_DIR": str(work / "state")},
                          work / "monitor.log")
    proc.start()
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()
        print(Path(proc.log_path).read_text()[-4000:])


def settle(bus: Bus, model: str) -> None:
    """A NaN for the same model (same partition) is dead-lettered only after every earlier event was handled."""
    marker = metric_event(model, math.nan)
    bus.send("ModelMetricsObserved", marker)
    wait_for(lambda: any(_is_marker(bus, d, marker) for d in bus.read("monitor.dead-letter")),
             f"the settle marker for {model}")


def _is_marker(bus: Bus, dead: dict[str, Any], marker: dict[str, Any]) -> bool:
    try:
        return bus.codec.decode(dead["original_value"]).record["envelope"]["event_id"] == marker["envelope"]["event_id"]
    except Exception:
        return False


def requests_for(bus: Bus, model: str) -> list[dict[str, Any]]:
    return [r for r in bus.read("retrain.requested") if r["model_id"] == model]


def stream(bus: Bus, model: str, values: list[float], start: int) -> list[dict[str, Any]]:
    events = [metric_event(model, v, 200, at_ms=start + i * 100) for i, v in enumerate(values)]
    for event in events:
        bus.send("ModelMetricsObserved", event)
    return events


def test_degrading_stream_gives_exactly_one_retrain_request_with_evidence(bus: Bus, monitor: ServiceProcess):
    model = f"degrading-{RUN}"
    events = stream(bus, model, [0.93] * 10 + [0.62] * 70, now_ms())
    settle(bus, model)
    [request] = requests_for(bus, model)
    cause = next(e for e in events if e["envelope"]["event_id"] == request["envelope"]["causation_id"])
    assert cause["value"] == 0.62
    assert request["trigger"] == "METRIC_BREACH" and request["rule"] == "accuracy-low"
    assert (request["metric"], request["aggregation"], request["comparator"], request["threshold"]) == \
        ("accuracy", "mean", "lt", 0.8)
    assert request["observed_value"] < 0.8 and request["sample_size"] >= 500
    assert to_millis(request["window_start"]) <= cause["window_end"] < to_millis(request["window_end"])
    assert request["envelope"]["correlation_id"] != cause["envelope"]["correlation_id"]
    assert request["model_version"] == "v1" and request["envelope"]["producer"] == "monitor"


def test_recovering_stream_gives_none(bus: Bus, monitor: ServiceProcess):
    model = f"recovering-{RUN}"
    # Start on a 5 s boundary (accuracy-low's window) so that the dip sits inside a window of good values:
    # windows are event time, and a window holding little but the dip would be a real breach.
    start = (now_ms() // 5000 + 1) * 5000
    stream(bus, model, [0.93] * 20 + [0.7] * 3 + [0.93] * 30, start)
    settle(bus, model)
    assert requests_for(bus, model) == []


def test_bad_input_is_dead_lettered_with_the_reason(bus: Bus, monitor: ServiceProcess):
    bus.send("ModelMetricsObserved", metric_event(f"ghost-{RUN}", 0.9))
    bus.send("ModelMetricsObserved", metric_event(f"bad-{RUN}", 0.9, -5))
    # a window_end a day ahead of the clock: refused, or it would make every honest window count as late
    bus.send("ModelMetricsObserved", metric_event(f"bad-{RUN}", 0.9, at_ms=now_ms() + 86_400_000))
    # garbage bytes in place of the record, keyed by the record's model_id like the rest of its stream
    bus.send("ModelMetricsObserved", metric_event(f"bad-{RUN}", 0.9), raw=b"\x00not avro at all")
    settle(bus, f"bad-{RUN}")
    reasons = [d["reason"] for d in bus.read("monitor.dead-letter")]
    assert any(f"ghost-{RUN}" in r and "no registered version" in r for r in reasons)
    assert any("sample_count is negative" in r for r in reasons)
    assert any("ahead of the monitor's clock" in r for r in reasons)
    assert any(d["original_value"] == b"\x00not avro at all" for d in bus.read("monitor.dead-letter"))
    assert monitor.alive()


def test_restart_rebuilds_cooldown_so_a_breach_is_not_requested_twice(bus: Bus, monitor: ServiceProcess):
    model = f"degrading-{RUN}"
    assert len(requests_for(bus, model)) == 1
    monitor.stop()
    monitor.start()
    monitor.wait_healthy()
    stream(bus, model, [0.6] * 60, now_ms() + 10_000)
    settle(bus, model)
    assert len(requests_for(bus, model)) == 1
