"""Monitor benchmarks, each beside its baseline measured in the same run.

(a) metric events/s through one monitor worker (Avro in, windows, rules) vs a no-op Faust agent, same topic;
(b) observations/s when events carry pre-aggregated summaries vs one observation per event;
(c) breach -> RetrainRequested latency p99 vs a bare produce -> consume hop on the same broker;
(d) two monitor workers on four partitions vs one.
Workers are subprocesses (`python -m bench.monitor worker KIND PROGRESS_FILE`) on a fresh local stack each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import BenchResult, median_rate, percentile
from flywheel.localstack import LocalStack, free_port

COMMAND = "python -m bench --only monitor"
OBS_PER_EVENT = 500
MODELS = 16


def events(n: int, per_event: int, at_ms: int) -> list[dict[str, Any]]:
    from flywheel_monitor.examples import histogram_summary, metric_event

    summary = histogram_summary([per_event // 10] * 10, [0.1 * i for i in range(1, 10)], 0.0, 1.0) \
        if per_event > 1 else None
    return [metric_event(f"model-{i % MODELS}", 0.93, per_event, at_ms=at_ms + i, summary=summary)
            for i in range(n)]


def produce(stack: LocalStack, n: int, per_event: int = OBS_PER_EVENT) -> None:
    from confluent_kafka import Producer

    from flywheel.bootstrap import build_codec
    from flywheel.kafka import confluent_producer_config
    from flywheel.settings import FlywheelSettings
    from flywheel_monitor.examples import registration

    settings = FlywheelSettings(kafka_bootstrap=stack.kafka_bootstrap)
    codec, producer = build_codec(settings), Producer(confluent_producer_config(settings))
    for i in range(MODELS):
        producer.produce("model.version-registered", key=f"model-{i}".encode(),
                         value=codec.encode("ModelVersionRegistered", registration(f"model-{i}")))
    for record in events(n, per_event, int(time.time() * 1000)):
        producer.produce("model.metrics-observed", key=record["model_id"].encode(),
                         value=codec.encode("ModelMetricsObserved", record))
        producer.poll(0)
    producer.flush(120)


def run_workers(kind: str, workers: int, n: int) -> float:
    """Events/s: n over the span from the first event any worker handled to the last."""
    with tempfile.TemporaryDirectory() as tmp, LocalStack() as stack:
        produce(stack, n)
        files = [Path(tmp) / f"progress-{i}.json" for i in range(workers)]
        procs = [_spawn(kind, stack, f, Path(tmp) / f"state-{i}") for i, f in enumerate(files)]
        try:
            spans = _wait_progress(files, n)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
        return n / (max(s["last"] for s in spans) - min(s["first"] for s in spans if s["count"]))


def _spawn(kind: str, stack: LocalStack, progress: Path, state: Path) -> subprocess.Popen:
    env = {**os.environ, **stack.env(), "FLYWHEEL_WEB_PORT": str(free_port()), "FLYWHEEL_DATA_DIR": str(state),
           "FLYWHEEL_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "bench.monitor", "worker", kind, str(progress)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_progress(files: list[Path], n: int, timeout: float = 600) -> list[dict[str, float]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = [json.loads(f.read_text()) if f.exists() else {"count": 0} for f in files]
        if sum(s["count"] for s in spans) >= n:
            return spans
        time.sleep(0.2)
    raise TimeoutError(f"workers did not handle {n} events in {timeout:.0f}s")


def worker(kind: str, progress: Path) -> None:
    """Inside the subprocess: a no-op agent or the real monitor; write (count, first, last) as it goes."""
    from prometheus_client import REGISTRY

    from flywheel.catalogue import topic
    from flywheel.faust_app import make_app, raw_topic
    from flywheel.service import run_service
    from flywheel_monitor.app import create_app
    from flywheel_monitor.settings import MonitorSettings

    seen = {"count": 0, "first": 0.0, "last": 0.0}

    def counted() -> float:
        if kind == "noop":
            return seen["count"]
        return REGISTRY.get_sample_value("flywheel_monitor_events_total", {"event": "ModelMetricsObserved"}) or 0

    def build(settings: MonitorSettings) -> Any:
        if kind == "noop":
            app = make_app("bench-noop", settings)

            @app.agent(raw_topic(app, topic("model.metrics-observed")))
            async def noop(stream: Any) -> None:
                async for _ in stream.events():
                    seen["count"] += 1
        else:
            app = create_app(settings)

        @app.timer(0.01)
        async def report() -> None:
            count = counted()
            if count and not seen["first"]:
                seen["first"] = time.time()
            if count != seen.get("written"):
                seen["written"] = count
                partial = progress.with_suffix(".tmp")  # replace, so the bench never reads half a file
                partial.write_text(json.dumps({"count": count, "first": seen["first"], "last": time.time()}))
                os.replace(partial, progress)
        return app

    run_service(f"bench-{kind}", MonitorSettings, build)


def engine_rate(per_event: int, n: int) -> float:
    """Observations/s on one core: decode + validate + window + rules, no broker (the worker's own cost)."""
    from flywheel.bootstrap import build_codec
    from flywheel.settings import FlywheelSettings
    from flywheel_monitor.engine import MonitorEngine
    from flywheel_monitor.examples import registration
    from flywheel_monitor.rules import DEFAULT_RULES, RuleSet
    from flywheel_monitor.windows import DictWindowStore

    codec = build_codec(FlywheelSettings())
    payloads = [codec.encode("ModelMetricsObserved", r) for r in events(n, per_event, 1_700_000_000_000)]
    engine = MonitorEngine(RuleSet.model_validate(DEFAULT_RULES), DictWindowStore())
    for i in range(MODELS):
        engine.register(registration(f"model-{i}", at_ms=1_600_000_000_000))

    def once() -> int:
        for payload in payloads:
            engine.observe(codec.decode(payload).record)
        return n * per_event
    return median_rate(once, repeats=3)


def breach_latency(samples: int) -> tuple[list[float], list[float]]:
    """Seconds from producing a tipping metric event to reading its RetrainRequested, and a bare hop."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from flywheel.bootstrap import build_codec
    from flywheel.kafka import confluent_producer_config
    from flywheel.platform import ServiceProcess
    from flywheel.settings import FlywheelSettings
    from flywheel_monitor.examples import registration

    with tempfile.TemporaryDirectory() as tmp, LocalStack() as stack:
        settings = FlywheelSettings(kafka_bootstrap=stack.kafka_bootstrap)
        codec, producer = build_codec(settings), Producer(confluent_producer_config(settings))
        models = [f"lat-{uuid.uuid4().hex[:6]}" for _ in range(samples)]
        for model in models:
            producer.produce("model.version-registered", key=model.encode(),
                             value=codec.encode("ModelVersionRegistered", registration(model)))
        producer.flush(30)
        monitor = ServiceProcess("monitor", free_port(), {**stack.env(), "FLYWHEEL_DATA_DIR": f"{tmp}/state",
                                                         "FLYWHEEL_LOG_LEVEL": "WARNING"}, Path(tmp) / "m.log")
        monitor.start()
        try:
            monitor.wait_healthy()
            consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": "bench-latency",
                                 "fetch.wait.max.ms": 10})
            consumer.assign([TopicPartition(t, p, 0) for t in ("retrain.requested", "dataset.rejected")
                             for p in range(4)])
            _warm_up(producer, codec, consumer, models[0])
            breach = [_one_breach(producer, codec, consumer, m) for m in models[1:]]
            bare = [_one_hop(producer, consumer) for _ in models[1:]]
            consumer.close()
        finally:
            monitor.stop()
        return breach, bare


def _warm_up(producer: Any, codec: Any, consumer: Any, model: str) -> None:
    """The first event waits for the worker's group join; not part of the steady-state figure."""
    _one_breach(producer, codec, consumer, model, timeout=120)


def _one_breach(producer: Any, codec: Any, consumer: Any, model: str, timeout: float = 30) -> float:
    from flywheel_monitor.examples import metric_event

    record = metric_event(model, 0.5, 600)
    start = time.perf_counter()
    producer.produce("model.metrics-observed", key=model.encode(), value=codec.encode("ModelMetricsObserved", record))
    producer.flush(10)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(0.05)
        if msg is not None and not msg.error() and msg.topic() == "retrain.requested" and \
                codec.decode(msg.value()).record["envelope"]["causation_id"] == record["envelope"]["event_id"]:
            return time.perf_counter() - start
    raise TimeoutError(f"no RetrainRequested for {model}")


def _one_hop(producer: Any, consumer: Any) -> float:
    """Baseline: bytes produced to a topic nobody processes, read back by the same consumer."""
    marker = uuid.uuid4().bytes
    start = time.perf_counter()
    producer.produce("dataset.rejected", key=b"bench", value=marker)
    producer.flush(10)
    while True:
        msg = consumer.poll(0.05)
        if msg is not None and not msg.error() and msg.value() == marker:
            return time.perf_counter() - start


def _verdict(ok: bool, text: str) -> str:
    return f"{'met' if ok else 'not met'}: {text}"


def run(quick: bool = False) -> list[BenchResult]:
    n = 3_000 if quick else 20_000
    noop, one = run_workers("noop", 1, n), run_workers("monitor", 1, n)
    two = run_workers("monitor", 2, n)
    pre, single = engine_rate(OBS_PER_EVENT, 500 if quick else 3_000), engine_rate(1, 2_000 if quick else 20_000)
    breach, bare = breach_latency(10 if quick else 60)
    p99, bare99 = percentile(breach, 99) * 1000, percentile(bare, 99) * 1000
    return [
        BenchResult("Monitor: metric events/s through one worker", COMMAND,
                    [{"worker": "no-op Faust agent (baseline)", "events/s": noop, "ratio": 1.0},
                     {"worker": "monitor (Avro, windows, rules)", "events/s": one, "ratio": one / noop}],
                    "monitor >= 0.8x the no-op agent", _verdict(one / noop >= 0.8, f"{one / noop:.2f}x"),
                    [f"{n:,} ModelMetricsObserved events ({OBS_PER_EVENT}-sample summaries, {MODELS} models) "
                     "pre-produced to model.metrics-observed (4 partitions) on a fresh Tansu; each worker is a "
                     "subprocess; rate = events over first-to-last handled."]),
        BenchResult("Monitor: observations/s with pre-aggregated events", COMMAND,
                    [{"path": "engine, 1 observation per event (baseline)", "observations/s": single},
                     {"path": f"engine, {OBS_PER_EVENT} per event (summary)", "observations/s": pre},
                     {"path": f"worker (a), {OBS_PER_EVENT} per event", "observations/s": one * OBS_PER_EVENT}],
                    ">= 1,000,000 observations/s per core",
                    _verdict(one * OBS_PER_EVENT >= 1e6, f"{one * OBS_PER_EVENT:,.0f}/s through the worker"),
                    ["engine rows: decode + validate + window + rules in-process on one core, no broker."]),
        BenchResult("Monitor: breach -> RetrainRequested latency", COMMAND,
                    [{"path": "bare produce -> consume hop (baseline)", "p50 ms": percentile(bare, 50) * 1000,
                      "p99 ms": bare99},
                     {"path": "metric event -> monitor -> RetrainRequested", "p50 ms": percentile(breach, 50) * 1000,
                      "p99 ms": p99}],
                    "p99 <= 500 ms", _verdict(p99 <= 500, f"p99 {p99:.0f} ms"),
                    [f"{len(breach)} breaches, one at a time, each a fresh model tipped by one event; local "
                     "profile (FLYWHEEL_KAFKA_FETCH_MAX_WAIT_MS=10, honoured by the Faust consumer)."]),
        BenchResult("Monitor: two workers on four partitions", COMMAND,
                    [{"workers": 1, "events/s": one, "ratio": 1.0}, {"workers": 2, "events/s": two, "ratio": two / one}],
                    "scales out with partitions (> 1x)", _verdict(two / one > 1.0, f"{two / one:.2f}x"),
                    [f"{os.cpu_count()} cores shared with the broker and the producer; includes the group's "
                     "rebalance when the second worker joins."]),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        worker(sys.argv[2], Path(sys.argv[3]))
    else:
        print(json.dumps([r.__dict__ for r in run(quick="--quick" in sys.argv)], indent=2, default=str))
