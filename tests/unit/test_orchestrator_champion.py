"""The champion reaches the training job (SageMaker channel, local channel) and every run has its own seed."""

from __future__ import annotations

from pathlib import Path

from flywheel_orchestrator import ids
from flywheel_orchestrator.domain import RunSpec
from flywheel_orchestrator.executors import workflow_inputs
from flywheel_orchestrator.launchers.base import JobRequest
from flywheel_orchestrator.launchers.localjob import Runner
from flywheel_orchestrator.launchers.sagemaker import SageMakerConfig, SageMakerLauncher
from flywheel_orchestrator.policy import Kind
from flywheel_orchestrator.runs import Supervisor

CHAMPION = "s3://flywheel-artifacts/models/m/fw-m-data-1/model.tar.gz"


def request(champion_uri: str = "") -> JobRequest:
    return JobRequest("fw-m-data-2", "m", "flywheel-data", "datasets/m/v2/", ("datasets/m/v2/a.jsonl",),
                      "flywheel-artifacts", "models/m/fw-m-data-2/", champion_uri=champion_uri)


def channels(champion_uri: str) -> list[dict]:
    launcher = SageMakerLauncher(None, SageMakerConfig(role_arn="arn:aws:iam::1:role/r", image_uri="img"))
    return launcher.create_request(request(champion_uri), "s3://b/train.manifest")["InputDataConfig"]


def test_sagemaker_gets_the_champion_as_an_extra_channel():
    assert [c["ChannelName"] for c in channels("")] == ["train"]
    train, champion = channels(CHAMPION)
    assert champion["ChannelName"] == "champion" and champion["CompressionType"] == "None"
    assert champion["DataSource"]["S3DataSource"] == {"S3DataType": "S3Prefix", "S3Uri": CHAMPION,
                                                      "S3DataDistributionType": "FullyReplicated"}


class Downloads:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def download_file(self, bucket: str, key: str, path: str) -> None:
        self.calls.append((bucket, key, path))
        Path(path).write_bytes(b"tar")


def runner(tmp_path: Path, champion_uri: str) -> Runner:
    found = Runner.__new__(Runner)
    found.s3, found.root = Downloads(), tmp_path
    found.request = {**request(champion_uri).__dict__}
    return found


def test_the_local_job_downloads_the_champion_into_its_channel(tmp_path):
    assert runner(tmp_path, "").champion_channel() == {}
    job = runner(tmp_path, CHAMPION)
    env = job.champion_channel()
    assert Path(env["SM_CHANNEL_CHAMPION"], "model.tar.gz").read_bytes() == b"tar"
    assert job.s3.calls[0][:2] == ("flywheel-artifacts", "models/m/fw-m-data-1/model.tar.gz")


def test_the_workflow_gets_the_champion_from_the_runs_lineage():
    spec = RunSpec("fw-m-data-2", "m", "ds2", Kind.NEW_DATA, "s3://b/m.json", "e", "c",
                   lineage={"champion_version": "fw-m-data-1", "champion_uri": CHAMPION})
    assert workflow_inputs(spec, {})["champion_uri"] == CHAMPION
    assert workflow_inputs(RunSpec("r", "m", "d", Kind.NEW_DATA, "u", "e", "c"), {})["champion_uri"] == ""


def test_each_run_has_its_own_seed_and_a_configured_seed_wins():
    a, b = ids.run_id("m", "ds1", "NEW_DATA"), ids.run_id("m", "ds1", "METRIC_BREACH")
    assert ids.seed(a) != ids.seed(b) and ids.seed(a) == ids.seed(a) and 0 <= ids.seed(a) < 2**31
    assert ids.seed(ids.run_id("m", "ds1", "MANUAL", 1)) != ids.seed(ids.run_id("m", "ds1", "MANUAL", 2))
    supervisor = Supervisor.__new__(Supervisor)
    supervisor.hyperparameters = {"epochs": "1"}
    spec = RunSpec(a, "m", "ds1", Kind.NEW_DATA, "u", "e", "c")
    assert supervisor.run_hyperparameters(spec) == {"seed": str(ids.seed(a)), "epochs": "1"}
    supervisor.hyperparameters = {"seed": "13"}
    assert supervisor.run_hyperparameters(spec) == {"seed": "13"}
