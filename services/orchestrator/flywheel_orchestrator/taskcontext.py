"""What the workflow's tasks use: an S3 client, a launcher and the output bucket.

In-process (the embedded default) the service binds the adapters it built; on a Flyte cluster a task
pod builds them from its own FLYWHEEL_* environment, the one config source.
"""

from __future__ import annotations

import json
import tarfile
import threading
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from flywheel_orchestrator.launchers.base import Launcher


@dataclass
class Runtime:
    s3: Any
    launcher: Launcher
    artifact_bucket: str
    poll_s: float = 0.5
    max_poll_s: float = 30.0
    log_lines: dict[str, Any] = field(default_factory=dict)  # run_id -> callable(line), for service logs
    stopping: threading.Event = field(default_factory=threading.Event)  # set at shutdown: waits return


_bound: Runtime | None = None


def bind(runtime: Runtime) -> None:
    global _bound
    _bound = runtime


def current() -> Runtime:
    if _bound is None:
        from flywheel_orchestrator.wiring import runtime_from_env  # a Flyte task pod: build from env

        bind(runtime_from_env())
    return _bound


def split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def read_json_uri(s3: Any, uri: str) -> dict[str, Any]:
    """A JSON object at an s3:// URI, or metrics.json inside a tar.gz (SageMaker's output.tar.gz)."""
    bucket, key = split_uri(uri)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if not key.endswith(".tar.gz"):
        return json.loads(body)
    with tarfile.open(fileobj=BytesIO(body), mode="r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("metrics.json"))
        return json.loads(tar.extractfile(member).read())
