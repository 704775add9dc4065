"""The Flyte workflow compiles, packages offline and runs in-process; produced events match their schemas."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import boto3
import pytest

from flywheel.bootstrap import build_codec
from flywheel.s3json import get_json
from flywheel.settings import FlywheelSettings
from flywheel_dev.datasets import put_dataset
from flywheel_dev.demodata import make_examples
from flywheel_dev.harness import orchestrator as seed
from flywheel_dev.harness.orchestrator import put_container_output
from flywheel_ingest import ids as ingest_ids
from flywheel_ingest.layout import ObjectSeen
from flywheel_orchestrator import events
from flywheel_orchestrator.domain import RunSpec
from flywheel_orchestrator.executors import LocalWorkflowExecutor
from flywheel_orchestrator.launchers.base import JobState, JobStatus
from flywheel_orchestrator.launchers.local import LocalLauncher
from flywheel_orchestrator.launchers.localjob import Runner
from flywheel_orchestrator.launchers.sagemaker import SageMakerConfig, SageMakerLauncher
from flywheel_orchestrator.policy import Kind
from flywheel_orchestrator.runs import failure_reason
from flywheel_orchestrator.taskcontext import TaskContext
from flywheel_orchestrator.workflow import training_workflow


def test_workflow_compiles_prepare_train_evaluate_register():
    training_workflow.compile()
    names = [node.flyte_entity.name.rsplit(".", 1)[-1] for node in training_workflow.nodes]
    assert names == ["prepare", "train", "evaluate", "register"]


def test_pyflyte_package_serialises_the_workflow_offline(tmp_path: Path):
    out = tmp_path / "flyte-package.tgz"
    pyflyte = Path(sys.executable).parent / "pyflyte"
    done = subprocess.run([str(pyflyte), "--pkgs", "flywheel_orchestrator", "package", "--image",
                           "flywheel/orchestrator:test", "--output", str(out), "--force"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert any(n.endswith("flywheel_orchestrator.workflow.training_workflow_2.pb") for n in names)
    assert sum(".workflow." in n for n in names) == 6


class FinishedJob:
    """A launcher whose job has already written its outputs (the contract the evaluate step reads)."""

    name = "fake"

    def __init__(self, s3, metrics: dict) -> None:
        self.s3, self.metrics, self.requests = s3, metrics, []

    def start(self, request):
        self.requests.append(request)
        self.s3.put_object(Bucket="flywheel-artifacts", Key=f"{request.output_prefix}metrics.json",
                           Body=json.dumps(self.metrics).encode())
        return True

    def status(self, job_name):
        prefix = f"s3://flywheel-artifacts/models/m/{job_name}/"
        return JobStatus(JobState.COMPLETED, model_uri=prefix + "model.tar.gz", metrics_uri=prefix + "metrics.json")

    def stop(self, job_name):
        pass

    def progress(self, job_name):
        return []


@pytest.fixture
def aws(moto_s3):
    for bucket in ("flywheel-data", "flywheel-artifacts"):
        moto_s3.create_bucket(Bucket=bucket)
    return moto_s3


def spec_for(manifest_uri: str) -> RunSpec:
    return RunSpec("fw-m-data-1", "m", "ds1", Kind.NEW_DATA, manifest_uri, "e1", "c1")


def test_in_process_execution_registers_beside_the_artifact(aws):
    uri, manifest = put_dataset(aws, "flywheel-data", "m", "v1", make_examples(8, seed=1))
    job = FinishedJob(aws, {"metrics": {"accuracy": 0.97}, "baseline_metrics": {"accuracy": 0.25},
                            "reference_distribution": {"prediction": [0.25] * 4}})
    executor = LocalWorkflowExecutor(TaskContext(aws, job, "flywheel-artifacts", poll_s=0.01))
    result = executor.execute(spec_for(uri), {"epochs": "1"})
    assert result.metrics == {"accuracy": 0.97} and result.artifact_uri.endswith("fw-m-data-1/model.tar.gz")
    request, = job.requests
    assert request.data_keys == tuple(o["key"] for o in manifest["objects"])
    assert request.data_etags == tuple(o["etag"] for o in manifest["objects"])
    assert request.tags["flywheel:correlation_id"] == "c1"
    assert request.hyperparameters == {"epochs": "1", "expected_rows": "8"}  # no reader rules: the defaults
    saved = get_json(aws, "flywheel-artifacts", "models/m/fw-m-data-1/registration.json")
    assert saved["model_version"] == "fw-m-data-1"


def test_a_model_that_does_not_beat_the_baseline_is_not_registered(aws):
    uri, _ = put_dataset(aws, "flywheel-data", "m", "v1", make_examples(8, seed=1))
    job = FinishedJob(aws, {"metrics": {"accuracy": 0.2}, "baseline_metrics": {"accuracy": 0.25}})
    executor = LocalWorkflowExecutor(TaskContext(aws, job, "flywheel-artifacts", poll_s=0.01))
    with pytest.raises(Exception) as caught:
        executor.execute(spec_for(uri), {})
    assert "does not beat the untrained baseline 0.250" in failure_reason(caught.value)


def test_every_produced_event_matches_its_schema():
    codec = build_codec(FlywheelSettings())
    ready = seed.dataset_ready("s3://flywheel-data/manifests/m/ds1.json", {
        "model_id": "m", "dataset_version_id": "ds1", "bucket": "flywheel-data", "prefix": "datasets/m/v1/",
        "objects": [{"key": "datasets/m/v1/a.jsonl", "etag": "e", "size_bytes": 3, "rows": 1}], "row_count": 1,
        "content_hash": "h", "columns": ["text", "label"], "label_counts": {"a": 1}, "first_object_at": 1})
    trigger = events.trigger_of("flywheel.DatasetVersionReady", "dataset.version-ready", ready, 5)
    spec = RunSpec("fw-m-data-1", "m", "ds1", Kind.NEW_DATA, ready["manifest_uri"], trigger.event_id,
                   ready["envelope"]["correlation_id"], 1, {"rule": "r"})
    started = events.run_started(spec, trigger.causation, "local", {"epochs": "1"})
    registration = {"artifact_uri": "s3://a/m.tar.gz", "metrics": {"accuracy": 1.0},
                    "baseline_metrics": {"accuracy": 0.2}, "reference_distribution": {"prediction": [1.0]}}
    for name, record in [("DatasetVersionReady", ready), ("TrainingRunStarted", started),
                         ("TrainingRunSucceeded", events.run_succeeded(spec, started["envelope"], "s3://a", {"a": 1.0}, 2)),
                         ("TrainingRunFailed", events.run_failed(spec, started["envelope"], "boom", 2)),
                         ("TrainingRunSuperseded", events.run_superseded(spec, spec, started["envelope"])),
                         ("ModelVersionRegistered", events.version_registered(spec, started["envelope"], registration)),
                         ("RetrainRequested", seed.retrain_requested("m", observed_value=0.5, threshold=0.8))]:
        decoded = codec.decode(codec.encode(name, record, check=True))
        assert decoded.record["envelope"]["event_id"] == record["envelope"]["event_id"]
    assert events.spec_of_started(codec.decode(codec.encode("TrainingRunStarted", started)).record) == spec


def test_a_dataset_put_without_ingest_is_named_like_ingest_names_it(aws):
    uri, manifest = put_dataset(aws, "flywheel-data", "m", "v1", make_examples(8, seed=1), parts=2)
    seen = [ObjectSeen(bucket="flywheel-data", key=o["key"], etag=o["etag"], size=o["size_bytes"], modified_ms=0)
            for o in manifest["objects"]]
    assert manifest["dataset_version_id"] == ingest_ids.dataset_version_id(seen)
    assert uri == f"s3://flywheel-data/manifests/m/{manifest['dataset_version_id']}.json"
    assert sum(o["rows"] for o in manifest["objects"]) == manifest["row_count"] == 8


# --- pinned inputs: a run trains exactly the manifest's objects --------------------------------------------

STUB_TRAINER = """
import json, os, pathlib
channel = pathlib.Path(os.environ["SM_CHANNEL_TRAIN"])
files = {p.name: p.read_text() for p in sorted(channel.iterdir())}
hps = json.loads(os.environ["SM_HPS"])
out = {"metrics": {"accuracy": 1.0}, "baseline_metrics": {"accuracy": 0.0}, "channel": files, "hps": hps}
for d in (os.environ["SM_OUTPUT_DATA_DIR"], os.environ["SM_MODEL_DIR"]):
    pathlib.Path(d).mkdir(parents=True, exist_ok=True)
    pathlib.Path(d, "metrics.json").write_text(json.dumps(out))
"""


class InProcessLocalLauncher(LocalLauncher):
    """The local launcher and its job runner, with the runner in this process (moto is in-process)."""

    def _spawn(self, job_name: str) -> None:
        Runner(self.s3, self.bucket, job_name).run()


def local_run(aws, tmp_path: Path, uri: str):
    entry = tmp_path / "stub_train.py"
    entry.write_text(STUB_TRAINER)
    launcher = InProcessLocalLauncher(aws, "flywheel-artifacts", entry, tmp_path / "jobs", {}, heartbeat_s=0.05)
    return LocalWorkflowExecutor(TaskContext(aws, launcher, "flywheel-artifacts", poll_s=0.01)).execute(
        spec_for(uri), {"epochs": "1"})


def put_objects(s3, objects: dict[str, bytes]) -> list[dict]:
    entries = []
    for key, body in objects.items():
        put = s3.put_object(Bucket="flywheel-data", Key=key, Body=body)
        entries.append({"key": key, "etag": put["ETag"].strip('"'), "size_bytes": len(body),
                        "rows": body.count(b"\n"), "format": "jsonl", "version_id": put.get("VersionId")})
    return entries


def publish(s3, objects: list[dict]) -> str:
    manifest = {"model_id": "m", "dataset_version_id": "ds1", "bucket": "flywheel-data", "prefix": "datasets/m/v1/",
                "objects": objects, "row_count": sum(o["rows"] for o in objects),
                "reader": {"required": ["review", "label"], "label_column": "label"}}
    s3.put_object(Bucket="flywheel-data", Key="manifests/m/ds1.json", Body=json.dumps(manifest).encode())
    return "s3://flywheel-data/manifests/m/ds1.json"


PUBLISHED = {"datasets/m/v1/a.jsonl": b'{"review": "good", "label": "pos"}\n',
             "datasets/m/v1/b.jsonl": b'{"review": "bad", "label": "neg"}\n'}


def test_a_local_run_reads_exactly_the_manifests_objects_not_one_added_later(aws, tmp_path: Path):
    uri = publish(aws, put_objects(aws, PUBLISHED))
    aws.put_object(Bucket="flywheel-data", Key="datasets/m/v1/late.jsonl", Body=b'{"review": "x", "label": "y"}\n')
    local_run(aws, tmp_path, uri)
    seen = get_json(aws, "flywheel-artifacts", "models/m/fw-m-data-1/metrics.json")
    assert seen["channel"] == {k.replace("/", "__"): v.decode() for k, v in PUBLISHED.items()}
    assert seen["hps"]["expected_rows"] == "2" and json.loads(seen["hps"]["reader"])["required"] == ["review", "label"]


def test_a_local_run_fails_clearly_when_an_object_was_overwritten_after_publication(aws, tmp_path: Path):
    uri = publish(aws, put_objects(aws, PUBLISHED))
    aws.put_object(Bucket="flywheel-data", Key="datasets/m/v1/b.jsonl", Body=b'{"review": "evil", "label": "neg"}\n')
    with pytest.raises(Exception) as caught:
        local_run(aws, tmp_path, uri)
    reason = failure_reason(caught.value)
    assert "dataset object datasets/m/v1/b.jsonl changed after its version was published" in reason, reason
    assert get_json(aws, "flywheel-artifacts", "models/m/fw-m-data-1/metrics.json") is None


def test_a_versioned_bucket_pins_the_version_so_an_overwrite_does_not_reach_the_run(aws, tmp_path: Path):
    aws.put_bucket_versioning(Bucket="flywheel-data", VersioningConfiguration={"Status": "Enabled"})
    uri = publish(aws, put_objects(aws, PUBLISHED))
    aws.put_object(Bucket="flywheel-data", Key="datasets/m/v1/b.jsonl", Body=b'{"review": "evil", "label": "neg"}\n')
    local_run(aws, tmp_path, uri)
    seen = get_json(aws, "flywheel-artifacts", "models/m/fw-m-data-1/metrics.json")
    assert seen["channel"]["datasets__m__v1__b.jsonl"] == PUBLISHED["datasets/m/v1/b.jsonl"].decode()




def sagemaker_launcher(aws) -> SageMakerLauncher:
    config = SageMakerConfig(role_arn="arn:aws:iam::123456789012:role/flywheel-sagemaker-execution",
                             image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/flywheel-training:1")
    return SageMakerLauncher(boto3.client("sagemaker"), config, s3=aws)


def test_the_sagemaker_request_lists_exactly_the_manifests_objects_as_published(aws):
    objects = put_objects(aws, PUBLISHED)
    uri = publish(aws, objects)
    aws.put_object(Bucket="flywheel-data", Key="datasets/m/v1/late.jsonl", Body=b'{"review": "x", "label": "y"}\n')
    put_container_output(aws, "models/m/fw-m-data-1/output/output.tar.gz")  # moto never runs the container
    LocalWorkflowExecutor(TaskContext(aws, sagemaker_launcher(aws), "flywheel-artifacts", poll_s=0.01)).execute(
        spec_for(uri), {})
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName="fw-m-data-1")
    source = described["InputDataConfig"][0]["DataSource"]["S3DataSource"]
    assert source["S3DataType"] == "ManifestFile"
    listed = json.loads(aws.get_object(Bucket="flywheel-artifacts",
                                       Key="models/m/fw-m-data-1/input/train.manifest")["Body"].read())
    assert listed[1:] == [o["key"].replace("/", "__") for o in objects]
    for name in listed[1:]:
        body = aws.get_object(Bucket="flywheel-artifacts", Key=f"models/m/fw-m-data-1/input/train/{name}")["Body"]
        assert body.read() == PUBLISHED[name.replace("__", "/")]
    assert described["HyperParameters"]["expected_rows"] == "2"


def test_sagemaker_creates_no_job_when_an_object_was_overwritten_after_publication(aws):
    uri = publish(aws, put_objects(aws, PUBLISHED))
    aws.put_object(Bucket="flywheel-data", Key="datasets/m/v1/a.jsonl", Body=b'{"review": "evil", "label": "pos"}\n')
    with pytest.raises(Exception) as caught:
        LocalWorkflowExecutor(TaskContext(aws, sagemaker_launcher(aws), "flywheel-artifacts", poll_s=0.01)).execute(
            spec_for(uri), {})
    assert "datasets/m/v1/a.jsonl changed after its version was published" in failure_reason(caught.value)
    assert boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
