"""The topics Job (k8s/base/topics.yaml): renders in both overlays, runs `flywheel topics apply` for its
environment with the services' common settings, fails at once on a refusal, and its IAM role may provision
every catalogue topic and nothing more. (Schemas and hardening policy: test_deploy_render.py, every object.)"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest

from flywheel import cli
from flywheel.catalogue import TOPICS, durability
from flywheel.settings import FlywheelSettings
from flywheel_dev import deploy_check, iam

IAM = deploy_check.REPO / "deploy" / "iam"
ENVIRONMENT = {"local": "local", "eks": "msk"}
CLUSTER_UUID = "5a8f1c2e-0b7d-4c3a-9e61-2f4d8c7b1a90-2"


def job(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == "Job" and o["metadata"]["name"] == iam.TOPICS_JOB]
    return found


@pytest.fixture(scope="module", params=deploy_check.OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, deploy_check.render_overlay(request.param)


def test_the_job_runs_topics_apply_for_its_environment(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    spec = job(objects)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    argv = [*container["command"], *container["args"]]
    assert argv == ["flywheel", "topics", "apply", "--environment", ENVIRONMENT[name]]
    args = cli.parser().parse_args(argv[1:])
    assert args.func is cli.cmd_topics_apply and not args.dry_run
    assert container["image"] in deploy_check.skaffold_images()
    assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == iam.TOPICS_JOB


def test_eks_provisions_three_replicas_and_two_in_sync() -> None:
    assert (durability(ENVIRONMENT["eks"]).replication_factor, durability(ENVIRONMENT["eks"]).min_insync_replicas) \
        == (3, 2)
    assert all(t.configs("msk")["min.insync.replicas"] == "2" for t in TOPICS)


def test_the_job_s_settings_load_from_the_rendered_config(overlay: tuple[str, list[dict[str, Any]]],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    name, objects = overlay
    maps = {o["metadata"]["name"]: o.get("data") or {} for o in objects if o["kind"] == "ConfigMap"}
    (container,) = job(objects)["spec"]["template"]["spec"]["containers"]
    for key in [k for k in __import__("os").environ if k.startswith("FLYWHEEL_")]:
        monkeypatch.delenv(key)
    for ref in container["envFrom"]:
        for key, value in maps[ref["configMapRef"]["name"]].items():
            monkeypatch.setenv(key, value)
    settings = FlywheelSettings()
    assert settings.profile.value == name
    if name == "eks":  # MSK IAM over TLS: the same auth as the services (flywheel/msk.py)
        assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "OAUTHBEARER")


def test_a_refusal_fails_the_job_at_once_and_other_failures_retry() -> None:
    spec = job(deploy_check.render_overlay("eks"))["spec"]
    (rule,) = spec["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [cli.EXIT_REFUSED]
    assert rule["onExitCodes"]["containerName"] == "topics" and spec["backoffLimit"] > 0
    assert spec["ttlSecondsAfterFinished"] > 0  # a finished Job goes, so the next deploy can create it anew


def test_the_job_has_its_own_irsa_role_in_eks() -> None:
    accounts = {o["metadata"]["name"]: o for o in deploy_check.render_overlay("eks") if o["kind"] == "ServiceAccount"}
    role = accounts[iam.TOPICS_JOB]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.endswith(f":role/{iam.TOPICS_JOB}")
    trust = json.loads((IAM / f"{iam.TOPICS_JOB}.trust.json").read_text())["Statement"][0]
    subjects = [v for k, v in trust["Condition"]["StringEquals"].items() if k.endswith(":sub")]
    assert subjects == [f"system:serviceaccount:flywheel:{iam.TOPICS_JOB}"]


def allowed(doc: dict[str, Any], action: str, resource: str) -> bool:
    return any(action in st["Action"] and any(fnmatchcase(resource, r) for r in
                                              ([st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]))
               for st in doc["Statement"])


def test_the_job_may_provision_every_catalogue_topic_and_touch_no_record() -> None:
    doc = json.loads((IAM / f"{iam.TOPICS_JOB}.json").read_text())
    place = iam.Place.of(iam.deployed(required=("ingest", "orchestrator", "monitor")))
    cluster = f"arn:aws:kafka:{place.region}:{place.account}:cluster/{place.cluster}/{CLUSTER_UUID}"
    assert allowed(doc, "kafka-cluster:Connect", cluster)
    for t in TOPICS:  # what `topics apply` sends: Metadata, CreateTopics, DescribeConfigs, IncrementalAlterConfigs
        arn = f"arn:aws:kafka:{place.region}:{place.account}:topic/{place.cluster}/{CLUSTER_UUID}/{t.name}"
        for action in iam.KAFKA_TOPIC_PROVISIONING:
            assert allowed(doc, action, arn), (action, t.name)
        assert not allowed(doc, "kafka-cluster:ReadData", arn) and not allowed(doc, "kafka-cluster:WriteData", arn)
    other = f"arn:aws:kafka:{place.region}:{place.account}:topic/{place.cluster}/{CLUSTER_UUID}/not.in-catalogue"
    assert not allowed(doc, "kafka-cluster:CreateTopic", other)
    assert not any(a.startswith(("kafka-cluster:DeleteTopic", "kafka-cluster:AlterGroup")) for st in doc["Statement"]
                   for a in st["Action"])
