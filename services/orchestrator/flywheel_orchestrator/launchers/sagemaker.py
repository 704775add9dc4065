"""SageMaker launcher: one CreateTrainingJob per deterministic job name; "already exists" means running.

The train channel is pinned: before creating the job, the manifest's objects are copied server-side, each
only if it still has the manifest's ETag (and version), to `<output_prefix>input/train/`, and the channel is
a SageMaker manifest file (S3DataType ManifestFile) listing exactly those copies. Nothing written to the
dataset prefix after publication reaches the job.

The job runs the flywheel-training image (services/training/Dockerfile: the entry point baked in, no source
bundle); GPU instance types (ml.g*, ml.p*) get its CUDA variant. By default it runs in the configured VPC
subnets and security groups, with network isolation and inter-container encryption, on managed spot capacity
with checkpoints under the run's prefix (train.py resumes from them), and with the KMS keys when set.
DescribeTrainingJob's billable seconds become the run's estimated cost (pricing.py). docs/decisions/0011.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from flywheel_orchestrator.launchers import pinning, pricing
from flywheel_orchestrator.launchers.base import JobRequest, JobState, JobStatus
from flywheel_orchestrator.launchers.retry import with_backoff

_STATES = {"InProgress": JobState.IN_PROGRESS, "Completed": JobState.COMPLETED, "Failed": JobState.FAILED,
           "Stopping": JobState.IN_PROGRESS, "Stopped": JobState.STOPPED}
# train.py prints `metrics: {...}`; SageMaker scrapes these into the job's FinalMetricDataList.
METRIC_DEFINITIONS = [{"Name": "accuracy", "Regex": r'"accuracy": ([0-9.]+)'},
                      {"Name": "macro_f1", "Regex": r'"macro_f1": ([0-9.]+)'}]
# GPU instance families (g4dn, g5, g6, g6e, p3, p4d, p5, ...): they need the CUDA build of torch.
_GPU_INSTANCE = re.compile(r"^ml\.[gp]\d")
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"  # SageMaker syncs it with CheckpointConfig.S3Uri; train.py reads it
LOG_GROUP = "/aws/sagemaker/TrainingJobs"


def is_gpu_instance(instance_type: str) -> bool:
    return bool(_GPU_INSTANCE.match(instance_type))


@dataclass(frozen=True)
class SageMakerConfig:
    role_arn: str
    image_uri: str  # flywheel-training (CPU torch) for CPU instance types
    gpu_image_uri: str = ""  # flywheel-training-cuda for GPU instance types (ml.g*, ml.p*)
    instance_type: str = "ml.m5.xlarge"
    region: str = "us-east-1"
    volume_gb: int = 30
    max_runtime_s: int = 3600
    use_spot: bool = True
    max_wait_s: int = 7200  # spot only: how long to wait for capacity, >= max_runtime_s
    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    volume_kms_key_id: str = ""  # "": the AWS-managed key
    output_kms_key_id: str = ""
    network_isolation: bool = True
    inter_container_encryption: bool = True
    prices: Mapping[str, float] = field(default_factory=dict)  # overrides of pricing.PRICES_USD_PER_HOUR
    source_uri: str = ""  # opt-in script mode: s3:// sourcedir.tar.gz for a framework image (not the default)

    def image_for(self, instance_type: str) -> str:
        """The CUDA image for GPU instance types, the CPU image otherwise; an error if it is not configured."""
        if is_gpu_instance(instance_type):
            if not self.gpu_image_uri:
                raise ValueError(f"{instance_type} is a GPU instance type: set FLYWHEEL_SAGEMAKER_GPU_IMAGE_URI "
                                 "(the flywheel-training-cuda image)")
            return self.gpu_image_uri
        if not self.image_uri:
            raise ValueError("set FLYWHEEL_SAGEMAKER_IMAGE_URI (the flywheel-training image)")
        return self.image_uri

    def _arn_parts(self) -> tuple[str, str]:
        """(partition, account) of the execution role: training jobs live in the same account."""
        parts = self.role_arn.split(":")
        return (parts[1], parts[4]) if len(parts) > 5 and parts[0] == "arn" else ("aws", "")

    def job_arn(self, job_name: str) -> str:
        partition, account = self._arn_parts()
        return f"arn:{partition}:sagemaker:{self.region}:{account}:training-job/{job_name.lower()}"

    def logs_url(self, job_name: str) -> str:
        """The CloudWatch console's view of the job's log streams (named <job>/algo-<n>-<epoch>)."""
        partition, _ = self._arn_parts()
        domain = {"aws-cn": "console.amazonaws.cn", "aws-us-gov": "console.amazonaws-us-gov.com"}.get(
            partition, "console.aws.amazon.com")
        return (f"https://{self.region}.{domain}/cloudwatch/home?region={self.region}#logStream:"
                f"group={LOG_GROUP};prefix={quote(job_name, safe='')};streamFilter=typeLogStreamPrefix")


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
        if cfg.source_uri:  # opt-in script mode of a framework image; the default image has train.py baked in
            hps |= {"sagemaker_program": "train.py", "sagemaker_submit_directory": cfg.source_uri}
        output: dict[str, Any] = {"S3OutputPath": f"s3://{request.output_bucket}/models/{request.model_id}/"}
        if cfg.output_kms_key_id:
            output["KmsKeyId"] = cfg.output_kms_key_id
        resources: dict[str, Any] = {"InstanceType": cfg.instance_type, "InstanceCount": 1,
                                     "VolumeSizeInGB": cfg.volume_gb}
        if cfg.volume_kms_key_id:
            resources["VolumeKmsKeyId"] = cfg.volume_kms_key_id
        body: dict[str, Any] = {
            "TrainingJobName": request.job_name,
            "AlgorithmSpecification": {"TrainingImage": cfg.image_for(cfg.instance_type), "TrainingInputMode": "File",
                                       "MetricDefinitions": METRIC_DEFINITIONS},
            "RoleArn": cfg.role_arn,
            "HyperParameters": hps,
            "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
                "S3DataType": "ManifestFile", "S3Uri": channel_manifest_uri,
                "S3DataDistributionType": "FullyReplicated"}}}, *champion_channel(request.champion_uri)],
            # SageMaker appends <job_name>/output/model.tar.gz: models/<model_id>/<run_id>/output/...
            "OutputDataConfig": output,
            "ResourceConfig": resources,
            "StoppingCondition": {"MaxRuntimeInSeconds": cfg.max_runtime_s},
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(request.tags.items())],
            "EnableNetworkIsolation": cfg.network_isolation,
            "EnableInterContainerTrafficEncryption": cfg.inter_container_encryption,
            "EnableManagedSpotTraining": cfg.use_spot,
            # No profiler reports beside the output: the execution role may write only output/model.tar.gz and
            # output/output.tar.gz under a run (flywheel_dev.iam RUN_OUTPUT_FILES, docs/decisions/0011).
            "ProfilerConfig": {"DisableProfiler": True},
        }
        if cfg.subnets or cfg.security_group_ids:
            body["VpcConfig"] = {"Subnets": list(cfg.subnets), "SecurityGroupIds": list(cfg.security_group_ids)}
        if cfg.use_spot:  # an interrupted spot job restarts from /opt/ml/checkpoints, synced with the run's prefix
            body["StoppingCondition"]["MaxWaitTimeInSeconds"] = max(cfg.max_wait_s, cfg.max_runtime_s)
            body["CheckpointConfig"] = {"S3Uri": f"s3://{request.output_bucket}/{request.output_prefix}checkpoints/",
                                        "LocalPath": CHECKPOINT_LOCAL_PATH}
        return body

    def links(self, job_name: str) -> dict[str, str]:
        """The job's ARN and CloudWatch logs link, known before the job exists (for TrainingRunStarted)."""
        return {"job_arn": self.config.job_arn(job_name), "logs_url": self.config.logs_url(job_name)}

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
                         job.get("FailureReason", ""), model_uri, output_uri, job=self.job_details(job_name, job))

    def job_details(self, job_name: str, job: Mapping[str, Any]) -> dict[str, str]:
        """ARN, logs link, instance type and, once SageMaker reports them, billable and training seconds with
        the estimated cost and spot saving (pricing.py). Strings, as they travel through the workflow."""
        resources = job.get("ResourceConfig") or {}
        instance_type = resources.get("InstanceType") or self.config.instance_type
        details = {"job_arn": job.get("TrainingJobArn") or self.config.job_arn(job_name),
                   "logs_url": self.config.logs_url(job_name), "instance_type": instance_type}
        billable = job.get("BillableTimeInSeconds")
        if billable is None:  # not billed (yet): no cost to report
            return details
        spot = bool(job.get("EnableManagedSpotTraining"))
        cost = pricing.estimate(float(billable), float(job.get("TrainingTimeInSeconds") or billable), instance_type,
                                int(resources.get("InstanceCount") or 1), spot, self.config.prices)
        details |= {"billable_seconds": f"{cost.billable_seconds:g}", "training_seconds": f"{cost.training_seconds:g}",
                    "spot": "true" if spot else "false"}
        if cost.estimated_cost_usd is not None:
            details |= {"estimated_cost_usd": f"{cost.estimated_cost_usd:.6f}",
                        "spot_savings_usd": f"{cost.spot_savings_usd:.6f}"}
        return details

    def stop(self, job_name: str) -> None:
        try:
            self._call("stop_training_job", TrainingJobName=job_name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ValidationException":  # already ended: nothing to stop
                raise

    def progress(self, job_name: str) -> list[str]:
        return []  # the job's own log is in CloudWatch; status transitions are logged by the caller


def champion_channel(uri: str) -> list[dict[str, Any]]:
    """The production version's model.tar.gz as the `champion` channel (/opt/ml/input/data/champion/)."""
    if not uri:
        return []
    return [{"ChannelName": "champion", "CompressionType": "None", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}]


def _already_exists(exc: ClientError) -> bool:
    error = exc.response["Error"]
    return error["Code"] == "ResourceInUse" or "already exists" in error.get("Message", "").lower()
