"""Shared fixtures. Tiers are markers given by folder: tests/unit -> unit, tests/integration -> integration..."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

TIERS = ("unit", "contract", "integration", "e2e", "fault", "deploy")
REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One Tansu + moto for the whole session, on free loopback ports; topics, buckets, S3->SQS wired."""
    from flywheel_dev.localstack import LocalStack

    logs = tmp_path_factory.mktemp("stack-logs")
    with LocalStack(external_kafka=os.environ.get("FLYWHEEL_TEST_EXTERNAL_KAFKA"), log_dir=logs) as running:
        yield running


@pytest.fixture
def stack_env(stack: object, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this test's process (settings, boto3) at the session stack."""
    env = stack.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """An S3 client on moto in-process (no server, no endpoint), with throw-away credentials; create buckets."""
    import boto3
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1")
