"""The IAM documents in deploy/iam, generated from one source.

    python -m flywheel_dev.iam write deploy/iam     # rewrite the documents
    python -m flywheel_dev.iam check deploy/iam     # exit 1 when a committed document drifted

What each role may touch comes from what the code defines, never from a second hand-written list:
- the topics from the catalogue (produced_by / consumed_by / replayed_by), the Faust app's internal topics
  and group (`flywheel-<service>`, `flywheel-<service>-*`) and the start-up readers' groups
  (`flywheel.topicreader.group_id`: readers are named `<service>-<purpose>`);
- buckets, prefixes, the queue, the Glue registry, the SageMaker execution role and the training image
  from each service's settings as the EKS overlay configures them (its ConfigMaps, rendered with kustomize,
  over the settings' defaults);
- run and job names from the orchestrator's ids (`RUN_ID_PREFIX`, `output_prefix`), dataset, manifest and
  state keys from ingest's settings (its prefixes) and ids;
- Flyte's task pods (engine flyte-remote): the settings registration sets on the tasks
  (`flyteregistry.task_environment` of the orchestrator's ConfigMap) and the training grants the orchestrator
  has for the same calls, in the `<project>-<domain>` namespaces of the orchestrator's Flyte project.

The account, region and MSK cluster come from the overlay too (the execution role ARN, FLYWHEEL_AWS_REGION,
the MSK bootstrap host); the EKS OIDC provider id is a placeholder to replace with the cluster's.
tests/deploy/test_deploy_iam_names.py checks the documents against the names the code really generates.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic_settings import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from flywheel.catalogue import RUNNING_SERVICES, TOPICS, Service, consumed_by, produced_by, replayed_by
from flywheel.lifecycle import STAGES_KEY
from flywheel.settings import FlywheelSettings
from flywheel.topicreader import GROUP_PREFIX
from flywheel_dev import deploy_check
from flywheel_ingest.settings import IngestSettings
from flywheel_monitor.settings import MonitorSettings
from flywheel_monitor.statestore import STATE_PREFIX as MONITOR_STATE_PREFIX
from flywheel_orchestrator import trainingset
from flywheel_orchestrator.flyteregistry import task_environment
from flywheel_orchestrator.ids import RUN_ID_PREFIX, output_prefix
from flywheel_orchestrator.settings import LauncherKind, OrchestratorSettings
from flywheel_orchestrator.statestore import PREFIX as ORCHESTRATOR_STATE_PREFIX
from flywheel_serving.settings import ServingSettings

OVERLAY = "eks"
# Replace with your cluster's OIDC provider id (aws eks describe-cluster ... identity.oidc.issuer).
OIDC_ID = "EXAMPLED539D4633E53DE1B71EXAMPLE"
SETTINGS: dict[str, type[FlywheelSettings]] = {
    Service.INGEST: IngestSettings, Service.ORCHESTRATOR: OrchestratorSettings, Service.MONITOR: MonitorSettings,
    Service.SERVING: ServingSettings}

# Key layout under a run's prefix (ids.output_prefix): what the orchestrator and SageMaker write there.
RUN_INPUT = "input/"  # the pinned train channel: object copies and the SageMaker manifest file (launcher)
RUN_REGISTRATION = "registration.json"  # the registered version's record (workflow.register)
RUN_TRAINING_MANIFEST = trainingset.NAME  # the run's composed training set (workflow.prepare), written once
RUN_OUTPUT = "output/"  # SageMaker's own layout: <S3OutputPath><job name>/output/model.tar.gz, output.tar.gz
# The only objects SageMaker uploads there (OutputDataConfig's default GZIP compression; the launcher turns the
# profiler off, so no profiler-output/ or rule-output/ beside them): the execution role writes these names only.
RUN_OUTPUT_FILES = ("model.tar.gz", "output.tar.gz")
RUN_CHECKPOINTS = "checkpoints/"  # spot checkpoints (launcher's CheckpointConfig)

KAFKA_TOPIC_ADMIN = ["kafka-cluster:CreateTopic", "kafka-cluster:DescribeTopic",
                     "kafka-cluster:DescribeTopicDynamicConfiguration"]
# The topics Job (`flywheel topics apply`, k8s/base/topics.yaml): create and configure topics, never read or
# write their records. AlterTopic is CreatePartitions' grant; apply never adds partitions (it refuses).
TOPICS_JOB = "flywheel-topics"
KAFKA_TOPIC_PROVISIONING = ["kafka-cluster:CreateTopic", "kafka-cluster:DescribeTopic", "kafka-cluster:AlterTopic",
                            "kafka-cluster:DescribeTopicDynamicConfiguration",
                            "kafka-cluster:AlterTopicDynamicConfiguration"]
# Flyte's task pods (docs/decisions/0014-flyte-remote.md) run the workflow's tasks (prepare, train, evaluate,
# register) as the ServiceAccount of the <project>-<domain> namespace Flyte creates, in each domain the
# flyte-binary chart configures (infra's cluster stack annotates each domain's account with this role).
FLYTE_TASKS_ROLE = "flywheel-flyte-tasks"
FLYTE_DOMAINS = ("development", "staging", "production")
FLYTE_DEFAULT_SERVICE_ACCOUNT = "default"
GLUE_ACTIONS = ["glue:GetRegistry", "glue:CreateRegistry", "glue:GetSchema", "glue:CreateSchema",
                "glue:GetSchemaByDefinition", "glue:GetSchemaVersion", "glue:RegisterSchemaVersion"]


@dataclass(frozen=True)
class Deployed:
    """One service as the overlay runs it: its settings, and the ServiceAccount its pods run as."""

    service: str
    settings: Any
    namespace: str
    service_account: str
    environment: Mapping[str, str] = field(default_factory=dict, compare=False)  # its ConfigMaps' FLYWHEEL_*

    @property
    def role(self) -> str:
        return self.service_account  # one IAM role per ServiceAccount, named alike (irsa.yaml)


def _from_environment(cls: type[FlywheelSettings], environment: dict[str, str]) -> FlywheelSettings:
    """The settings a pod with `environment` reads (decoded as from its env: JSON lists and dicts too), and
    nothing else (no FLYWHEEL_* of the shell running the tool)."""

    class Given(EnvSettingsSource):
        def _load_env_vars(self) -> Mapping[str, str | None]:
            return parse_env_vars(environment, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)

    class FromOverlay(cls):  # type: ignore[valid-type, misc]
        @classmethod
        def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, **rest: Any) -> tuple[Any, ...]:
            return (Given(settings_cls),)

    return FromOverlay()


def deployed(objects: list[dict[str, Any]] | None = None,
             required: tuple[str, ...] = RUNNING_SERVICES) -> dict[str, Deployed]:
    """Each running service's settings from the overlay's rendered ConfigMaps (over the defaults).

    Raises when a service in `required` has no Deployment there; the CDK app (infra/) asks only for the
    services whose roles it cannot build without their settings.
    """
    objects = deploy_check.render_overlay(OVERLAY) if objects is None else objects
    maps = {o["metadata"]["name"]: o.get("data") or {} for o in objects if o["kind"] == "ConfigMap"}
    found = {}
    for o in objects:
        name = o["metadata"]["name"]
        service = name.removeprefix(GROUP_PREFIX)
        if o["kind"] != "Deployment" or service not in RUNNING_SERVICES:
            continue
        pod = o["spec"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == service] or pod["containers"][:1]
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env |= maps[source["configMapRef"]["name"]]
        env |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        found[service] = Deployed(service, _from_environment(SETTINGS[service], env), o["metadata"]["namespace"],
                                  pod["serviceAccountName"], env)
    missing = set(required) - set(found)
    if missing:
        raise ValueError(f"the {OVERLAY} overlay runs no Deployment for {sorted(missing)}")
    return found


@dataclass(frozen=True)
class Place:
    """Account, region and MSK cluster the overlay points at."""

    account: str
    region: str
    cluster: str

    @classmethod
    def of(cls, services: dict[str, Deployed]) -> Place:
        orch = services[Service.ORCHESTRATOR].settings
        account = orch.sagemaker_role_arn.split(":")[4]
        host = orch.kafka_bootstrap.split(",")[0]
        # MSK broker hosts are b-<n>.<cluster name>.<id>.c<n>.kafka.<region>.amazonaws.com
        cluster = host.split(".")[1] if ".kafka." in host else "*"
        return cls(account, orch.aws_region, cluster)

    def kafka(self, kind: str, name: str) -> str:
        return f"arn:aws:kafka:{self.region}:{self.account}:{kind}/{self.cluster}/*/{name}"

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"


# EC2's Describe calls take no resource-level permissions; SageMaker makes them for a job with a VpcConfig.
EC2_DESCRIBE = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeSubnets",
                "ec2:DescribeSecurityGroups", "ec2:DescribeDhcpOptions"]


def s3(bucket: str, key: str | None = None) -> str:
    return f"arn:aws:s3:::{bucket}" + ("" if key is None else f"/{key}")


def statement(sid: str, actions: list[str], resources: list[str], **extra: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions,
            "Resource": resources[0] if len(resources) == 1 else resources, **extra}


def faust_app_id(service: str) -> str:
    return f"{GROUP_PREFIX}{service}"  # flywheel.faust_app.make_app names its app (and group) so


def run_prefix_pattern() -> str:
    """Every run's key prefix in the artifact bucket: models/*/fw-*/."""
    return output_prefix("*", f"{RUN_ID_PREFIX}*")


def kafka_statements(place: Place, service: str) -> list[dict[str, Any]]:
    internal = place.kafka("topic", f"{faust_app_id(service)}-*")  # Faust's changelog/leader topics
    produced = [place.kafka("topic", t) for t in sorted(produced_by(service))]
    read = [place.kafka("topic", t) for t in sorted({*consumed_by(service), *replayed_by(service)})]
    groups = [place.kafka("group", faust_app_id(service)),  # the Faust app's group
              place.kafka("group", f"{faust_app_id(service)}-*")]  # its readers: topicreader.group_id
    return [
        statement("ConnectToMsk", ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"],
                  [place.kafka("cluster", "").rstrip("/")]),
        statement("DeclareAndDescribeItsTopics", KAFKA_TOPIC_ADMIN, sorted({*produced, *read}) + [internal]),
        statement("WriteProducedTopics", ["kafka-cluster:WriteData"], [*produced, internal]),
        statement("ReadConsumedAndReplayedTopics", ["kafka-cluster:ReadData"], [*read, internal]),
        statement("UseOwnConsumerGroups", ["kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"], groups),
    ]


def glue_statement(place: Place, settings: FlywheelSettings) -> dict[str, Any]:
    name = settings.glue_registry_name
    return statement("GlueSchemaRegistry", GLUE_ACTIONS,
                     [place.arn("glue", f"registry/{name}"), place.arn("glue", f"schema/{name}/*")])


def ingest_policy(place: Place, s: IngestSettings) -> dict[str, Any]:
    own = [s.manifest_prefix, s.state_prefix]
    queue = (s.notification_queue_url or "").rstrip("/").rsplit("/", 2)
    sts = [
        statement("ListDataBucket", ["s3:ListBucket"], [s3(s.data_bucket)]),
        statement("ReadDatasetsManifestsAndState", ["s3:GetObject"],
                  [s3(s.data_bucket, f"{p}*") for p in [*s.dataset_prefixes, *own]]),
        statement("WriteManifestsAndState", ["s3:PutObject"], [s3(s.data_bucket, f"{p}*") for p in own]),
    ]
    if s.notification_queue_url:  # https://sqs.<region>.amazonaws.com/<account>/<queue>
        sts.append(statement("ConsumeS3Notifications",
                             ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                              "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
                             [f"arn:aws:sqs:{place.region}:{queue[1]}:{queue[2]}"]))
    return {"Version": "2012-10-17", "Statement": [*kafka_statements(place, Service.INGEST), *sts,
                                                    glue_statement(place, s)]}


def run_data_statements(s: OrchestratorSettings, ingest: IngestSettings) -> list[dict[str, Any]]:
    """S3 of a training run, as the workflow's tasks use it (workflow.py, the launcher's channel pinning):
    the manifests and the pinned dataset objects, the run's own keys under models/<model>/fw-<run>/."""
    run = run_prefix_pattern()
    return [
        statement("ListBuckets", ["s3:ListBucket"], [s3(s.data_bucket), s3(s.artifact_bucket)]),
        # Manifests, and the pinned dataset objects it copies into a run's channel (by ETag and version).
        statement("ReadManifestsAndDatasets", ["s3:GetObject", "s3:GetObjectVersion"],
                  [s3(s.data_bucket, f"{p}*") for p in [ingest.manifest_prefix, *ingest.dataset_prefixes]]),
        statement("ReadRunArtifacts", ["s3:GetObject"], [s3(s.artifact_bucket, f"{run}*")]),
        statement("WriteRunInputsAndRegistrations", ["s3:PutObject"],
                  [s3(s.artifact_bucket, f"{run}{RUN_INPUT}*"), s3(s.artifact_bucket, f"{run}{RUN_TRAINING_MANIFEST}"),
                   s3(s.artifact_bucket, f"{run}{RUN_REGISTRATION}")]),
        statement("DropAChangedChannelCopy", ["s3:DeleteObject"], [s3(s.artifact_bucket, f"{run}{RUN_INPUT}*")]),
    ]


def training_job_statements(place: Place, s: OrchestratorSettings, *, stop: bool = True) -> list[dict[str, Any]]:
    """SageMaker jobs named like a run, started as the execution role; `stop`: the supersede's StopTrainingJob
    (the orchestrator's; the train task only starts and watches its job)."""
    if s.launcher is not LauncherKind.SAGEMAKER:
        return []
    jobs = ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
            *(["sagemaker:StopTrainingJob"] if stop else []), "sagemaker:AddTags"]
    return [
        statement("RunTrainingJobs", jobs, [place.arn("sagemaker", f"training-job/{RUN_ID_PREFIX}*")]),
        statement("PassTheSageMakerExecutionRole", ["iam:PassRole"], [s.sagemaker_role_arn],
                  Condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
    ]


def orchestrator_policy(place: Place, s: OrchestratorSettings, ingest: IngestSettings) -> dict[str, Any]:
    sts = [
        *run_data_statements(s, ingest),
        # The model lifecycle's one document per model (flywheel.lifecycle): stages, production, history.
        statement("ReadAndWriteModelStages", ["s3:GetObject", "s3:PutObject"],
                  [s3(s.artifact_bucket, STAGES_KEY.format(model_id="*"))]),
        # Per-model run state and run-id claims (flywheel_orchestrator.statestore; docs/decisions/0009).
        statement("ReadAndWriteRunState", ["s3:GetObject", "s3:PutObject"],
                  [s3(s.artifact_bucket, f"{ORCHESTRATOR_STATE_PREFIX}*")]),
        *training_job_statements(place, s),
    ]
    return {"Version": "2012-10-17", "Statement": [*kafka_statements(place, Service.ORCHESTRATOR), *sts,
                                                    glue_statement(place, s)]}


@dataclass(frozen=True)
class FlyteTasks:
    """Flyte's task pods as the overlay registers them: the settings each task gets (the orchestrator's
    ConfigMap less the service-only settings, flyteregistry.task_environment) and the IRSA subjects they run
    as (the ServiceAccount of each domain's namespace of the orchestrator's Flyte project)."""

    settings: OrchestratorSettings
    subjects: tuple[str, ...]


def flyte_tasks(orch: Deployed) -> FlyteTasks:
    settings = _from_environment(OrchestratorSettings, task_environment(orch.environment))
    account = orch.settings.flyte_service_account or FLYTE_DEFAULT_SERVICE_ACCOUNT
    return FlyteTasks(settings, tuple(f"system:serviceaccount:{orch.settings.flyte_project}-{domain}:{account}"
                                      for domain in FLYTE_DOMAINS))


def flyte_tasks_policy(place: Place, s: OrchestratorSettings, ingest: IngestSettings) -> dict[str, Any]:
    """What the training workflow's tasks call in a Flyte pod, with the orchestrator's grants for the same
    calls: prepare reads the manifests and writes the run's training manifest (once), train pins the channel
    (copies the pinned objects by version into the run's input/, drops a changed copy) and creates and
    describes the run's job, evaluate reads its metrics, register writes registration.json. Nothing else:
    no Kafka, no schema registry, no stage store, no orchestrator state, no dataset write, no StopTrainingJob.

    No kms: grant: the buckets are SSE-KMS with the account's aws/s3 key, which any principal of the account
    may use through S3; the job's volume and output keys are used by the execution role. Flyte's own bucket
    (inputs, outputs, offloaded data) is granted beside this document where the bucket is made (infra/).
    """
    return {"Version": "2012-10-17",
            "Statement": [*run_data_statements(s, ingest), *training_job_statements(place, s, stop=False)]}


def monitor_policy(place: Place, s: MonitorSettings) -> dict[str, Any]:
    """With durable rule state on (flywheel_monitor.statestore), read and conditionally write one document per
    model under monitor/models/ of the artifact bucket, and list that prefix only (a missing document must
    read as 404, not 403: a new model has none yet). Nothing else of any bucket."""
    sts = []
    if s.rule_state_in_s3:
        prefix = MONITOR_STATE_PREFIX
        sts = [
            statement("ListRuleStatePrefix", ["s3:ListBucket"], [s3(s.artifact_bucket)],
                      Condition={"StringLike": {"s3:prefix": [f"{prefix}*"]}}),
            statement("ReadWriteRuleState", ["s3:GetObject", "s3:PutObject"], [s3(s.artifact_bucket, f"{prefix}*")]),
        ]
    return {"Version": "2012-10-17", "Statement": [*kafka_statements(place, Service.MONITOR), *sts,
                                                    glue_statement(place, s)]}


def serving_policy(place: Place, s: ServingSettings) -> dict[str, Any]:
    """Read model artifacts and stage documents (models/<id>/...), list which models have one; with harvesting
    on, create feedback dataset versions (<dataset prefix><model>/feedback-*/, flywheel_serving.harvest) in the
    data bucket: PutObject there only, never a read, a delete or another dataset prefix."""
    sts = [
        statement("ListModelsInArtifactBucket", ["s3:ListBucket"], [s3(s.artifact_bucket)],
                  Condition={"StringLike": {"s3:prefix": ["models/*", "models/"]}}),
        statement("ReadModelArtifactsAndStages", ["s3:GetObject"], [s3(s.artifact_bucket, "models/*")]),
    ]
    if s.harvest_enabled:
        sts.append(statement("WriteFeedbackVersions", ["s3:PutObject"],
                             [s3(s.data_bucket, f"{s.dataset_prefix}*/feedback-*")]))
    return {"Version": "2012-10-17", "Statement": [*kafka_statements(place, Service.SERVING), *sts,
                                                    glue_statement(place, s)]}


def topics_job(objects: list[dict[str, Any]] | None = None) -> Deployed:
    """The topics Job as the overlay runs it: its namespace and ServiceAccount (no service settings)."""
    objects = deploy_check.render_overlay(OVERLAY) if objects is None else objects
    jobs = [o for o in objects if o["kind"] == "Job" and o["metadata"]["name"] == TOPICS_JOB]
    if not jobs:
        raise ValueError(f"the {OVERLAY} overlay runs no Job {TOPICS_JOB}")
    pod = jobs[0]["spec"]["template"]["spec"]
    return Deployed("topics", None, jobs[0]["metadata"]["namespace"], pod["serviceAccountName"])


def topics_policy(place: Place) -> dict[str, Any]:
    """`flywheel topics apply --environment msk`: every catalogue topic, created and configured; no records."""
    return {"Version": "2012-10-17", "Statement": [
        statement("ConnectToMsk", ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"],
                  [place.kafka("cluster", "").rstrip("/")]),
        statement("ProvisionCatalogueTopics", KAFKA_TOPIC_PROVISIONING,
                  sorted(place.kafka("topic", t.name) for t in TOPICS)),
    ]}


def sagemaker_execution_policy(place: Place, s: OrchestratorSettings) -> dict[str, Any]:
    """The role training jobs run as: read its channel, write its outputs, under run-shaped prefixes only.

    One role serves every run, and SageMaker gives the job's session nothing run-specific to scope by, so
    the grants are per key shape (models/<model>/fw-<run>/output/model.tar.gz, ...), not per run: no job can
    write a channel (input/), a registration, the stage store, the orchestrator's state, the data bucket or
    any key but a run's two output archives and its checkpoints (docs/decisions/0011 says what remains).
    """
    run = run_prefix_pattern()
    # Its channel, its checkpoints, and the champion's model.tar.gz (the `champion` channel: the promotion
    # gate judges both versions on the same held-out rows in the same job).
    reads = [s3(s.artifact_bucket, f"{run}{RUN_INPUT}*"), s3(s.artifact_bucket, f"{run}{RUN_CHECKPOINTS}*"),
             s3(s.artifact_bucket, f"{run}*model.tar.gz")]
    if s.sagemaker_source_uri:  # script mode: the source bundle
        reads.append(s3(*s.sagemaker_source_uri.removeprefix("s3://").split("/", 1)))
    sts = [
        statement("ListArtifactBucket", ["s3:ListBucket"], [s3(s.artifact_bucket)]),
        statement("ReadItsChannelAndCheckpoints", ["s3:GetObject"], reads),
        statement("WriteItsOutputAndCheckpoints", ["s3:PutObject"],
                  [*(s3(s.artifact_bucket, f"{run}{RUN_OUTPUT}{f}") for f in RUN_OUTPUT_FILES),
                   s3(s.artifact_bucket, f"{run}{RUN_CHECKPOINTS}*")]),
    ]
    repositories = []
    for image in (s.sagemaker_image_uri, s.sagemaker_gpu_image_uri):  # the CPU and the CUDA training image
        if ".dkr.ecr." in image:  # <account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>
            host, _, path = image.partition("/")
            repository = path.split("@")[0].rsplit(":", 1)[0]
            repositories.append(f"arn:aws:ecr:{host.split('.')[3]}:{host.split('.')[0]}:repository/{repository}")
    if repositories:
        sts.append(statement("PullTrainingImages", ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                                                    "ecr:BatchCheckLayerAvailability"], sorted(set(repositories))))
    if s.sagemaker_subnets:  # VpcConfig: SageMaker attaches the job's network interfaces as this role
        sts += [
            statement("JobNetworkInterfacesInItsSubnets", ["ec2:CreateNetworkInterface"],
                      [place.arn("ec2", f"subnet/{subnet}") for subnet in s.sagemaker_subnets]
                      + [place.arn("ec2", f"security-group/{g}") for g in s.sagemaker_security_group_ids]
                      + [place.arn("ec2", "network-interface/*")]),
            statement("ManageJobNetworkInterfaces", ["ec2:CreateNetworkInterfacePermission",
                                                     "ec2:DeleteNetworkInterface",
                                                     "ec2:DeleteNetworkInterfacePermission"],
                      [place.arn("ec2", "network-interface/*")]),
            statement("Ec2DescribeHasNoResourceScope", EC2_DESCRIBE, ["*"]),
        ]
    keys = sorted({k for k in (s.sagemaker_volume_kms_key_id, s.sagemaker_output_kms_key_id) if k})
    if keys:  # key ids or ARNs, as the job request names them
        sts.append(statement("EncryptWithTheJobKeys", ["kms:CreateGrant", "kms:Decrypt", "kms:GenerateDataKey"],
                             [k if k.startswith("arn:") else place.arn("kms", f"key/{k}") for k in keys]))
    sts += [
        statement("EcrLoginHasNoResourceScope", ["ecr:GetAuthorizationToken"], ["*"]),
        statement("TrainingLogs", ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                                   "logs:DescribeLogStreams"],
                  [place.arn("logs", "log-group:/aws/sagemaker/TrainingJobs*")]),
        statement("TrainingMetricsHaveNoResourceScope", ["cloudwatch:PutMetricData"], ["*"],
                  Condition={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs*"}}),
    ]
    return {"Version": "2012-10-17", "Statement": sts}


def web_identity_trust(place: Place, subject: str | list[str]) -> dict[str, Any]:
    """IRSA trust: the cluster's OIDC provider, for the ServiceAccount subject(s) given (any one of a list)."""
    issuer = f"oidc.eks.{place.region}.amazonaws.com/id/{OIDC_ID}"
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": f"arn:aws:iam::{place.account}:oidc-provider/{issuer}"},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {f"{issuer}:sub": subject, f"{issuer}:aud": "sts.amazonaws.com"}},
    }]}


def irsa_trust(place: Place, d: Deployed) -> dict[str, Any]:
    return web_identity_trust(place, f"system:serviceaccount:{d.namespace}:{d.service_account}")


def flyte_tasks_trust(place: Place, tasks: FlyteTasks) -> dict[str, Any]:
    """IRSA trust for the task pods of each domain of the orchestrator's Flyte project (any one subject)."""
    return web_identity_trust(place, list(tasks.subjects))


def sagemaker_trust(place: Place) -> dict[str, Any]:
    # Only this account's training jobs named like a run may assume it (confused-deputy guard).
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Service": "sagemaker.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": place.account},
                      "ArnLike": {"aws:SourceArn": place.arn("sagemaker", f"training-job/{RUN_ID_PREFIX}*")}},
    }]}


def documents(services: dict[str, Deployed] | None = None) -> dict[str, dict[str, Any]]:
    """File name -> document, for every role the deployment needs."""
    services = deployed() if services is None else services
    place = Place.of(services)
    ingest, orch, monitor, serving = (services[s] for s in (Service.INGEST, Service.ORCHESTRATOR, Service.MONITOR,
                                                            Service.SERVING))
    docs = {
        f"{ingest.role}.json": ingest_policy(place, ingest.settings),
        f"{orch.role}.json": orchestrator_policy(place, orch.settings, ingest.settings),
        f"{monitor.role}.json": monitor_policy(place, monitor.settings),
        f"{serving.role}.json": serving_policy(place, serving.settings),
    }
    for d in (ingest, orch, monitor, serving):
        docs[f"{d.role}.trust.json"] = irsa_trust(place, d)
    job = topics_job()
    docs[f"{job.role}.json"] = topics_policy(place)
    docs[f"{job.role}.trust.json"] = irsa_trust(place, job)
    tasks = flyte_tasks(orch)
    docs[f"{FLYTE_TASKS_ROLE}.json"] = flyte_tasks_policy(place, tasks.settings, ingest.settings)
    docs[f"{FLYTE_TASKS_ROLE}.trust.json"] = flyte_tasks_trust(place, tasks)
    execution_role = orch.settings.sagemaker_role_arn.rsplit("/", 1)[-1]
    docs[f"{execution_role}.json"] = sagemaker_execution_policy(place, orch.settings)
    docs[f"{execution_role}.trust.json"] = sagemaker_trust(place)
    return docs


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def write(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    docs = documents()
    for name, doc in docs.items():
        (folder / name).write_text(render(doc))
    return sorted(docs)


def stale(folder: Path) -> list[str]:
    """Files that differ from what the generator writes, are missing, or are not generated at all."""
    docs = documents()
    changed = [n for n, d in docs.items() if not (folder / n).is_file() or (folder / n).read_text() != render(d)]
    extra = [p.name for p in folder.glob("*.json") if p.name not in docs]
    return sorted(changed + extra)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("write", "check"):
        print("usage: python -m flywheel_dev.iam write|check <folder>", file=sys.stderr)
        return 2
    folder = Path(args[1])
    if args[0] == "write":
        for name in write(folder):
            print(folder / name)
        return 0
    drift = stale(folder)
    for name in drift:
        print(f"{folder / name}: not what the code generates (python -m flywheel_dev.iam write {folder})",
              file=sys.stderr)
    return 1 if drift else 0


if __name__ == "__main__":
    raise SystemExit(main())
