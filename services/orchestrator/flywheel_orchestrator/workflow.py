"""The training workflow (flytekit): prepare -> train -> evaluate -> register.

prepare composes the run's training set from the manifests of every dataset version the run trains on (the
orchestrator's training-data policy: the newest base version + recent feedback; trainingset.py).

Runs in-process on the embedded default (flytekit local execution, in a worker thread) and, unchanged,
as a launch plan on a Flyte cluster (`pyflyte package`/`register` this module).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from flytekit import task, workflow

from flywheel.s3json import put_json, read_json_uri, split_uri
from flywheel_orchestrator import trainingset
from flywheel_orchestrator.adapters import task_context_from_env
from flywheel_orchestrator.launchers.base import Interrupted, JobRequest, JobState, TrainingFailed, wait
from flywheel_orchestrator.taskcontext import TaskContext, active


def context() -> TaskContext:
    """The context the executor set around this workflow call; in a Flyte pod, one from the pod's environment."""
    return active() or task_context_from_env()


@dataclass
class Channel:
    """The exact objects of the run's dataset versions (pinned by ETag and S3 version) and how to read them."""

    bucket: str
    prefix: str
    keys: list[str]
    row_count: int  # what the trainer must read back; -1: unknown (not checked)
    etags: list[str] = field(default_factory=list)
    version_ids: list[str] = field(default_factory=list)  # "" where the bucket is not versioned
    reader: str = ""  # the manifest's dataset reader rules (JSON); "": the defaults
    manifest_uri: str = ""  # the run's training manifest (trainingset.py): every version and object it reads

    def training_hyperparameters(self) -> dict[str, str]:
        """What the entry point needs to read the channel as ingest validated it."""
        return {"expected_rows": str(self.row_count), **({"reader": self.reader} if self.reader else {})}


@dataclass
class TrainOutput:
    model_uri: str
    metrics_uri: str
    duration_s: float
    job: dict[str, str] = field(default_factory=dict)  # the launcher's job details (ARN, logs, billing)


@dataclass
class Registration:
    artifact_uri: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    reference_distribution: dict[str, list[float]] = field(default_factory=dict)
    duration_s: float = 0.0
    # The champion scored on the same held-out rows (empty without a champion) and the paired comparison
    # (n, b, c, p_value, delta) the promotion gate decides on; champion_error when it could not be read.
    champion_metrics: dict[str, float] = field(default_factory=dict)
    comparison: dict[str, float] = field(default_factory=dict)
    champion_error: str = ""
    # The training job as the launcher reported it: job_arn, logs_url, billable seconds, estimated cost (SageMaker).
    job: dict[str, str] = field(default_factory=dict)


@task
def prepare(run_id: str, model_id: str, manifest_uris: list[str]) -> Channel:
    """Resolve the manifests ingest wrote for the run's dataset versions into one training manifest under the
    run's prefix (written once): the exact objects, pinned by ETag (and S3 version), their row count and the
    reader rules they were validated with."""
    ctx = context()
    manifests = [(uri, read_json_uri(ctx.s3, uri)) for uri in manifest_uris]
    key = trainingset.manifest_key(model_id, run_id)
    composed = trainingset.write_once(ctx.s3, ctx.artifact_bucket, key,
                                      trainingset.compose(run_id, model_id, manifests))
    objects, reader = composed["objects"], composed.get("reader")
    return Channel(composed["bucket"], composed["versions"][0]["prefix"], [o["key"] for o in objects],
                   int(composed["row_count"]), etags=[str(o.get("etag") or "") for o in objects],
                   version_ids=[str(o.get("version_id") or "") for o in objects],
                   reader=json.dumps(reader, sort_keys=True) if reader else "",
                   manifest_uri=f"s3://{ctx.artifact_bucket}/{key}")


@task
def train(run_id: str, model_id: str, channel: Channel, hyperparameters: dict[str, str],
          tags: dict[str, str], champion_uri: str) -> TrainOutput:
    """Start the job under the run's deterministic name (a no-op if it exists) and wait for its end. The job
    reads exactly the channel's pinned objects and checks that they hold the manifest's rows."""
    ctx, started = context(), time.monotonic()
    request = JobRequest(job_name=run_id, model_id=model_id, data_bucket=channel.bucket,
                         data_prefix=channel.prefix, data_keys=tuple(channel.keys),
                         output_bucket=ctx.artifact_bucket, output_prefix=f"models/{model_id}/{run_id}/",
                         hyperparameters={**hyperparameters, **channel.training_hyperparameters()}, tags=tags,
                         data_etags=tuple(channel.etags), data_version_ids=tuple(channel.version_ids),
                         champion_uri=champion_uri)
    stop = ctx.stop_event(run_id)  # shutdown, or the model went to another worker: stop waiting, job goes on
    if stop.is_set():
        raise Interrupted(f"let go of {run_id} before its job was started")
    ctx.launcher.start(request)
    status = wait(ctx.launcher, request, ctx.poll_s, ctx.max_poll_s, sleep=stop.wait,
                  on_line=ctx.log_lines.get(run_id), stopping=stop)
    if status.state is not JobState.COMPLETED:
        raise TrainingFailed(status.reason or f"training job ended {status.state}")
    return TrainOutput(status.model_uri, status.metrics_uri, time.monotonic() - started, dict(status.job))


@task
def evaluate(run_id: str, model_id: str, output: TrainOutput) -> Registration:
    """Held-out metrics after vs the untrained baseline; a model that does not beat it is not registered."""
    ctx = context()
    found = read_json_uri(ctx.s3, output.metrics_uri)
    metrics, baseline = found["metrics"], found["baseline_metrics"]
    if metrics["accuracy"] <= baseline["accuracy"]:
        raise TrainingFailed(f"evaluation: held-out accuracy {metrics['accuracy']:.3f} does not beat the "
                             f"untrained baseline {baseline['accuracy']:.3f}")
    return Registration(output.model_uri, metrics, baseline, found.get("reference_distribution", {}),
                        output.duration_s, found.get("champion_metrics", {}), found.get("comparison", {}),
                        found.get("champion_error", ""), dict(output.job))


@task
def register(run_id: str, model_id: str, registration: Registration) -> Registration:
    """Record the version beside its artifact: models/<model_id>/<run_id>/registration.json."""
    bucket, _ = split_uri(registration.artifact_uri)
    body = {"model_id": model_id, "model_version": run_id, **registration.__dict__}
    put_json(context().s3, bucket, f"models/{model_id}/{run_id}/registration.json", body)
    return registration


@workflow
def training_workflow(run_id: str, model_id: str, manifest_uris: list[str], hyperparameters: dict[str, str],
                      tags: dict[str, str], champion_uri: str = "") -> Registration:
    channel = prepare(run_id=run_id, model_id=model_id, manifest_uris=manifest_uris)
    output = train(run_id=run_id, model_id=model_id, channel=channel, hyperparameters=hyperparameters, tags=tags,
                   champion_uri=champion_uri)
    evaluated = evaluate(run_id=run_id, model_id=model_id, output=output)
    return register(run_id=run_id, model_id=model_id, registration=evaluated)
