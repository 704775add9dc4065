"""The launcher port: start a named job (idempotently), ask its status, stop it, wait for it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
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
    # What the launcher knows of the job for the run events (strings): job_arn, logs_url, instance_type and,
    # once billed, billable_seconds, training_seconds, spot, estimated_cost_usd, spot_savings_usd. {} locally.
    job: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRequest:
    """A training job: SageMaker's vocabulary, so both launchers read the same request."""

    job_name: str
    model_id: str
    data_bucket: str
    data_prefix: str  # the dataset version's prefix
    data_keys: tuple[str, ...]  # the manifest's objects: a run reads exactly these, nothing else
    output_bucket: str
    output_prefix: str  # models/<model_id>/<run_id>/
    hyperparameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # The pins, parallel to data_keys: each object's ETag and S3 version ("" when the bucket is not
    # versioned) as the manifest recorded them. An object that no longer matches fails the run.
    data_etags: tuple[str, ...] = ()
    data_version_ids: tuple[str, ...] = ()
    # s3:// URI of the production version's model.tar.gz; "" when the model has no champion. The job
    # gets it as its `champion` channel and scores it on the same held-out rows (the promotion gate).
    champion_uri: str = ""

    def __post_init__(self) -> None:
        for name in ("data_etags", "data_version_ids"):
            if getattr(self, name) and len(getattr(self, name)) != len(self.data_keys):
                raise ValueError(f"{name} must be parallel to data_keys")

    def pins(self) -> list[Pin]:
        return pins_of(self.data_keys, self.data_etags, self.data_version_ids)


@dataclass(frozen=True)
class Pin:
    """One object of a run's channel as the manifest recorded it, and the file name it has in the channel."""

    key: str
    etag: str = ""
    version_id: str = ""

    @property
    def file_name(self) -> str:
        # Flat, keeping the extension the reader goes by: the same name locally and on SageMaker.
        return self.key.replace("/", "__")

    def source(self, bucket: str) -> dict[str, str]:
        """Where to read it: the key, and the pinned version when the bucket is versioned."""
        return {"Bucket": bucket, "Key": self.key, **({"VersionId": self.version_id} if self.version_id else {})}


def pins_of(keys: Sequence[str], etags: Sequence[str] = (), version_ids: Sequence[str] = ()) -> list[Pin]:
    return [Pin(key, etags[i] if etags else "", version_ids[i] if version_ids else "") for i, key in enumerate(keys)]


class Launcher(Protocol):
    name: str

    def start(self, request: JobRequest) -> bool:
        """Create the job; False when a job of that name already exists (a no-op, not an error)."""

    def status(self, job_name: str) -> JobStatus: ...

    def stop(self, job_name: str) -> None: ...

    def progress(self, job_name: str) -> list[str]:
        """Output lines written since the last call (for the service log); may always be empty."""


def job_links(launcher: Launcher, job_name: str) -> dict[str, str]:
    """The job's ARN and logs link when the launcher has them (SageMaker), else {}."""
    links = getattr(launcher, "links", None)
    return links(job_name) if callable(links) else {}


class TrainingFailed(Exception):
    """A job ended without a model; the message is the reason that TrainingRunFailed carries."""


class ChannelChanged(TrainingFailed):
    """A pinned object changed or disappeared after its dataset version was published."""

    def __init__(self, pin: Pin, found: str) -> None:
        pinned = f"ETag {pin.etag}" + (f", version {pin.version_id}" if pin.version_id else "")
        super().__init__(f"dataset object {pin.key} changed after its version was published ({pinned}; now: "
                         f"{found}); the run trains only the validated objects")


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
