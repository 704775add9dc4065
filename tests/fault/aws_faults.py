"""A fault-injecting proxy in front of moto for the SageMaker API, and a stand-in for the training container.

moto completes every training job at once and has no failure or throttling switch, so the services talk to
this proxy instead: it forwards every request unchanged, except that it
- answers the first `throttle` CreateTrainingJob / DescribeTrainingJob calls of jobs named with a throttling
  marker with `ThrottlingException` (HTTP 400, as SageMaker does), and
- reports jobs named with a failure marker as `Failed` with a `FailureReason`, as SageMaker does when the
  algorithm exits non-zero, and
- adds the training and billable seconds SageMaker reports for a completed job (moto reports none): a spot
  job bills BILLABLE_S of its TRAINING_S.
When moto accepts a CreateTrainingJob, the proxy writes what the container would have written to the job's
output path (`output.tar.gz` with metrics.json, `model.tar.gz`), so a completed job has real outputs.
"""

from __future__ import annotations

import http.client
import io
import json
import tarfile
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAILURE_REASON = "AlgorithmError: injected by the fault proxy (exit code 1)"
TRAINING_S, BILLABLE_S = 1800, 600
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


def tar_gz(name: str, body: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


class SageMakerFaults:
    def __init__(
        self, upstream_port: int, s3: Any, fail_marker: str, throttle_marker: str, throttle: int
    ) -> None:
        self.upstream_port, self.s3 = upstream_port, s3
        self.fail_marker, self.throttle_marker, self.throttle = fail_marker, throttle_marker, throttle
        self.calls: Counter = Counter()  # (operation, job name) -> calls that reached the proxy
        self.throttled: Counter = (
            Counter()
        )  # (operation, job name) -> calls answered with ThrottlingException
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="aws-faults", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> SageMakerFaults:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        faults = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet: moto logs every request already
                pass

            def _any(self) -> None:
                body = self._body()
                target = self.headers.get("X-Amz-Target", "")
                reply = faults.intercept(target, body) if target.startswith("SageMaker.") else None
                if reply is None:
                    reply = faults.forward(self.command, self.path, dict(self.headers), body, target)
                status, headers, payload = reply
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in HOP_HEADERS and key.lower() != "content-length":
                        self.send_header(key, value)
                length = dict((k.lower(), v) for k, v in headers).get("content-length", str(len(payload)))
                self.send_header("Content-Length", length if self.command == "HEAD" else str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return out
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any  # noqa: N815

        return Handler

    def intercept(self, target: str, body: bytes) -> tuple[int, list, bytes] | None:
        operation = target.split(".", 1)[1]
        job = json.loads(body or b"{}").get("TrainingJobName", "")
        with self._lock:
            self.calls[(operation, job)] += 1
            if (
                self.throttle_marker in job
                and operation in ("CreateTrainingJob", "DescribeTrainingJob")
                and self.throttled[(operation, job)] < self.throttle
            ):
                self.throttled[(operation, job)] += 1
                error = {"__type": "ThrottlingException", "message": "Rate exceeded"}
                return 400, [("Content-Type", "application/x-amz-json-1.1")], json.dumps(error).encode()
        return None

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes, target: str
    ) -> tuple[int, list, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            clean = {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS | {"content-length"}}
            conn.request(
                method, path, body=body if body or method in ("PUT", "POST") else None, headers=clean
            )
            resp = conn.getresponse()
            status, reply_headers, payload = resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()
        if status == 200 and target == "SageMaker.CreateTrainingJob":
            self._write_container_output(json.loads(body))
        if status == 200 and target == "SageMaker.DescribeTrainingJob":
            payload = self._maybe_failed(payload)
        return status, reply_headers, payload

    def _maybe_failed(self, payload: bytes) -> bytes:
        job = json.loads(payload)
        if self.fail_marker not in job.get("TrainingJobName", ""):
            if job.get("TrainingJobStatus") != "Completed":
                return payload
            spot = job.get("EnableManagedSpotTraining", False)
            job.setdefault("TrainingTimeInSeconds", TRAINING_S)
            job.setdefault("BillableTimeInSeconds", BILLABLE_S if spot else TRAINING_S)
            return json.dumps(job).encode()
        job.update(TrainingJobStatus="Failed", SecondaryStatus="Failed", FailureReason=FAILURE_REASON)
        job.pop("ModelArtifacts", None)
        return json.dumps(job).encode()

    def _write_container_output(self, request: dict[str, Any]) -> None:
        if self.fail_marker in request["TrainingJobName"]:
            return  # a failed algorithm writes no model
        bucket, prefix = request["OutputDataConfig"]["S3OutputPath"].removeprefix("s3://").split("/", 1)
        base = f"{prefix.rstrip('/')}/{request['TrainingJobName']}/output/"
        metrics = {
            "metrics": {"accuracy": 0.9},
            "baseline_metrics": {"accuracy": 0.25},
            "reference_distribution": {},
        }
        self.s3.put_object(
            Bucket=bucket,
            Key=base + "output.tar.gz",
            Body=tar_gz("metrics.json", json.dumps(metrics).encode()),
        )
        self.s3.put_object(
            Bucket=bucket, Key=base + "model.tar.gz", Body=tar_gz("model.txt", b"container model\n")
        )


def job_names(sm: Any, where: Callable[[str], bool]) -> list[str]:
    """Every training job moto holds whose name satisfies `where` (moto accepts a duplicate name, so count)."""
    found = sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    return [j["TrainingJobName"] for j in found if where(j["TrainingJobName"])]
