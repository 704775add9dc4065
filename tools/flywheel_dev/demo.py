"""`flywheel demo` (the README's `make run`): the whole loop on the local stack, with a timeline.

New data -> validated dataset -> real fine-tune -> registered model -> serving metrics degrade -> monitor
requests a retrain -> newer data supersedes it -> retrained model registered.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flywheel.bootstrap import build_codec
from flywheel.settings import FlywheelSettings
from flywheel_dev.datasets import split, upload_dataset
from flywheel_dev.demodata import make_examples
from flywheel_dev.localstack import LocalStack
from flywheel_dev.platform import Platform
from flywheel_dev.serving import ServingSimulator
from flywheel_dev.timeline import Seen, Timeline
from flywheel_dev.timeline_view import Printer, print_lineage

MODEL_ID = "support-intent"


class Scenario:
    """The demo's steps; each waits for the platform's own events, never for a fixed sleep."""

    def __init__(self, stack: LocalStack, timeline: Timeline, printer: Printer, examples: int,
                 train_timeout: float) -> None:
        self.stack, self.timeline, self.printer = stack, timeline, printer
        self.examples, self.train_timeout = examples, train_timeout
        self.s3 = stack.client("s3")
        self.settings = settings_for(stack)
        self.codec = build_codec(self.settings)

    def step(self, text: str) -> None:
        self.printer.step(text)

    def land_data(self, version: str, seed: int) -> Seen:
        self.step(f"uploading dataset {version} ({self.examples} labelled examples) to s3://"
                  f"{self.stack.resources.data_bucket}/datasets/{MODEL_ID}/{version}/")
        # Two JSONL parts, then the `_SUCCESS` marker that closes the version for ingest.
        prefix = upload_dataset(self.s3, self.stack.resources.data_bucket, MODEL_ID, version,
                                split(make_examples(self.examples, seed=seed), 2)).prefix
        return self.timeline.wait_for("DatasetVersionReady", lambda s: s.get("prefix") == prefix, 60)[0]

    def registered(self, dataset: Seen) -> Seen:
        ds = dataset.get("dataset_version_id")
        self.step(f"fine-tuning on dataset {ds[:12]} (progress from the orchestrator below)")
        return self.timeline.wait_for("ModelVersionRegistered", lambda s: s.get("dataset_version_id") == ds,
                                      self.train_timeout)[0]

    def degrade_until_retrain(self, model: Seen) -> Seen:
        serving = ServingSimulator(self.settings, self.codec, MODEL_ID, model.get("model_version"))
        self.step("serving reports healthy accuracy, then it degrades")
        since = len(self.timeline.matching("RetrainRequested"))
        deadline = time.monotonic() + 90
        level_at = lambda elapsed: 0.93 if elapsed < 3 else 0.62  # noqa: E731
        start = time.monotonic()
        while time.monotonic() < deadline:
            serving.send(level_at(time.monotonic() - start))
            serving.flush()
            if len(self.timeline.matching("RetrainRequested")) > since:
                return self.timeline.matching("RetrainRequested")[since]
            time.sleep(0.2)
        raise TimeoutError("the monitor requested no retrain within 90 s of degraded accuracy")

    def supersede(self, retrain: Seen) -> tuple[Seen, Seen]:
        started = self.timeline.wait_for("TrainingRunStarted",
                                         lambda s: s.get("trigger_event_id") == retrain.record["envelope"]["event_id"],
                                         60)[0]
        dataset = self.land_data("v2", seed=2)
        superseded = self.timeline.wait_for("TrainingRunSuperseded",
                                            lambda s: s.get("run_id") == started.get("run_id"), 60)[0]
        return dataset, superseded


def settings_for(stack: LocalStack) -> FlywheelSettings:
    return FlywheelSettings(kafka_bootstrap=stack.kafka_bootstrap, aws_endpoint_url=stack.aws_endpoint,
                            kafka_fetch_max_wait_ms=10, kafka_session_timeout_s=6)


def follow_log(path: Path, printer: Printer, stop: threading.Event,
               keep: Callable[[dict[str, Any]], bool]) -> threading.Thread:
    """Show the orchestrator's training progress lines as they are written."""

    def run() -> None:
        while not path.exists() and not stop.is_set():
            time.sleep(0.2)
        with path.open() as fh:
            while not stop.is_set():
                line = fh.readline()
                if not line:
                    time.sleep(0.2)
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if keep(entry):
                    printer.progress(entry)

    thread = threading.Thread(target=run, daemon=True, name="follow-log")
    thread.start()
    return thread


def is_progress(entry: dict[str, Any]) -> bool:
    return "progress" in str(entry.get("msg", "")).lower()


def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    printer = Printer(io.TextIOWrapper(open(1, "wb", closefd=False), line_buffering=True))  # noqa: SIM115
    printer.step("starting the local stack (Tansu + moto) and the three services")
    with LocalStack(log_dir=workdir) as stack, \
            Platform(stack, workdir, extra_env=dict(args.env or [])) as platform:
        stop = threading.Event()
        follow_log(platform.procs["orchestrator"].log_path, printer, stop, is_progress)
        timeline = Timeline(settings_for(stack), build_codec(settings_for(stack)), printer.event)
        try:
            scenario = Scenario(stack, timeline, printer, args.examples, args.train_timeout)
            first = scenario.registered(scenario.land_data("v1", seed=1))
            retrain = scenario.degrade_until_retrain(first)
            dataset, _ = scenario.supersede(retrain)
            final = scenario.registered(dataset)
            printer.summary(timeline.events, platform, stack)
            print_lineage(printer, timeline.events, final)
        except TimeoutError as exc:
            printer.failure(str(exc), workdir)
            return 1
        finally:
            stop.set()
            timeline.close()
        if args.keep_running:
            printer.step("platform left running; Ctrl-C stops it")
            _wait_forever()
    return 0


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
