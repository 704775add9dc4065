"""Every name the stacks use, from the one source the services and deploy/iam use too.

Nothing here is typed by hand: buckets, queue, Glue registry, MSK cluster, role names, namespaces and
ServiceAccounts come from the services' settings as the EKS overlay configures them
(`flywheel_dev.iam.deployed`), and each role's policy document is the one `flywheel_dev.iam` writes to
deploy/iam/. The overlay is written for one example account and region; the stacks are
environment-agnostic, so that account and region become CloudFormation's `AWS::AccountId` and
`AWS::Region` wherever they appear (a bucket `flywheel-data-111122223333` becomes
`flywheel-data-${AWS::AccountId}`). Image repositories are skaffold's artifacts plus one per service.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from aws_cdk import Aws

from flywheel.catalogue import Service
from flywheel.topicreader import GROUP_PREFIX
from flywheel_dev import iam

REPO_ROOT = Path(__file__).resolve().parents[2]
# The services that always get an IRSA role. Should the generator not (yet) write a service's documents,
# its role carries the catalogue's Kafka grants and the Glue registry only.
IRSA_SERVICES: tuple[str, ...] = (Service.INGEST, Service.ORCHESTRATOR, Service.MONITOR, Service.SERVING)
REQUIRED_SERVICES: tuple[str, ...] = (Service.INGEST, Service.ORCHESTRATOR, Service.MONITOR)


@dataclass(frozen=True)
class ServiceRole:
    """One IRSA role: the ServiceAccount it trusts and the policy document it carries."""

    service: str
    role_name: str
    namespace: str
    service_account: str
    policy: dict[str, Any]  # deploy-time: account and region are CloudFormation pseudo parameters
    source_policy: dict[str, Any]  # as the generator wrote it, for the overlay's example account
    # False when the generator has no document for the service yet (the fallback grants are used).
    generated: bool = True


@dataclass(frozen=True)
class Names:
    account: str  # the overlay's example account and region, replaced by the deploy-time values
    region: str
    msk_cluster: str
    data_bucket: str
    artifact_bucket: str
    notification_queue: str
    dataset_prefixes: tuple[str, ...]
    glue_registry: str
    namespace: str
    sagemaker_role_name: str
    sagemaker_policy: dict[str, Any]
    sagemaker_source_policy: dict[str, Any]
    sagemaker_trust: dict[str, Any]
    training_repository: str
    repositories: tuple[str, ...]
    # The overlay's example VpcConfig ids: the execution role's ENI grant names them; the stacks put the real
    # subnets and the training security group in their place.
    sagemaker_subnets: tuple[str, ...] = ()
    sagemaker_security_groups: tuple[str, ...] = ()
    roles: tuple[ServiceRole, ...] = field(default_factory=tuple)
    # Flyte's task pods (FlyteTaskRole): the generator's document, and the ServiceAccounts of the Flyte
    # project's domain namespaces it trusts (deploy/iam/flywheel-flyte-tasks*).
    flyte_tasks_role_name: str = iam.FLYTE_TASKS_ROLE
    flyte_tasks_policy: dict[str, Any] = field(default_factory=dict)
    flyte_tasks_source_policy: dict[str, Any] = field(default_factory=dict)
    flyte_tasks_subjects: tuple[str, ...] = ()

    def role(self, service: str) -> ServiceRole:
        (found,) = [r for r in self.roles if r.service == service]
        return found


def deployable(value: Any, account: str, region: str) -> Any:
    """`value` (a name or a JSON document) with the overlay's account and region made deploy-time tokens."""
    text = json.dumps(value).replace(account, Aws.ACCOUNT_ID).replace(region, Aws.REGION)
    return json.loads(text)


def skaffold_images(path: Path | None = None) -> tuple[str, ...]:
    config = yaml.safe_load((path or REPO_ROOT / "skaffold.yaml").read_text())
    return tuple(a["image"] for a in config["build"]["artifacts"])


@cache
def names() -> Names:
    services = iam.deployed(required=REQUIRED_SERVICES)
    docs = iam.documents(services)
    place = iam.Place.of(services)
    ingest = services[Service.INGEST].settings
    orch = services[Service.ORCHESTRATOR].settings
    namespace = services[Service.INGEST].namespace

    def deploy(value: Any) -> Any:
        return deployable(value, place.account, place.region)

    # One IRSA role per web-identity trust the generator writes (each service, the topics Job, ...), for
    # the ServiceAccount that trust names; then any service in IRSA_SERVICES it has no document for yet.
    roles = []
    for file, trust in sorted(docs.items()):
        (statement,) = trust["Statement"] if file.endswith(".trust.json") else [{}]
        if statement.get("Action") != "sts:AssumeRoleWithWebIdentity":
            continue
        role_name = file.removesuffix(".trust.json")
        if role_name == iam.FLYTE_TASKS_ROLE:  # the Flyte stack's task role, trusted by several namespaces
            continue
        subject = next(v for k, v in statement["Condition"]["StringEquals"].items() if k.endswith(":sub"))
        _, _, ns, account = subject.split(":")  # system:serviceaccount:<namespace>:<name>
        policy = docs[f"{role_name}.json"]
        roles.append(ServiceRole(role_name.removeprefix(GROUP_PREFIX), role_name, ns, account, deploy(policy), policy))
    for service in IRSA_SERVICES:
        if any(r.service == service for r in roles):
            continue
        d = services.get(service)
        role_name = d.role if d else f"{GROUP_PREFIX}{service}"
        # Not generated yet: what the catalogue says it produces and consumes, and the schema registry.
        policy = {"Version": "2012-10-17",
                  "Statement": [*iam.kafka_statements(place, service), iam.glue_statement(place, orch)]}
        roles.append(ServiceRole(service, role_name, d.namespace if d else namespace,
                                 d.service_account if d else role_name, deploy(policy), policy, generated=False))

    execution_role = orch.sagemaker_role_arn.rsplit("/", 1)[-1]
    tasks = iam.flyte_tasks(services[Service.ORCHESTRATOR])
    training_repo = orch.sagemaker_image_uri.partition("/")[2].split("@")[0].rsplit(":", 1)[0]
    repositories = {*skaffold_images(), *(f"{GROUP_PREFIX}{s}" for s in IRSA_SERVICES), training_repo}
    queue_url = ingest.notification_queue_url or ""
    return Names(
        account=place.account,
        region=place.region,
        msk_cluster=place.cluster,
        data_bucket=deploy(ingest.data_bucket),
        artifact_bucket=deploy(orch.artifact_bucket),
        notification_queue=queue_url.rstrip("/").rsplit("/", 1)[-1] or f"{GROUP_PREFIX}s3-events",
        dataset_prefixes=tuple(ingest.dataset_prefixes),
        glue_registry=orch.glue_registry_name,
        namespace=namespace,
        sagemaker_role_name=execution_role,
        sagemaker_policy=deploy(docs[f"{execution_role}.json"]),
        sagemaker_source_policy=docs[f"{execution_role}.json"],
        sagemaker_trust=deploy(docs[f"{execution_role}.trust.json"]),
        training_repository=training_repo,
        repositories=tuple(sorted(repositories)),
        sagemaker_subnets=tuple(orch.sagemaker_subnets),
        sagemaker_security_groups=tuple(orch.sagemaker_security_group_ids),
        roles=tuple(roles),
        flyte_tasks_policy=deploy(docs[f"{iam.FLYTE_TASKS_ROLE}.json"]),
        flyte_tasks_source_policy=docs[f"{iam.FLYTE_TASKS_ROLE}.json"],
        flyte_tasks_subjects=tasks.subjects,
    )
