"""The launcher port: start a named job (idempotently), ask its status, stop it, wait for it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

log = logging.getLogger("orchestrator.launcher")


class JobState(StrEnum):
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"
    MISSING = "Missing"  # no such job, or its local runner died: start() takes it over under the same name

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.STOPPED)


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    reason: str = ""
    model_uri: str = ""  # s3:// URI of model.tar.gz once completed
    metrics_uri: str = ""  # s3:// URI of metrics.json, or of a tar.gz holding it


@dataclass(frozen=True)
class JobRequest:
    """A training job: SageMaker's vocabulary, so both launchers read the same request."""

    job_name: str
    model_id: str
    data_bucket: str
    data_prefix: str  # the dataset version's prefix (SageMaker S3Prefix channel)
    data_keys: tuple[str, ...]  # the manifest's objects (the local launcher downloads exactly these)
    output_bucket: str
    output_prefix: str  # models/<model_id>/<run_id>/
    hyperparameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class Launcher(Protocol):
    name: str

    def start(self, request: JobRequest) -> bool:
        """Create the job; False when a job of that name already exists (a no-op, not an error)."""

    def status(self, job_name: str) -> JobStatus: ...

    def stop(self, job_name: str) -> None: ...

    def progress(self, job_name: str) -> list[str]:
        """Output lines written since the last call (for the service log); may always be empty."""


class TrainingFailed(Exception):
    """A job ended without a model; the message is the reason that TrainingRunFailed carries."""


class Interrupted(Exception):
    """The service is shutting down: stop waiting, leave the job running; a restart re-attaches to it."""


def wait(launcher: Launcher, request: JobRequest, poll_s: float, max_poll_s: float,
         sleep: Callable[[float], None] = time.sleep, on_line: Callable[[str], None] | None = None,
         stopping: threading.Event | None = None) -> JobStatus:
    """Poll with backoff until the job ends; a MISSING job (runner died) is started again under its name."""
    delay = poll_s
    while True:
        if stopping is not None and stopping.is_set():
            raise Interrupted(f"stopped waiting for {request.job_name}")
        status = launcher.status(request.job_name)
        for line in launcher.progress(request.job_name):
            (on_line or log.info)(line)
        if status.state.terminal:
            return status
        if status.state is JobState.MISSING:
            log.warning("job %s lost its runner, starting it again", request.job_name,
                        extra={"job_name": request.job_name})
            launcher.start(request)
        sleep(delay)
        delay = min(max_poll_s, delay * 1.5)
