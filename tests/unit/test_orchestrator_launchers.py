"""SageMaker launcher against a fake of the state transitions moto lacks; waiting, retries, failure reasons."""

from __future__ import annotations

import json
from collections import deque

import pytest
from botocore.exceptions import ClientError

from flywheel_orchestrator.launchers.base import (
    ChannelChanged,
    JobRequest,
    JobState,
    JobStatus,
    TrainingFailed,
    wait,
)
from flywheel_orchestrator.launchers.retry import with_backoff
from flywheel_orchestrator.launchers.sagemaker import SageMakerConfig, SageMakerLauncher
from flywheel_orchestrator.runs import failure_reason

REQUEST = JobRequest("fw-m-data-1", "m", "flywheel-data", "datasets/m/v1/", ("datasets/m/v1/a.jsonl",),
                     "flywheel-artifacts", "models/m/fw-m-data-1/", {"epochs": "1"},
                     {"flywheel:correlation_id": "c-1"}, data_etags=("e-a",))


def error(code: str, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "op")


class FakeSageMaker:
    """Jobs walk through scripted states (InProgress, Failed, Stopping, Stopped); calls can be throttled."""

    def __init__(self, states: list[str], throttles: int = 0, reason: str = "") -> None:
        self.jobs: dict[str, dict] = {}
        self.states, self.reason = states, reason
        self.throttles, self.calls = throttles, []

    def _throttle(self, name: str) -> None:
        self.calls.append(name)
        if self.throttles:
            self.throttles -= 1
            raise error("ThrottlingException", "Rate exceeded")

    def create_training_job(self, **body):
        self._throttle("create")
        if body["TrainingJobName"] in self.jobs:
            raise error("ResourceInUse", "a training job with this name already exists")
        self.jobs[body["TrainingJobName"]] = {"body": body, "states": deque(self.states)}

    def describe_training_job(self, TrainingJobName):  # noqa: N803 - boto3's parameter name
        self._throttle("describe")
        job = self.jobs.get(TrainingJobName)
        if job is None:
            raise error("ValidationException", f"Could not find training job {TrainingJobName}")
        state = job["states"][0] if len(job["states"]) == 1 else job["states"].popleft()
        out = {"TrainingJobStatus": state, "FailureReason": self.reason if state == "Failed" else ""}
        if state == "Completed":
            out["ModelArtifacts"] = {"S3ModelArtifacts": "s3://flywheel-artifacts/models/m/fw-m-data-1/output/model.tar.gz"}
        return out

    def stop_training_job(self, TrainingJobName):  # noqa: N803
        self._throttle("stop")
        self.jobs[TrainingJobName]["states"] = deque(["Stopping", "Stopped"])


class FakeS3:
    """The S3 calls the channel pinning makes: conditional copies and the manifest file put."""

    def __init__(self, etags: dict[tuple[str, str], str]) -> None:
        self.etags, self.puts, self.copies = etags, {}, []

    def copy_object(self, Bucket, Key, CopySource, CopySourceIfMatch=None):  # noqa: N803 - boto3's names
        etag = self.etags.get((CopySource["Bucket"], CopySource["Key"]))
        if etag is None:
            raise error("NoSuchKey")
        if CopySourceIfMatch is not None and CopySourceIfMatch.strip('"') != etag:
            raise error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
        self.copies.append((CopySource, Bucket, Key))
        return {"CopyObjectResult": {"ETag": f'"{etag}"'}}

    def put_object(self, Bucket, Key, Body):  # noqa: N803
        self.puts[(Bucket, Key)] = Body

    def delete_object(self, Bucket, Key):  # noqa: N803
        self.puts.pop((Bucket, Key), None)


def launcher(fake: FakeSageMaker, s3: FakeS3 | None = None, **config) -> SageMakerLauncher:
    return SageMakerLauncher(fake, SageMakerConfig(role_arn="arn:aws:iam::1:role/r", image_uri="img:1", **config),
                             sleep=lambda _: None, s3=s3 or FakeS3({("flywheel-data", "datasets/m/v1/a.jsonl"): "e-a"}))


def test_create_request_carries_channels_output_stopping_spot_and_correlation_tags():
    body = launcher(FakeSageMaker([]), use_spot=True, source_uri="s3://b/code.tar.gz").create_request(
        REQUEST, "s3://flywheel-artifacts/models/m/fw-m-data-1/input/train.manifest")
    assert body["InputDataConfig"][0]["DataSource"]["S3DataSource"] == {
        "S3DataType": "ManifestFile", "S3Uri": "s3://flywheel-artifacts/models/m/fw-m-data-1/input/train.manifest",
        "S3DataDistributionType": "FullyReplicated"}
    assert body["OutputDataConfig"]["S3OutputPath"] == "s3://flywheel-artifacts/models/m/"
    assert body["EnableManagedSpotTraining"] and body["StoppingCondition"]["MaxWaitTimeInSeconds"] >= 3600
    assert {"Key": "flywheel:correlation_id", "Value": "c-1"} in body["Tags"]
    assert body["HyperParameters"]["sagemaker_program"] == "train.py"


def test_starting_twice_is_a_no_op_also_when_the_service_lost_its_memory():
    fake = FakeSageMaker(["InProgress"])
    assert launcher(fake).start(REQUEST) is True
    assert launcher(fake).start(REQUEST) is False  # a fresh launcher, as after a crash
    assert len(fake.jobs) == 1


def test_already_exists_from_a_racing_create_means_running():
    fake = FakeSageMaker(["InProgress"])
    fake.jobs[REQUEST.job_name] = {"body": {}, "states": deque(["InProgress"])}
    fake.describe_training_job = lambda **_: (_ for _ in ()).throw(error("ValidationException"))  # not visible yet
    assert launcher(fake).start(REQUEST) is False


def test_wait_follows_in_progress_to_failed_with_the_reason():
    fake = FakeSageMaker(["InProgress", "InProgress", "Failed"], reason="AlgorithmError: no labels")
    sm = launcher(fake)
    sm.start(REQUEST)
    delays: list[float] = []
    status = wait(sm, REQUEST, poll_s=1, max_poll_s=2, sleep=delays.append)
    assert (status.state, status.reason) == (JobState.FAILED, "AlgorithmError: no labels")
    assert status.job["job_arn"].endswith(":training-job/fw-m-data-1") and "billable_seconds" not in status.job
    assert delays == [1, 1.5]


def test_stop_on_supersede_ends_stopped():
    fake = FakeSageMaker(["InProgress"])
    sm = launcher(fake)
    sm.start(REQUEST)
    sm.stop(REQUEST.job_name)
    assert wait(sm, REQUEST, 0.1, 0.1, sleep=lambda _: None).state is JobState.STOPPED


def test_throttling_is_retried_with_bounded_jittered_backoff():
    fake = FakeSageMaker(["Completed"], throttles=3)
    slept: list[float] = []
    sm = SageMakerLauncher(fake, SageMakerConfig("arn:aws:iam::1:role/r", "img:1"), sleep=slept.append,
                           s3=FakeS3({("flywheel-data", "datasets/m/v1/a.jsonl"): "e-a"}))
    assert sm.start(REQUEST) is True
    assert len(slept) == 3 and all(0 <= s <= 0.5 * 2 ** i for i, s in enumerate(slept))
    assert sm.status(REQUEST.job_name).model_uri.endswith("/output/model.tar.gz")


def test_retries_give_up_after_the_bound():
    calls: list[int] = []

    def always_throttled():
        calls.append(1)
        raise error("ThrottlingException")

    with pytest.raises(ClientError):
        with_backoff(always_throttled, attempts=4, sleep=lambda _: None)
    assert len(calls) == 4


def test_other_errors_are_not_retried():
    calls: list[int] = []

    def broken():
        calls.append(1)
        raise error("AccessDeniedException")

    with pytest.raises(ClientError):
        with_backoff(broken, sleep=lambda _: None)
    assert calls == [1]


class LostRunner:
    """A local job whose runner died: MISSING until started again, then it completes."""

    name = "fake"

    def __init__(self) -> None:
        self.started = 0

    def start(self, request):
        self.started += 1
        return False

    def status(self, job_name):
        return JobStatus(JobState.COMPLETED, model_uri="s3://a/m.tar.gz") if self.started else JobStatus(JobState.MISSING)

    def stop(self, job_name):
        pass

    def progress(self, job_name):
        return ["progress epoch=1/1"]


def test_wait_takes_over_a_job_whose_runner_died_and_relays_its_output():
    fake, lines = LostRunner(), []
    assert wait(fake, REQUEST, 0.1, 0.1, sleep=lambda _: None, on_line=lines.append).state is JobState.COMPLETED
    assert fake.started == 1 and lines == ["progress epoch=1/1", "progress epoch=1/1"]


def test_failure_reason_is_found_inside_wrapping_exceptions():
    try:
        try:
            raise TrainingFailed("ValueError: need at least 2 distinct labels")
        except TrainingFailed as inner:
            raise RuntimeError("task prepare failed") from inner
    except RuntimeError as outer:
        assert failure_reason(outer) == "ValueError: need at least 2 distinct labels"
    assert failure_reason(OSError("disk full")) == "OSError: disk full"


def test_shutdown_stops_the_wait_but_not_the_job():
    import threading

    from flywheel_orchestrator.launchers.base import Interrupted

    fake = FakeSageMaker(["InProgress"])
    sm = launcher(fake)
    sm.start(REQUEST)
    stopping = threading.Event()
    stopping.set()
    with pytest.raises(Interrupted):
        wait(sm, REQUEST, 0.1, 0.1, sleep=lambda _: None, stopping=stopping)
    assert "stop" not in fake.calls


def test_the_sagemaker_channel_is_a_manifest_file_of_exactly_the_pinned_copies():
    keys = ("datasets/m/v1/a.jsonl", "datasets/m/v1/sub/b.CSV")
    request = JobRequest("fw-m-data-1", "m", "flywheel-data", "datasets/m/v1/", keys, "flywheel-artifacts",
                         "models/m/fw-m-data-1/", data_etags=("e-a", "e-b"), data_version_ids=("", "v7"))
    s3 = FakeS3({("flywheel-data", keys[0]): "e-a", ("flywheel-data", keys[1]): "e-b",
                 ("flywheel-data", "datasets/m/v1/late.jsonl"): "e-late"})
    fake = FakeSageMaker(["InProgress"])
    assert launcher(fake, s3).start(request) is True
    listed = json.loads(s3.puts[("flywheel-artifacts", "models/m/fw-m-data-1/input/train.manifest")])
    assert listed == [{"prefix": "s3://flywheel-artifacts/models/m/fw-m-data-1/input/train/"},
                      "datasets__m__v1__a.jsonl", "datasets__m__v1__sub__b.CSV"]
    assert [c[0] for c in s3.copies] == [{"Bucket": "flywheel-data", "Key": keys[0]},
                                         {"Bucket": "flywheel-data", "Key": keys[1], "VersionId": "v7"}]
    channel = fake.jobs["fw-m-data-1"]["body"]["InputDataConfig"][0]["DataSource"]["S3DataSource"]
    assert channel["S3DataType"] == "ManifestFile" and channel["S3Uri"].endswith("/input/train.manifest")


def test_an_object_changed_after_publication_fails_the_start_and_creates_no_job():
    fake = FakeSageMaker(["InProgress"])
    overwritten = FakeS3({("flywheel-data", "datasets/m/v1/a.jsonl"): "e-new"})
    with pytest.raises(ChannelChanged, match="datasets/m/v1/a.jsonl changed after its version was published"):
        launcher(fake, overwritten).start(REQUEST)
    assert fake.jobs == {}
    with pytest.raises(ChannelChanged, match="deleted"):
        launcher(fake, FakeS3({})).start(REQUEST)
