"""The local stand-in for a SageMaker training job: `python -m flywheel_orchestrator.launchers.localjob BUCKET JOB`.

Downloads exactly the manifest's objects, each checked against its pinned ETag (and version), runs the entry point with SM_* variables, uploads model.tar.gz and metrics.json,
and records the outcome in status.json. No flywheel settings: everything it needs is in job.json.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3

from flywheel.s3json import get_json, put_json, split_uri
from flywheel_orchestrator.launchers import pinning
from flywheel_orchestrator.launchers.base import ChannelChanged, JobState, pins_of
from flywheel_orchestrator.launchers.local import job_key


class Runner:
    def __init__(self, s3: Any, bucket: str, job_name: str) -> None:
        self.s3, self.bucket, self.job_name = s3, bucket, job_name
        self.spec = get_json(s3, bucket, job_key(job_name, "job.json"))
        self.request = self.spec["request"]
        self.root = Path(self.spec["work_dir"])
        self.child: subprocess.Popen | None = None
        self.stopped = threading.Event()
        self.done = threading.Event()

    def put_status(self, state: JobState, **fields: Any) -> None:
        body = {"state": state, "heartbeat_at": time.time(), "pid": os.getpid(), "host": socket.gethostname(), **fields}
        put_json(self.s3, self.bucket, job_key(self.job_name, "status.json"), body)

    def heartbeat(self) -> None:
        while not self.done.wait(self.spec["heartbeat_s"]):
            if exists(self.s3, self.bucket, job_key(self.job_name, "stop")):
                self.stopped.set()
                if self.child is not None:
                    self.child.kill()
                return
            self.put_status(JobState.IN_PROGRESS)

    def run(self) -> None:
        self.put_status(JobState.IN_PROGRESS)
        threading.Thread(target=self.heartbeat, daemon=True).start()
        try:
            outcome = self.train()
        except Exception as exc:  # the runner's own failure (S3, disk) must still end the job
            outcome = {"state": JobState.FAILED, "reason": f"runner error: {type(exc).__name__}: {exc}"}
        self.done.set()
        if self.stopped.is_set():
            outcome = {"state": JobState.STOPPED, "reason": "stop requested"}
        state = outcome.pop("state")
        self.put_status(state, **outcome)

    def train(self) -> dict[str, Any]:
        shutil.rmtree(self.root / "opt", ignore_errors=True)
        channel, model, output = (self.root / "opt" / p for p in ("input/data/train", "model", "output"))
        for path in (channel, model, output / "data"):
            path.mkdir(parents=True, exist_ok=True)
        pins = pins_of(self.request["data_keys"], self.request.get("data_etags") or (),
                       self.request.get("data_version_ids") or ())
        try:
            for pin in pins:  # exactly the manifest's objects, each as the manifest recorded it
                pinning.download(self.s3, self.request["data_bucket"], pin, channel / pin.file_name)
        except ChannelChanged as exc:
            return {"state": JobState.FAILED, "reason": str(exc)[:1024]}
        env = {**os.environ, **self.champion_channel(), "SM_CHANNEL_TRAIN": str(channel), "SM_MODEL_DIR": str(model),
               "SM_OUTPUT_DATA_DIR": str(output / "data"), "SM_OUTPUT_DIR": str(output),
               "SM_HPS": json.dumps(self.request["hyperparameters"]), "SM_CURRENT_HOST": "algo-1",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.root / "train.log", "ab") as log:
            self.child = subprocess.Popen([self.spec["python"], self.spec["entry_point"]], env=env, stdout=log,
                                          stderr=subprocess.STDOUT)
            code = self.child.wait()
        if code != 0:
            failure = output / "failure"
            reason = failure.read_text().split("\n\n")[0].strip() if failure.exists() else f"exit code {code}"
            return {"state": JobState.FAILED, "reason": reason[:1024]}
        return self.upload(model, output / "data")

    def champion_channel(self) -> dict[str, str]:
        """The champion's model.tar.gz in its own channel, as SageMaker lays out an extra input channel."""
        uri = self.request.get("champion_uri") or ""
        if not uri:
            return {}
        channel = self.root / "opt" / "input" / "data" / "champion"
        channel.mkdir(parents=True, exist_ok=True)
        bucket, key = split_uri(uri)
        self.s3.download_file(bucket, key, str(channel / "model.tar.gz"))
        return {"SM_CHANNEL_CHAMPION": str(channel)}

    def upload(self, model: Path, data: Path) -> dict[str, Any]:
        bucket, prefix = self.request["output_bucket"], self.request["output_prefix"]
        archive = self.root / "model.tar.gz"
        with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
            for path in sorted(model.iterdir()):
                tar.add(path, arcname=path.name)
        self.s3.upload_file(str(archive), bucket, f"{prefix}model.tar.gz")
        self.s3.upload_file(str(data / "metrics.json"), bucket, f"{prefix}metrics.json")
        shutil.rmtree(self.root / "opt", ignore_errors=True)
        archive.unlink()
        return {"state": JobState.COMPLETED, "model_uri": f"s3://{bucket}/{prefix}model.tar.gz",
                "metrics_uri": f"s3://{bucket}/{prefix}metrics.json"}


def exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except Exception:
        return False


def main(argv: list[str]) -> int:
    bucket, job_name = argv
    s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    Runner(s3, bucket, job_name).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
