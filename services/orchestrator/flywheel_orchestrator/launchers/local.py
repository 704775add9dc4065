"""Local launcher: the training entry point as a detached subprocess with SageMaker's environment.

The job lives in S3 like a SageMaker job does: `jobs/<job_name>/job.json` is created with a conditional
put (If-None-Match), so a second start of the same name is "already exists"; the runner heartbeats
`status.json`. A runner that outlives a killed orchestrator finishes the job; one that died with it is
seen as MISSING (stale heartbeat) and started again under the same name.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from flywheel.s3json import get_json, put_json
from flywheel_orchestrator.launchers.base import JobRequest, JobState, JobStatus

JOBS_PREFIX = "jobs/"


def job_key(job_name: str, name: str) -> str:
    return f"{JOBS_PREFIX}{job_name}/{name}"


class LocalLauncher:
    name = "local"

    def __init__(self, s3: Any, bucket: str, entry_point: Path, work_dir: Path, env: dict[str, str],
                 heartbeat_s: float = 2.0, stale_s: float = 20.0, python: str = sys.executable) -> None:
        self.s3, self.bucket, self.entry_point = s3, bucket, entry_point
        self.work_dir, self.env, self.python = work_dir, env, python
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self._children: dict[str, subprocess.Popen] = {}
        self._log_offsets: dict[str, int] = {}

    def start(self, request: JobRequest) -> bool:
        spec = {"request": request.__dict__, "entry_point": str(self.entry_point), "python": self.python,
                "work_dir": str(self.work_dir / request.job_name), "heartbeat_s": self.heartbeat_s}
        try:
            put_json(self.s3, self.bucket, job_key(request.job_name, "job.json"), spec, if_none_match=True)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("PreconditionFailed", "412"):
                raise
            if self.status(request.job_name).state is JobState.MISSING:
                self._spawn(request.job_name)  # its runner died: take the job over under the same name
            return False
        self._spawn(request.job_name)
        return True

    def _spawn(self, job_name: str) -> None:
        log_dir = self.work_dir / job_name
        log_dir.mkdir(parents=True, exist_ok=True)
        # Its own session: the runner must outlive the orchestrator (kill -9 included), like a SageMaker job.
        self._children[job_name] = subprocess.Popen(
            [self.python, "-m", "flywheel_orchestrator.launchers.localjob", self.bucket, job_name],
            env={**os.environ, **self.env}, stdout=subprocess.DEVNULL, stderr=open(log_dir / "runner.log", "ab"),  # noqa: SIM115
            start_new_session=True)
        put_json(self.s3, self.bucket, job_key(job_name, "status.json"),
                 {"state": JobState.IN_PROGRESS, "heartbeat_at": time.time(), "pid": self._children[job_name].pid,
                  "host": socket.gethostname()})

    def status(self, job_name: str) -> JobStatus:
        child = self._children.get(job_name)
        if child is not None and child.poll() is not None:
            self._children.pop(job_name)  # reaped; its last word is in status.json
        found = get_json(self.s3, self.bucket, job_key(job_name, "status.json"))
        if found is None:
            return JobStatus(JobState.MISSING)
        state = JobState(found["state"])
        if state is JobState.IN_PROGRESS and time.time() - found.get("heartbeat_at", 0) > self.stale_s:
            return JobStatus(JobState.MISSING, reason="heartbeat stale")
        return JobStatus(state, found.get("reason", ""), found.get("model_uri", ""), found.get("metrics_uri", ""))

    def stop(self, job_name: str) -> None:
        """Ask the runner to stop (it checks at each heartbeat), wherever it runs."""
        self.s3.put_object(Bucket=self.bucket, Key=job_key(job_name, "stop"), Body=b"stop")

    def progress(self, job_name: str) -> list[str]:
        path = self.work_dir / job_name / "train.log"
        if not path.exists():
            return []
        with path.open("rb") as fh:
            fh.seek(self._log_offsets.get(job_name, 0))
            data = fh.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._log_offsets[job_name] = self._log_offsets.get(job_name, 0) + len(complete)
        return [line for line in complete.decode(errors="replace").splitlines() if line.strip()]
