"""Orchestrator benchmarks: decision latency (DatasetVersionReady -> TrainingRunStarted) and the local
fine-tune of the demo task (500 examples) through the training entry point and through the whole service."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from bench.common import BenchResult, percentile
from flywheel.bootstrap import build_codec
from flywheel.events import now_ms, to_millis
from flywheel.publish import KafkaPublisher
from flywheel.settings import FlywheelSettings
from flywheel_dev.demodata import make_examples
from flywheel_dev.harness import orchestrator as seed
from flywheel_dev.localstack import LocalStack
from flywheel_dev.platform import Platform
from flywheel_dev.timeline import Seen, Timeline
from flywheel_orchestrator.settings import DEFAULT_ENTRY_POINT, OrchestratorSettings

COMMAND = "python -m bench --only orchestrator"
FAIL_FAST = "import sys\nsys.exit(3)\n"  # latency runs only need the decision, not a fine-tune


def run(quick: bool = False) -> list[BenchResult]:
    with tempfile.TemporaryDirectory() as tmp, LocalStack(log_dir=Path(tmp)) as stack:
        os.environ.update(stack.env())
        latency = decision_latency(stack, Path(tmp), samples=10 if quick else 50)
        latency.notes += s3_cost_notes(decision_s3_calls(samples=10 if quick else 40))
        service = service_fine_tune(stack, Path(tmp))
    return [latency, entry_point_fine_tune(service)]


def _received_ms(timeline: Timeline) -> Callable[[Seen], int]:
    """Wall-clock ms at which the timeline received an event (Seen.at is monotonic since its start)."""
    wall_at_start = now_ms() - (time.monotonic() - timeline.started) * 1000
    return lambda seen: int(wall_at_start + seen.at * 1000)


def decision_latency(stack: LocalStack, tmp: Path, samples: int) -> BenchResult:
    script = tmp / "fail_fast.py"
    script.write_text(FAIL_FAST)
    env = {"FLYWHEEL_POLICY": json.dumps({"debounce_s": 0}), "FLYWHEEL_TRAINING_ENTRY_POINT": str(script),
           "FLYWHEEL_MODELS": json.dumps([f"lat-{i}" for i in range(samples + 1)])}
    settings, s3 = FlywheelSettings(), boto3.client("s3")
    codec = build_codec(settings)
    inbound: dict[str, list[int]] = {"v1": [], "v2": []}
    end_to_end: list[int] = []
    publisher, watch = KafkaPublisher(settings, codec), Timeline(settings, codec)
    received_ms = _received_ms(watch)
    with Platform(stack, tmp / "latency", services=("orchestrator",), extra_env=env):
        # Sample 0 is a warm-up (healthy is not yet "partitions assigned"); it is left out of the figures.
        for i in range(samples + 1):
            for version in ("v1", "v2"):  # a model's first version (first touch), then its next one (owned)
                ready = seed.publish_dataset(publisher, s3, f"lat-{i}", version, make_examples(8, seed=i))
                started = seed.wait_for(watch, "training.run-started", f"lat-{i}", timeout_s=60,
                                        count=1 if version == "v1" else 2)[-1]
                # the stand-in run fails at once: wait for its end, so the next version supersedes nothing
                seed.wait_for(watch, "training.run-failed", f"lat-{i}", timeout_s=60,
                              count=1 if version == "v1" else 2)
                sent_ms = to_millis(ready["envelope"]["occurred_at"])
                if i == 0:
                    continue
                inbound[version].append(to_millis(started.record["envelope"]["occurred_at"]) - sent_ms)
                if version == "v2":
                    end_to_end.append(received_ms(started) - sent_ms)
    watch.close()
    p99, first99 = percentile(inbound["v2"], 99), percentile(inbound["v1"], 99)
    load = os.getloadavg()
    return BenchResult(
        title="Orchestrator decision latency: DatasetVersionReady -> TrainingRunStarted",
        command=COMMAND, goal="p99 <= 50 ms with debounce 0",
        verdict=f"{'met' if p99 <= 50 else 'missed'}: p99 {p99:.0f} ms for a model the worker owns "
                f"(p50 {percentile(inbound['v2'], 50):.0f} ms); {first99:.0f} ms on a model's first touch",
        rows=[{"measure": "owned model: produced -> Started emitted (occurred_at)",
               "p50_ms": percentile(inbound["v2"], 50), "p99_ms": p99, "samples": samples},
              {"measure": "owned model: produced -> Started consumed by a client",
               "p50_ms": percentile(end_to_end, 50), "p99_ms": percentile(end_to_end, 99), "samples": samples},
              {"measure": "first touch (new model): produced -> Started emitted",
               "p50_ms": percentile(inbound["v1"], 50), "p99_ms": first99, "samples": samples}],
        notes=["One orchestrator process on Tansu + moto (FLYWHEEL_KAFKA_FETCH_MAX_WAIT_MS=10), debounce 0; "
               "one dataset version at a time: each model's first version (the worker loads and creates its "
               "state document), then, once that run ended, its second (state already held: the usual case); "
               "the run itself is a script that exits at once (the decision is measured, not the training).",
               "TrainingRunStarted is sent before the workflow starts, so flytekit and the job start-up are "
               "not on this path.",
               f"1-minute load average {load[0]:.1f} at the end of the samples (the machine is shared; every "
               "S3 call goes to moto, a Python server on the same cores)."])


def decision_s3_calls(samples: int) -> dict[str, list[Any]]:
    """The decision path in this process on the stack's S3 (moto), the broker replaced by a no-op send: the S3
    calls of each decision and their ms, on a model's first touch and on a model already owned."""
    from flywheel.lifecycle import StageStore
    from flywheel_orchestrator import events
    from flywheel_orchestrator.adapters import build_task_context, registration_reader
    from flywheel_orchestrator.core import Orchestration
    from flywheel_orchestrator.launchers.base import TrainingFailed
    from flywheel_orchestrator.ownership import Ownership
    from flywheel_orchestrator.promotions import Promotions
    from flywheel_orchestrator.runs import Supervisor
    from flywheel_orchestrator.statestore import StateStore
    from flywheel_orchestrator.topics import CONSUMES

    settings = OrchestratorSettings(policy={"debounce_s": 0})
    context = build_task_context(settings)
    logging.getLogger("orchestrator").setLevel(logging.ERROR)  # the stand-in runs' failures are expected
    calls: list[tuple[str, float]] = []

    def before(model: Any, context: dict[str, Any], **_: Any) -> None:
        context["bench_started"] = time.perf_counter()

    def after(model: Any, context: dict[str, Any], **_: Any) -> None:
        calls.append((model.name, (time.perf_counter() - context["bench_started"]) * 1000))

    context.s3.meta.events.register("before-call.s3", before)
    context.s3.meta.events.register("after-call.s3", after)

    class ExitsAtOnce:
        def execute(self, spec: Any, hyperparameters: dict[str, str]) -> Any:
            raise TrainingFailed("stand-in: exited at once")

    async def send(topic: str, record: dict[str, Any], acked: bool = False) -> None:
        return None

    bucket = settings.artifact_bucket
    supervisor = Supervisor(Orchestration(settings.policy), ExitsAtOnce(), context, send, {},
                            store=StateStore(context.s3, bucket), ownership=Ownership(CONSUMES),
                            promotions=Promotions(StageStore(context.s3, bucket), send, settings.gate(),
                                                  registration_reader(context.s3, bucket)))
    supervisor.own_all()
    out: dict[str, list[Any]] = {"first touch": [], "owned": []}

    async def main() -> None:
        supervisor.migrated.set()
        for version, phase in (("v1", "first touch"), ("v2", "owned")):
            for i in range(samples):
                record = seed.dataset_ready(f"s3://flywheel-data/manifests/cost-{i}/{version}.json", {
                    "model_id": f"cost-{i}", "dataset_version_id": f"{version}-cost-{i}", "bucket": "flywheel-data",
                    "prefix": f"datasets/cost-{i}/{version}/", "row_count": 8, "content_hash": "0" * 64,
                    "objects": [{"key": f"datasets/cost-{i}/{version}/p", "etag": version, "size_bytes": 1,
                                 "rows": 8}], "columns": ["text", "label"], "label_counts": {"a": 8},
                    "first_object_at": now_ms()})
                trigger = events.trigger_of("DatasetVersionReady", "dataset.version-ready", record, now_ms())
                calls.clear()
                await supervisor.on_trigger(trigger)
                out[phase].append(list(calls))  # taken before the run's (stand-in) end can touch S3
                while supervisor.handles:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.02)

    asyncio.run(main())
    return out


READS = {"first touch": "the state document, then the production version the run is compared with",
         "owned": "the production version the run is compared with"}


def s3_cost_notes(by_phase: dict[str, list[Any]]) -> list[str]:
    notes = []
    for phase, decisions in by_phase.items():
        puts = [ms for calls in decisions for name, ms in calls if name == "PutObject"]
        gets = [ms for calls in decisions for name, ms in calls if name != "PutObject"]
        notes.append(f"S3 per decision, {phase} ({len(decisions)} decisions, in process against moto, no broker): "
                     f"{len(puts) / len(decisions):.1f} PUTs (run claim, state with the Started in the outbox, "
                     f"outbox emptied after the send; median {percentile(puts, 50):.1f} ms, p99 "
                     f"{percentile(puts, 99):.1f} ms each) and {len(gets) / len(decisions):.1f} GETs ("
                     f"{READS[phase]}; median {percentile(gets, 50):.1f} ms).")
    return notes


def service_fine_tune(stack: LocalStack, tmp: Path) -> dict:
    """The demo dataset through the service: DatasetVersionReady -> ModelVersionRegistered (a real fine-tune)."""
    settings, s3 = FlywheelSettings(), boto3.client("s3")
    codec = build_codec(settings)
    env = {"FLYWHEEL_POLICY": json.dumps({"debounce_s": 0}), "FLYWHEEL_MODELS": json.dumps(["support-intent"])}
    with Platform(stack, tmp / "fine-tune", services=("orchestrator",), extra_env=env):
        watch = Timeline(settings, codec)
        received_ms = _received_ms(watch)
        ready = seed.publish_dataset(KafkaPublisher(settings, codec), s3, "support-intent", "v1",
                                     make_examples(500, seed=7))
        seen = seed.wait_for(watch, "model.version-registered", "support-intent", timeout_s=900)[0]
        watch.close()
    registered = seen.record
    took = (received_ms(seen) - to_millis(ready["envelope"]["occurred_at"])) / 1000
    return {"wall_s": took, "accuracy": registered["metrics"]["accuracy"],
            "baseline": registered["baseline_metrics"]["accuracy"]}


def entry_point_fine_tune(service: dict) -> BenchResult:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "train").mkdir()
        (root / "train" / "data.jsonl").write_text("".join(json.dumps(e) + "\n" for e in make_examples(500, seed=7)))
        env = {**os.environ, "SM_CHANNEL_TRAIN": str(root / "train"), "SM_MODEL_DIR": str(root / "model"),
               "SM_OUTPUT_DATA_DIR": str(root / "out"), "SM_OUTPUT_DIR": str(root / "out"),
               "SM_HPS": json.dumps(OrchestratorSettings().hyperparameters), "HF_HUB_OFFLINE": "1"}
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        subprocess.run([sys.executable, str(DEFAULT_ENTRY_POINT)], env=env, check=True, capture_output=True)
        wall = time.monotonic() - started
        load_after = os.getloadavg()[0]
        metrics = json.loads((root / "out" / "metrics.json").read_text())
    after, before = metrics["metrics"]["accuracy"], metrics["baseline_metrics"]["accuracy"]
    return BenchResult(
        title="Local fine-tune of all-MiniLM-L6-v2 on the demo task (500 examples)",
        command=COMMAND, goal="wall <= 30 s; held-out accuracy from about chance to >= 0.95",
        verdict=f"{'met' if wall <= 30 else 'missed'}: {wall:.1f} s; "
                f"{'met' if after >= 0.95 else 'missed'}: {before:.2f} -> {after:.2f}",
        rows=[{"path": "services/training/train.py as a subprocess (SM_* env)", "wall_s": wall,
               "train_s": metrics["timings_s"]["train"], "accuracy_before": before, "accuracy_after": after,
               "macro_f1_after": metrics["metrics"]["macro_f1"]},
              {"path": "orchestrator service: DatasetVersionReady -> ModelVersionRegistered", "wall_s": service["wall_s"],
               "train_s": "n/a", "accuracy_before": service["baseline"], "accuracy_after": service["accuracy"],
               "macro_f1_after": "n/a"}],
        notes=[f"Hyperparameters (the service defaults): {OrchestratorSettings().hyperparameters}; 400 train / "
               "100 held-out rows; attn eager, 1 torch thread, CPU.",
               "Wall time includes interpreter start, torch/transformers import and model load; the service row "
               "adds S3 download/upload of the 91 MB model, the Flyte workflow and two Kafka hops.",
               f"The machine is shared (2 cores); 1-minute load average {load_before:.1f} before and "
               f"{load_after:.1f} after the entry-point run. Uncontended, the same run took 21 s wall, 13 s "
               "training (measured by hand, not by this command); figures move by many seconds with load."])
