"""SageMaker launcher: one CreateTrainingJob per deterministic job name; "already exists" means running.

The train channel is pinned: before creating the job, the manifest's objects are copied server-side, each
only if it still has the manifest's ETag (and version), to `<output_prefix>input/train/`, and the channel is
a SageMaker manifest file (S3DataType ManifestFile) listing exactly those copies. Nothing written to the
dataset prefix after publication reaches the job.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from flywheel_orchestrator.launchers import pinning
from flywheel_orchestrator.launchers.base import JobRequest, JobState, JobStatus
from flywheel_orchestrator.launchers.retry import with_backoff

_STATES = {"InProgress": JobState.IN_PROGRESS, "Completed": JobState.COMPLETED, "Failed": JobState.FAILED,
           "Stopping": JobState.IN_PROGRESS, "Stopped": JobState.STOPPED}
# train.py prints `metrics: {...}`; SageMaker scrapes these into the job's FinalMetricDataList.
METRIC_DEFINITIONS = [{"Name": "accuracy", "Regex": r'"accuracy": ([0-9.]+)'},
                      {"Name": "macro_f1", "Regex": r'"macro_f1": ([0-9.]+)'}]


@dataclass(frozen=True)
class SageMakerConfig:
    role_arn: str
    image_uri: str
    instance_type: str = "ml.g5.xlarge"
    volume_gb: int = 30
    max_runtime_s: int = 3600
    use_spot: bool = False
    max_wait_s: int = 7200  # spot only: how long to wait for capacity, >= max_runtime_s
    source_uri: str = ""  # s3:// sourcedir.tar.gz with train.py, for the framework image's script mode


def resolve_image_uri(region: str, instance_type: str, framework_version: str) -> str:
    """The PyTorch training image for this region and instance, as the SageMaker SDK knows it (offline)."""
    from sagemaker.core import image_uris  # heavy import, only when the SageMaker launcher is chosen

    return image_uris.retrieve("pytorch", region=region, version=framework_version, py_version="py311",
                               instance_type=instance_type, image_scope="training")


class SageMakerLauncher:
    name = "sagemaker"

    def __init__(self, client: Any, config: SageMakerConfig, sleep: Callable[[float], None] | None = None,
                 s3: Any = None) -> None:
        self.client, self.config, self.s3 = client, config, s3
        self._retry_kwargs = {"sleep": sleep} if sleep else {}

    def _call(self, method: str, **kwargs: Any) -> Any:
        return with_backoff(lambda: getattr(self.client, method)(**kwargs), **self._retry_kwargs)

    def start(self, request: JobRequest) -> bool:
        # Ask first (moto accepts a duplicate name); ResourceInUse still covers a race with another worker.
        if self.status(request.job_name).state is not JobState.MISSING:
            return False
        channel = self.pin_channel(request)
        try:
            self._call("create_training_job", **self.create_request(request, channel))
        except ClientError as exc:
            if _already_exists(exc):
                return False
            raise
        return True

    def pin_channel(self, request: JobRequest) -> str:
        """Snapshot exactly the pinned objects under the run's prefix and list them in a SageMaker manifest
        file; returns its s3:// URI. Raises ChannelChanged (the run fails) when an object changed."""
        if self.s3 is None:
            raise ValueError("the SageMaker launcher needs an S3 client to pin the train channel")
        base = f"{request.output_prefix}input/train/"
        names = []
        for pin in request.pins():
            with_backoff(lambda pin=pin: pinning.copy(self.s3, request.data_bucket, pin, request.output_bucket,
                                                      base + pin.file_name), **self._retry_kwargs)
            names.append(pin.file_name)
        key = f"{request.output_prefix}input/train.manifest"
        body = json.dumps([{"prefix": f"s3://{request.output_bucket}/{base}"}, *names]).encode()
        with_backoff(lambda: self.s3.put_object(Bucket=request.output_bucket, Key=key, Body=body),
                     **self._retry_kwargs)
        return f"s3://{request.output_bucket}/{key}"

    def create_request(self, request: JobRequest, channel_manifest_uri: str) -> dict[str, Any]:
        cfg = self.config
        hps = dict(request.hyperparameters)
        if cfg.source_uri:  # script mode of the SDK-resolved framework image
            hps |= {"sagemaker_program": "train.py", "sagemaker_submit_directory": cfg.source_uri}
        body: dict[str, Any] = {
            "TrainingJobName": request.job_name,
            "AlgorithmSpecification": {"TrainingImage": cfg.image_uri, "TrainingInputMode": "File",
                                       "MetricDefinitions": METRIC_DEFINITIONS},
            "RoleArn": cfg.role_arn,
            "HyperParameters": hps,
            "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
                "S3DataType": "ManifestFile", "S3Uri": channel_manifest_uri,
                "S3DataDistributionType": "FullyReplicated"}}}],
            # SageMaker appends <job_name>/output/model.tar.gz: models/<model_id>/<run_id>/output/...
            "OutputDataConfig": {"S3OutputPath": f"s3://{request.output_bucket}/models/{request.model_id}/"},
            "ResourceConfig": {"InstanceType": cfg.instance_type, "InstanceCount": 1, "VolumeSizeInGB": cfg.volume_gb},
            "StoppingCondition": {"MaxRuntimeInSeconds": cfg.max_runtime_s},
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(request.tags.items())],
            "EnableManagedSpotTraining": cfg.use_spot,
        }
        if cfg.use_spot:
            body["StoppingCondition"]["MaxWaitTimeInSeconds"] = max(cfg.max_wait_s, cfg.max_runtime_s)
            body["CheckpointConfig"] = {"S3Uri": f"s3://{request.output_bucket}/{request.output_prefix}checkpoints/"}
        return body

    def status(self, job_name: str) -> JobStatus:
        try:
            job = self._call("describe_training_job", TrainingJobName=job_name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
                return JobStatus(JobState.MISSING, reason=str(exc))
            raise
        model_uri = job.get("ModelArtifacts", {}).get("S3ModelArtifacts", "")
        output_uri = model_uri.rsplit("/", 1)[0] + "/output.tar.gz" if model_uri else ""
        return JobStatus(_STATES.get(job["TrainingJobStatus"], JobState.IN_PROGRESS),
                         job.get("FailureReason", ""), model_uri, output_uri)

    def stop(self, job_name: str) -> None:
        try:
            self._call("stop_training_job", TrainingJobName=job_name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ValidationException":  # already ended: nothing to stop
                raise

    def progress(self, job_name: str) -> list[str]:
        return []  # the job's own log is in CloudWatch; status transitions are logged by the caller


def _already_exists(exc: ClientError) -> bool:
    error = exc.response["Error"]
    return error["Code"] == "ResourceInUse" or "already exists" in error.get("Message", "").lower()
