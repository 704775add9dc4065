"""SageMaker launcher against a fake of the state transitions moto lacks; waiting, retries, failure reasons."""

from __future__ import annotations

from collections import deque

import pytest
from botocore.exceptions import ClientError

from flywheel_orchestrator.launchers.base import JobRequest, JobState, JobStatus, TrainingFailed, wait
from flywheel_orchestrator.launchers.retry import with_backoff
from flywheel_orchestrator.launchers.sagemaker import SageMakerConfig, SageMakerLauncher
from flywheel_orchestrator.runs import failure_reason

REQUEST = JobRequest("fw-m-data-1", "m", "flywheel-data", "datasets/m/v1/", ("datasets/m/v1/a.jsonl",),
                     "flywheel-artifacts", "models/m/fw-m-data-1/", {"epochs": "1"},
                     {"flywheel:correlation_id": "c-1"})


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


def launcher(fake: FakeSageMaker, **config) -> SageMakerLauncher:
    return SageMakerLauncher(fake, SageMakerConfig(role_arn="arn:aws:iam::1:role/r", image_uri="img:1", **config),
                             sleep=lambda _: None)


def test_create_request_carries_channels_output_stopping_spot_and_correlation_tags():
    body = launcher(FakeSageMaker([]), use_spot=True, source_uri="s3://b/code.tar.gz").create_request(REQUEST)
    assert body["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == "s3://flywheel-data/datasets/m/v1/"
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
    assert status == JobStatus(JobState.FAILED, "AlgorithmError: no labels")
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
    sm = SageMakerLauncher(fake, SageMakerConfig("arn:aws:iam::1:role/r", "img:1"), sleep=slept.append)
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
