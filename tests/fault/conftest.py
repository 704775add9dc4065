"""The whole platform (stack + three services + a timeline) for the fault-injection tests, and what they assert.

Every module gets its own platform (`running`, module-scoped) so that one fault never leaks into the next
module (a module may add service environment with `PLATFORM_ENV`). Training runs use `stub_trainer.py`: the
SageMaker contract in well under a second, since this tier tests delivery, not model quality.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from flywheel.bootstrap import build_codec
from flywheel.codec import AvroCodec
from flywheel.kafka import confluent_producer_config
from flywheel.publish import KafkaPublisher
from flywheel.s3json import get_json
from flywheel_dev.demo import settings_for
from flywheel_dev.localstack import LocalStack
from flywheel_dev.platform import Platform
from flywheel_dev.timeline import Seen, Timeline

STUB_TRAINER = Path(__file__).with_name("stub_trainer.py")
ARTIFACTS = "flywheel-artifacts"
SMALL_HYPERPARAMETERS = {
    "epochs": "1",
    "batch_size": "8",
    "max_len": "32",
    "learning_rate": "0.0003",
    "threads": "1",
}
# Unacknowledged SQS messages come back after 2 s and the reconciliation scan runs every 2 s, so a killed
# ingest recovers quickly; quiet-period closing stays out of the way (versions close on their marker).
FAULT_ENV = {
    "FLYWHEEL_LOG_FORMAT": "json",
    "FLYWHEEL_SQS_VISIBILITY_TIMEOUT_S": "2",
    "FLYWHEEL_SCAN_INTERVAL_S": "2",
    "FLYWHEEL_QUIET_PERIOD_S": "600",
    "FLYWHEEL_POLICY": json.dumps({"debounce_s": 0}),
    "FLYWHEEL_HYPERPARAMETERS": json.dumps(SMALL_HYPERPARAMETERS),
    "FLYWHEEL_LOCAL_STALE_S": "8",
    "FLYWHEEL_TRAINING_ENTRY_POINT": str(STUB_TRAINER),
}


@dataclass
class Running:
    stack: LocalStack
    platform: Platform
    timeline: Timeline
    codec: AvroCodec
    workdir: Path
    _producer: Any = None
    _publisher: KafkaPublisher | None = None

    def publisher(self) -> KafkaPublisher:
        """publish(topic, record) of catalogue events, as the CLI and the tools send them."""
        if self._publisher is None:
            self._publisher = KafkaPublisher(settings_for(self.stack), self.codec)
        return self._publisher

    def producer(self) -> Any:
        """A plain confluent-kafka producer, for the bytes no publisher would send (garbage, wrong schemas)."""
        if self._producer is None:
            self._producer = Producer(confluent_producer_config(settings_for(self.stack)))
        return self._producer

    def client(self, service: str) -> Any:
        return self.stack.client(service)

    def s3(self) -> Any:
        return self.client("s3")

    def sqs(self) -> Any:
        return self.client("sqs")

    def log(self, service: str) -> str:
        return self.platform.procs[service].log_path.read_text(errors="replace")

    def dead_services(self) -> list[str]:
        return [name for name, proc in self.platform.procs.items() if not (proc.alive() and proc.healthy())]

    def job_records(self, run_id: str) -> list[str]:
        """The local launcher's own records of a job in S3 (job.json is written once, by conditional put)."""
        found = self.s3().list_objects_v2(Bucket=ARTIFACTS, Prefix=f"jobs/{run_id}/")
        return sorted(o["Key"].rsplit("/", 1)[1] for o in found.get("Contents", []))


def assert_one_run_per_trigger(
    running: Running, where: Callable[[Seen], bool], job_records: bool = True
) -> list[Seen]:
    """No duplicate training job: one Started per run id, one per (model, dataset, trigger), and (local launcher)
    its job.json in S3; SageMaker-launched jobs are counted in SageMaker instead."""
    started = running.timeline.matching("TrainingRunStarted", where)
    assert started, "no TrainingRunStarted matched"
    per_run = Counter(s.get("run_id") for s in started)
    per_decision = Counter(
        (s.get("model_id"), s.get("dataset_version_id"), s.get("trigger")) for s in started
    )
    assert max(per_run.values()) == 1, f"a run started twice: {per_run}"
    assert max(per_decision.values()) == 1, f"one decision launched twice: {per_decision}"
    for run_id in per_run if job_records else ():  # Started is sent before the launcher's record: wait for it
        wait_until(lambda r=run_id: "job.json" in running.job_records(r), f"job.json of {run_id}")
    return started


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f}s"
        time.sleep(0.2)


@contextmanager
def platform_running(
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    env_for_stack: Callable[[LocalStack], dict[str, str]] | None = None,
) -> Iterator[Running]:
    """`env_for_stack` adds service environment that depends on the started stack (e.g. a proxy's endpoint)."""
    with LocalStack(log_dir=workdir) as stack:
        env = {**FAULT_ENV, **(extra_env or {}), **(env_for_stack(stack) if env_for_stack else {})}
        platform = Platform(stack, workdir, extra_env=env)
        try:
            platform.start()
            codec = build_codec(settings_for(stack))
            timeline = Timeline(settings_for(stack), codec)
            running = Running(stack, platform, timeline, codec, workdir)
            try:
                yield running
            finally:
                stop_training_jobs(running)
                running.timeline.close()
                if running._producer is not None:
                    running._producer.flush(5)
                if running._publisher is not None:
                    running._publisher.flush()
        finally:
            platform.stop()


def stop_training_jobs(running: Running, grace_s: float = 10.0) -> None:
    """Local jobs outlive the orchestrator by design: ask each to stop, then end any runner left by its pid."""
    s3 = running.s3()
    runs = {s.get("run_id") for s in running.timeline.matching("TrainingRunStarted")}
    for run_id in runs:
        with suppress(Exception):
            s3.put_object(Bucket=ARTIFACTS, Key=f"jobs/{run_id}/stop", Body=b"stop")
    deadline = time.monotonic() + grace_s
    pending = set(runs)
    while pending and time.monotonic() < deadline:
        pending = {r for r in pending if _job_status(s3, r).get("state") == "InProgress"}
        time.sleep(0.3)
    for run_id in pending:
        pid = _job_status(s3, run_id).get("pid")
        if pid:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # the runner is its own session leader: pgid == pid


def _job_status(s3: Any, run_id: str) -> dict[str, Any]:
    try:
        return get_json(s3, ARTIFACTS, f"jobs/{run_id}/status.json") or {}
    except Exception:
        return {}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Running]:
    """Modules may set `PLATFORM_ENV` (extra service environment) at module level."""
    workdir = tmp_path_factory.mktemp("fault")
    with platform_running(workdir, getattr(request.module, "PLATFORM_ENV", None)) as found:
        yield found


def jsonl(rows: int, seed: int) -> bytes:
    """A small labelled JSONL object; `seed` keeps each object's content (and ETag) distinct."""
    labels = ("billing", "shipping", "refund", "other")
    return "".join(
        json.dumps({"text": f"message {seed}-{i}", "label": labels[(seed + i) % 4]}) + "\n"
        for i in range(rows)
    ).encode()
