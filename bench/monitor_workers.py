"""Worker subprocesses for the monitor benchmarks: the real monitor or a no-op agent built the same way.

`python -m bench.monitor_workers worker KIND PROGRESS_FILE` runs one worker (KIND: noop or monitor) that
keeps its progress in memory every 10 ms — events handled, wall time of the first and of the latest, the
metric partitions assigned to it — and publishes it to PROGRESS_FILE every 0.2 s, so that the file writes
cost both kinds the same little. The monitor counts through its own events_total counter; the no-op agent
counts in its loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flywheel_dev.localstack import LocalStack, free_port

OBS_PER_EVENT = 500
MODELS = 16
METRICS_TOPIC = "model.metrics-observed"
TICK_S, PUBLISH_S = 0.01, 0.2


def events(n: int, per_event: int, at_ms: int) -> list[dict[str, Any]]:
    from flywheel_dev.harness.monitor import histogram_summary, metric_event

    summary = histogram_summary([per_event // 10] * 10, [0.1 * i for i in range(1, 10)], 0.0, 1.0) \
        if per_event > 1 else None
    return [metric_event(f"model-{i % MODELS}", 0.93, per_event, at_ms=at_ms + i, summary=summary)
            for i in range(n)]


def produce(stack: LocalStack, n: int, per_event: int = OBS_PER_EVENT, registrations: bool = True) -> float:
    """Registrations of MODELS models (optional), then n metric events; returns the seconds it took."""
    from confluent_kafka import Producer

    from flywheel.bootstrap import build_codec
    from flywheel.kafka import confluent_producer_config
    from flywheel.settings import FlywheelSettings
    from flywheel_dev.harness.monitor import registration

    settings = FlywheelSettings(kafka_bootstrap=stack.kafka_bootstrap)
    codec, producer = build_codec(settings), Producer(confluent_producer_config(settings))
    payloads = [(r["model_id"].encode(), codec.encode("ModelMetricsObserved", r))
                for r in events(n, per_event, int(time.time() * 1000))]
    started = time.perf_counter()
    for i in range(MODELS if registrations else 0):
        producer.produce("model.version-registered", key=f"model-{i}".encode(),
                         value=codec.encode("ModelVersionRegistered", registration(f"model-{i}")))
    for key, value in payloads:
        producer.produce(METRICS_TOPIC, key=key, value=value)
        producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - started


def spawn(kind: str, stack: LocalStack, progress: Path, state: Path) -> subprocess.Popen:
    env = {**os.environ, **stack.env(), "FLYWHEEL_WEB_PORT": str(free_port()), "FLYWHEEL_DATA_DIR": str(state),
           "FLYWHEEL_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "bench.monitor_workers", "worker", kind, str(progress)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def read(files: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) if f.exists() else {"count": 0, "assigned": 0} for f in files]


def wait_until(files: list[Path], done: Any, what: str, timeout: float = 600) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = read(files)
        if done(spans):
            return spans
        time.sleep(PUBLISH_S)
    raise TimeoutError(f"workers: {what} not reached in {timeout:.0f}s")


def rate(spans: list[dict[str, Any]], n: int) -> float:
    """n events over the span from the first any worker handled to the last any worker handled."""
    return n / (max(s["last"] for s in spans) - min(s["first"] for s in spans if s["count"]))


def worker(kind: str, progress: Path) -> None:
    """Inside the subprocess: build the app from the same settings and make_app, run it, report progress."""
    from flywheel.service import run_service
    from flywheel_monitor.settings import MonitorSettings

    run_service(f"bench-{kind}", MonitorSettings, lambda settings: _build(kind, settings, progress))


def _build(kind: str, settings: Any, progress: Path) -> Any:
    from flywheel.catalogue import topic
    from flywheel.faust_app import make_app, raw_topic
    from flywheel_monitor.app import create_app

    state: dict[str, Any] = {"count": 0, "first": 0.0, "last": 0.0, "assigned": 0}
    if kind == "noop":
        app = make_app("bench-noop", settings)

        @app.agent(raw_topic(app, topic(METRICS_TOPIC)))
        async def noop(stream: Any) -> None:
            async for _ in stream.events():
                state["count"] += 1
        counted = lambda: state["count"]  # noqa: E731
    else:
        app, counted = create_app(settings), _monitor_count

    @app.timer(TICK_S)
    async def track() -> None:
        _track(state, counted())

    @app.timer(PUBLISH_S)
    async def publish() -> None:
        state["assigned"] = _assigned(app)
        _publish(state, progress)
    return app


def _assigned(app: Any) -> int:
    try:
        return sum(tp.topic == METRICS_TOPIC for tp in app.consumer.assignment())
    except Exception:  # the consumer is not started yet
        return 0


def _monitor_count() -> float:
    """The monitor's own events_total{event="ModelMetricsObserved"}, read from its child as cheaply as the
    no-op agent's counter (REGISTRY.get_sample_value would collect every metric, process ones included)."""
    from flywheel_monitor.metrics import EVENTS

    return EVENTS.labels("ModelMetricsObserved")._value.get()


def _track(state: dict[str, Any], count: float) -> None:
    if count != state.get("seen"):
        now = time.time()
        state["seen"], state["last"] = count, now
        state["first"] = state["first"] or now


def _publish(state: dict[str, Any], progress: Path) -> None:
    snapshot = {"count": state.get("seen", 0), "first": state["first"], "last": state["last"],
                "assigned": state["assigned"]}
    if snapshot != state.get("published"):
        state["published"] = snapshot
        partial = progress.with_suffix(".tmp")  # replace, so the bench never reads half a file
        partial.write_text(json.dumps(snapshot))
        os.replace(partial, progress)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        worker(sys.argv[2], Path(sys.argv[3]))
