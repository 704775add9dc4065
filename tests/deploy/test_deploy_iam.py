"""IAM policy documents in deploy/iam parse, stay least-privilege, and match the topic catalogue and IRSA."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from flywheel_dev import deploy_check

IAM = deploy_check.REPO / "deploy" / "iam"
SERVICES = ("ingest", "orchestrator", "monitor")
# The only actions AWS offers no resource scope for.
UNSCOPABLE = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["Statement"]


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


@pytest.mark.parametrize("path", sorted(IAM.glob("*.json")), ids=lambda p: p.name)
def test_policy_documents_parse_and_are_well_formed(path: Path) -> None:
    doc = load(path)
    assert doc["Version"] == "2012-10-17" and statements(doc)
    for st in statements(doc):
        assert st["Effect"] == "Allow" and as_list(st["Action"])
        assert "Resource" in st or "Principal" in st
        assert not [a for a in as_list(st["Action"]) if "*" in a], st


@pytest.mark.parametrize("path", sorted(p for p in IAM.glob("*.json") if not p.name.endswith(".trust.json")),
                         ids=lambda p: p.name)
def test_wildcard_resources_only_where_aws_allows_no_scope(path: Path) -> None:
    for st in statements(load(path)):
        if "*" in as_list(st["Resource"]):
            assert set(as_list(st["Action"])) <= UNSCOPABLE, st


def topic_names(doc: dict[str, Any], action: str) -> set[str]:
    return {r.rsplit("/", 1)[-1] for st in statements(doc) if action in as_list(st["Action"])
            for r in as_list(st["Resource"]) if ":topic/" in r}


@pytest.mark.parametrize("svc", SERVICES)
def test_msk_topic_grants_follow_the_services_topic_lists(svc: str) -> None:
    topics = importlib.import_module(f"flywheel_{svc}.topics")
    internal = f"flywheel-{svc}-*"  # Faust's own changelog and leader topics
    doc = load(IAM / f"flywheel-{svc}.json")
    assert topic_names(doc, "kafka-cluster:WriteData") == {*topics.PRODUCES, internal}
    assert topic_names(doc, "kafka-cluster:ReadData") == {*topics.CONSUMES, *topics.REPLAYS, internal}


def actions(svc: str) -> set[str]:
    return {a for st in statements(load(IAM / f"flywheel-{svc}.json")) for a in as_list(st["Action"])}


def test_each_role_has_only_its_services_aws_access() -> None:
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "s3:GetObject"} <= actions("ingest")
    assert {"sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
            "iam:PassRole", "s3:PutObject"} <= actions("orchestrator")
    assert {a.split(":")[0] for a in actions("monitor")} == {"kafka-cluster", "glue"}
    assert not {a for a in actions("ingest") | actions("monitor") if a.startswith(("sagemaker:", "iam:"))}


def test_pass_role_is_limited_to_sagemaker_and_its_execution_role() -> None:
    grant = next(st for st in statements(load(IAM / "flywheel-orchestrator.json")) if st["Action"] == ["iam:PassRole"])
    assert grant["Resource"].endswith(":role/flywheel-sagemaker-execution")
    assert grant["Condition"]["StringEquals"]["iam:PassedToService"] == "sagemaker.amazonaws.com"


@pytest.mark.parametrize("svc", SERVICES)
def test_irsa_trust_binds_the_role_to_its_service_account(svc: str) -> None:
    (st,) = statements(load(IAM / f"flywheel-{svc}.trust.json"))
    assert st["Action"] == "sts:AssumeRoleWithWebIdentity"
    subjects = {k: v for k, v in st["Condition"]["StringEquals"].items() if k.endswith(":sub")}
    assert list(subjects.values()) == [f"system:serviceaccount:flywheel:flywheel-{svc}"]
    accounts = {o["metadata"]["name"]: o["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
                for o in deploy_check.render_overlay("eks") if o["kind"] == "ServiceAccount"}
    assert accounts[f"flywheel-{svc}"].endswith(f":role/flywheel-{svc}")
