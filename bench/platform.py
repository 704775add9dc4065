"""Platform benchmark: data landed in S3 -> TrainingRunStarted, end to end through ingest and orchestrator.

Each sample uploads a small dataset version (two JSONL parts and the `_SUCCESS` marker) for its own model
and times the marker's put_object returning -> TrainingRunStarted arriving at a consumer, with the
orchestrator's debounce at 0. The training entry point is a stand-in that exits at once: this measures
detection, validation and the launch decision, not the fine-tune (bench/orchestrator.py times that).

Samples are taken one at a time: the next upload waits until the previous sample's run has ended. A launched
run is a local job process (boto3 imports, S3 status writes) that the orchestrator polls through the same S3
emulator; left running, a few of them at once on this machine's two cores slowed every later sample's S3 and
Kafka round trips (see the notes written with the result).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import BenchResult, percentile
from flywheel.bootstrap import build_codec
from flywheel.events import to_millis
from flywheel_dev.datasets import split, upload_dataset
from flywheel_dev.demo import settings_for
from flywheel_dev.demodata import make_examples
from flywheel_dev.localstack import LocalStack
from flywheel_dev.platform import Platform
from flywheel_dev.timeline import Seen, Timeline

COMMAND = "python -m bench --only platform"
EXIT_AT_ONCE = "import sys\nsys.exit(3)\n"
POLLING_SCHEDULER_S = 30.0  # a Dagster sensor's default interval, the bar this path is compared with
GOAL_P50_MS, GOAL_P99_MS = 100.0, 300.0
RUN_ENDED = ("TrainingRunFailed", "TrainingRunSucceeded", "TrainingRunSuperseded")
HOPS = ("landed_to_started", "landed_to_dataset_ready", "ready_to_started", "landed_to_ready_produced",
        "ready_produced_to_started_produced", "started_produced_to_consumer")
# The orchestrator's first job-status poll (it backs off x1.5 from there): short, so that a sample's run is
# seen to end soon and the next sample can start on a quiet machine. Runs are over before the next sample is
# timed, so this polling never overlaps a measurement.
BENCH_POLL_S = "0.1"


def _upload(s3: object, model_id: str, examples: list[dict[str, str]]) -> None:
    upload_dataset(s3, "flywheel-data", model_id, "v1", split(examples, 2))


def _envelope_s(seen: Seen) -> float:
    """When the producing service stamped the event (wall clock, ms precision)."""
    return to_millis(seen.record["envelope"]["occurred_at"]) / 1000


def _measure(stack: LocalStack, workdir: Path, samples: int) -> dict[str, list[float]]:
    script = workdir / "exit_at_once.py"
    script.write_text(EXIT_AT_ONCE)
    env = {"FLYWHEEL_POLICY": json.dumps({"debounce_s": 0}), "FLYWHEEL_TRAINING_ENTRY_POINT": str(script),
           "FLYWHEEL_POLL_S": BENCH_POLL_S}
    settings = settings_for(stack)
    s3 = stack.client("s3")
    hops: dict[str, list[float]] = {name: [] for name in HOPS}
    with Platform(stack, workdir, services=("ingest", "orchestrator"), extra_env=env):
        timeline = Timeline(settings, build_codec(settings))
        try:
            for i in range(samples + 1):  # sample 0 warms up partition assignment; left out
                model = f"bench-{i:03d}"

                def ours(s: Seen, m: str = model) -> bool:
                    return s.get("model_id") == m

                _upload(s3, model, make_examples(20, seed=i))
                landed, landed_wall = time.monotonic(), time.time()
                started = timeline.wait_for("TrainingRunStarted", ours, 60)[0]
                # Produced first, but the consumer may fetch the other topic's partition first: wait for it.
                ready = timeline.wait_for("DatasetVersionReady", ours, 10)[0]
                if i:
                    at_ready, at_started = timeline.started + ready.at, timeline.started + started.at
                    sample = sample_hops(landed, landed_wall, at_ready, at_started, _envelope_s(ready),
                                         _envelope_s(started))
                    for hop, ms in sample.items():
                        hops[hop].append(ms)
                wait_run_ended(timeline, ours, 60)  # one sample at a time: its run ends (exit 3) first
        finally:
            timeline.close()
    return hops


def sample_hops(landed: float, landed_wall: float, at_ready: float, at_started: float, ready_produced: float,
                started_produced: float) -> dict[str, float]:
    """One sample's hops in ms. `landed`, `at_ready`, `at_started`: monotonic seconds (upload returned, events
    arrived at the consumer); `landed_wall` is `landed` on the wall clock, in which the envelopes' produced
    times are, so the last three hops add up to landed_to_started."""
    arrived_wall = landed_wall + (at_started - landed)
    return {"landed_to_started": (at_started - landed) * 1000,
            "landed_to_dataset_ready": (at_ready - landed) * 1000,
            "ready_to_started": (at_started - at_ready) * 1000,
            "landed_to_ready_produced": (ready_produced - landed_wall) * 1000,
            "ready_produced_to_started_produced": (started_produced - ready_produced) * 1000,
            "started_produced_to_consumer": (arrived_wall - started_produced) * 1000}


def wait_run_ended(timeline: Timeline, where: Callable[[Seen], bool], timeout: float) -> Seen:
    """The first run-ended event (failed, succeeded, superseded) matching `where`, waiting up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        for name in RUN_ENDED:
            if found := timeline.matching(name, where):
                return found[0]
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no {' / '.join(RUN_ENDED)} within {timeout:.0f}s")
        time.sleep(0.02)


def run(quick: bool = False) -> BenchResult:
    samples = 20 if quick else 100
    with tempfile.TemporaryDirectory() as tmp, LocalStack(log_dir=Path(tmp)) as stack:
        hops = _measure(stack, Path(tmp), samples)
    latencies = hops["landed_to_started"]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    met = p50 <= GOAL_P50_MS and p99 <= GOAL_P99_MS
    return BenchResult(
        title="Platform: data landed -> training started (end to end)",
        command=COMMAND,
        goal=f"p50 <= {GOAL_P50_MS:.0f} ms and p99 <= {GOAL_P99_MS:.0f} ms with debounce 0 "
             f"(a polling scheduler waits up to 30 s)",
        verdict=f"{'met' if met else 'not met'}: p50 {p50:.0f} ms, p99 {p99:.0f} ms",
        rows=[{"hop": hop, "samples": len(values), "p50_ms": percentile(values, 50),
               "p90_ms": percentile(values, 90), "p99_ms": percentile(values, 99), "max_ms": max(values)}
              for hop, values in hops.items()],
        notes=[*NOTES, f"p50 is {POLLING_SCHEDULER_S * 1000 / p50:.0f}x sooner than a 30 s polling "
                       "interval."],
    )


NOTES = [
    "From the `_SUCCESS` marker's put_object returning to TrainingRunStarted at a consumer: S3 -> SQS "
    "-> ingest (list, validate, manifest, event) -> Kafka -> orchestrator (policy, run record) -> Kafka.",
    "The first three rows are arrival times at the benchmark's consumer; the `produced` rows use each "
    "event's envelope `occurred_at` (stamped by the producing service; same machine clock), so they add up "
    "to landed_to_started. S3 LastModified is not used: the local S3 (moto) reports it to the second.",
    "The training entry point is a stand-in that exits at once; each sample is its own model and waits for "
    "the previous sample's run to end (the orchestrator's first job poll at 0.1 s, `FLYWHEEL_POLL_S`, so "
    "that happens within about a second), so no sample shares the machine with another sample's job.",
    "Why this path used to take ~220 ms here while ingest alone takes ~40 ms: samples were taken back to "
    "back, and every launched run (a local job process importing boto3 and writing S3 status, polled by the "
    "orchestrator through the same S3 emulator, for ~5 s at the default poll) was still running while later "
    "samples were timed. With a dozen or more of them alive on the two cores, each S3 call of the next close "
    "and the uploads themselves slowed several-fold; no timer or poll interval on the path was at fault "
    "(see docs/ingest.md, Measured). Left: ingest's close (6 S3 round trips for this 2-part version: list, "
    "HEAD, GET manifest, 2 GETs, PUT, ~10 ms each on moto), then two Kafka hops of up to the 10 ms fetch "
    "wait each.",
    "Machine load: other processes share the two cores; p99 of 100 samples is the slowest sample.",
]
