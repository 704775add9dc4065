"""FlyteTaskRole, the role Flyte's task pods run as, carries the generator's task document (deploy/iam/
flywheel-flyte-tasks.json: a run's S3 keys and SageMaker job, tests/deploy/test_deploy_iam_flyte_tasks.py proves
it against the calls the workflow's tasks make), plus Flyte's own bucket, and trusts only the Flywheel project's
task pods; flyte-binary annotates each domain's task ServiceAccount with it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from infra_helpers import Synth, normalized, render

from flywheel.catalogue import Service
from flywheel_dev import iam
from flywheel_infra.cluster import FLYTE_DOMAINS

pytestmark = pytest.mark.infra

CLUSTER = "FlywheelCluster"


def task_role(synth: Synth) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, r["Properties"]) for k, r in synth.resources(CLUSTER, "AWS::IAM::Role").items()
                if k.startswith("FlyteTaskRole")]
    return found


def test_the_task_role_is_named_and_carries_the_generated_task_document(synth: Synth) -> None:
    Template.from_json(synth.templates[CLUSTER]).has_resource_properties("AWS::IAM::Role", {
        "RoleName": iam.FLYTE_TASKS_ROLE,
        "Policies": [{"PolicyName": iam.FLYTE_TASKS_ROLE, "PolicyDocument": {"Statement": Match.array_with([
            Match.object_like({"Sid": "RunTrainingJobs",
                               "Action": ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
                                          "sagemaker:AddTags"]})])}}],
    })
    _, props = task_role(synth)
    (policy,) = props["Policies"]
    docs = iam.documents(iam.deployed(required=(Service.INGEST, Service.ORCHESTRATOR, Service.MONITOR)))
    found = render(policy["PolicyDocument"], synth.names.account, synth.names.region)
    assert normalized(found) == normalized(docs[f"{iam.FLYTE_TASKS_ROLE}.json"])
    text = json.dumps(found)
    assert "sagemaker:StopTrainingJob" not in text and "kafka-cluster:" not in text and "stages.json" not in text


def test_the_task_role_keeps_flyte_s_own_bucket(synth: Synth) -> None:
    key, _ = task_role(synth)
    policies = [p["Properties"] for p in synth.resources(CLUSTER, "AWS::IAM::Policy").values()
                if {"Ref": key} in p["Properties"]["Roles"]]
    resources = json.dumps([st["Resource"] for p in policies for st in p["PolicyDocument"]["Statement"]])
    assert "FlyteBucket" in resources


def test_the_task_role_trusts_exactly_the_flywheel_project_s_task_service_accounts(synth: Synth) -> None:
    _, props = task_role(synth)
    (statement,) = props["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    (operator,) = statement["Condition"]
    assert operator == "StringEquals"
    (reference,) = statement["Condition"].values()
    claims = synth.resources(CLUSTER, "Custom::AWSCDKCfnJson")[reference["Fn::GetAtt"][0]]["Properties"]["Value"]
    value = json.loads(render(claims, "", "").replace("<Cluster9EE0221C.OpenIdConnectIssuer>", "issuer"))
    orch = iam.deployed(required=(Service.ORCHESTRATOR,))[Service.ORCHESTRATOR].settings
    assert value["issuer:sub"] == [f"system:serviceaccount:{orch.flyte_project}-{d}:default" for d in FLYTE_DOMAINS]
    assert value["issuer:sub"] == list(synth.names.flyte_tasks_subjects)
    assert value["issuer:aud"] == "sts.amazonaws.com"


def test_flyte_gives_every_domain_s_task_pods_the_task_role(synth: Synth) -> None:
    key, _ = task_role(synth)
    (chart,) = [c["Properties"] for c in synth.resources(CLUSTER, "Custom::AWSCDK-EKS-HelmChart").values()
                if c["Properties"]["Chart"] == "flyte-binary"]
    values = json.loads(render(chart["Values"], synth.names.account, synth.names.region))
    custom = values["configuration"]["inline"]["cluster_resources"]["customData"]
    assert [next(iter(d)) for d in custom] == list(FLYTE_DOMAINS)
    assert {d[0]["defaultIamRole"]["value"] for c in custom for d in c.values()} == {f"<{key}.Arn>"}
