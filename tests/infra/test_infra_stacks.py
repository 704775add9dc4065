"""What the stacks promise, read from the synthesized templates (aws_cdk.assertions and plain JSON)."""

from __future__ import annotations

import json
import re

import pytest
from aws_cdk import Token
from aws_cdk.assertions import Match, Template
from infra_helpers import Synth, normalized, render

from flywheel.catalogue import Service
from flywheel_dev import deploy_check, iam
from flywheel_infra.cluster import (
    ADMIN_ACCESS_POLICY,
    ADMIN_ROLE_PARAMETER,
    FLYTE_CHART_VERSION,
    FLYTE_NAMESPACE,
    FLYTE_RELEASE,
    KUBERNETES_VERSION,
    MONITORING_NAMESPACE,
    PROMETHEUS_RELEASE,
)
from flywheel_infra.names import IRSA_SERVICES, skaffold_images

pytestmark = pytest.mark.infra

NETWORK, DATA, KAFKA, CLUSTER = "FlywheelNetwork", "FlywheelData", "FlywheelKafka", "FlywheelCluster"


def template(synth: Synth, stack: str) -> Template:
    return Template.from_json(synth.templates[stack])


def rendered(synth: Synth, value: object) -> object:
    return render(value, synth.names.account, synth.names.region)


def test_the_stacks_are_environment_agnostic_and_need_no_lookups(synth: Synth) -> None:
    manifest = json.loads((synth.directory / "manifest.json").read_text())
    assert not manifest.get("missing"), "a context lookup would need an AWS account at synth time"
    for stack in synth.flywheel.stacks:
        assert Token.is_unresolved(stack.account) and Token.is_unresolved(stack.region), stack.stack_name
    text = json.dumps(synth.templates)
    # The overlay's example account and region became CloudFormation pseudo parameters everywhere.
    assert synth.names.account not in text and synth.names.region not in text


@pytest.mark.parametrize("logical", ["DataBucket", "ArtifactBucket"])
def test_data_and_artifact_buckets_are_versioned_kms_encrypted_private_and_tls_only(synth: Synth,
                                                                                     logical: str) -> None:
    buckets = {k: v for k, v in synth.resources(DATA, "AWS::S3::Bucket").items() if k.startswith(logical)}
    ((key, bucket),) = buckets.items()
    props = bucket["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms" and rule["BucketKeyEnabled"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert "LoggingConfiguration" in props
    template(synth, DATA).has_resource_properties("AWS::S3::BucketPolicy", {
        "Bucket": {"Ref": key},
        "PolicyDocument": {"Statement": Match.array_with([Match.object_like({
            "Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])},
    })


def test_bucket_names_are_the_overlay_names_in_any_account(synth: Synth) -> None:
    services = iam.deployed(required=(Service.INGEST, Service.ORCHESTRATOR))
    names = {rendered(synth, b["Properties"].get("BucketName")) for b in synth.resources(DATA, "AWS::S3::Bucket").values()}
    assert services[Service.INGEST].settings.data_bucket in names
    assert services[Service.ORCHESTRATOR].settings.artifact_bucket in names


def test_data_bucket_notifies_the_queue_which_has_its_own_dead_letter_queue(synth: Synth) -> None:
    queues = synth.resources(DATA, "AWS::SQS::Queue")
    main = next(k for k, q in queues.items() if q["Properties"]["QueueName"] == synth.names.notification_queue)
    dlq = next(k for k, q in queues.items() if q["Properties"]["QueueName"] == f"{synth.names.notification_queue}-dlq")
    redrive = queues[main]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq, "Arn"]} and redrive["maxReceiveCount"] >= 1
    assert all(q["Properties"].get("SqsManagedSseEnabled") for q in queues.values())
    (notifications,) = synth.resources(DATA, "Custom::S3BucketNotifications").values()
    configs = notifications["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert {c["Filter"]["Key"]["FilterRules"][0]["Value"] for c in configs} == set(synth.names.dataset_prefixes)
    assert all(c["QueueArn"] == {"Fn::GetAtt": [main, "Arn"]} and c["Events"] == ["s3:ObjectCreated:*"]
               for c in configs)
    # The queue name is the one ingest is configured to consume (FLYWHEEL_NOTIFICATION_QUEUE_URL).
    url = iam.deployed(required=(Service.INGEST,))[Service.INGEST].settings.notification_queue_url
    assert url.endswith(f"/{synth.names.notification_queue}")


def test_msk_uses_iam_client_auth_over_tls_only(synth: Synth) -> None:
    (cluster,) = synth.resources(KAFKA, "AWS::MSK::Cluster").values()
    props = cluster["Properties"]
    assert props["ClientAuthentication"] == {"Sasl": {"Iam": {"Enabled": True}}, "Unauthenticated": {"Enabled": False}}
    assert props["EncryptionInfo"]["EncryptionInTransit"] == {"ClientBroker": "TLS", "InCluster": True}
    # The cluster name the services' IAM grants are scoped to (from the overlay's bootstrap hosts).
    assert props["ClusterName"] == synth.names.msk_cluster == "flywheel"
    assert props["NumberOfBrokerNodes"] >= 3  # replication factor 3, min.insync.replicas 2
    (config,) = synth.resources(KAFKA, "AWS::MSK::Configuration").values()
    assert "min.insync.replicas=2" in config["Properties"]["ServerProperties"]
    (group,) = synth.resources(KAFKA, "AWS::EC2::SecurityGroup").values()
    assert [(r["FromPort"], r["ToPort"]) for r in group["Properties"]["SecurityGroupIngress"]] == [(9098, 9098)]


def test_every_image_has_an_immutable_scanned_repository(synth: Synth) -> None:
    repos = {r["Properties"]["RepositoryName"]: r["Properties"]
             for r in synth.resources(DATA, "AWS::ECR::Repository").values()}
    wanted = {*skaffold_images(), *(f"flywheel-{s}" for s in IRSA_SERVICES), "flywheel-training"}
    assert wanted <= set(repos)
    for name, props in repos.items():
        assert props["ImageTagMutability"] == "IMMUTABLE", name
        assert props["ImageScanningConfiguration"] == {"ScanOnPush": True}, name
    # The training image the orchestrator launches lives in one of them.
    assert synth.names.training_repository in repos


def test_vpc_has_the_gateway_and_interface_endpoints(synth: Synth) -> None:
    prefix = f"com.amazonaws.{synth.names.region}."
    endpoints = {rendered(synth, e["Properties"]["ServiceName"]).removeprefix(prefix): e["Properties"]["VpcEndpointType"]
                 for e in synth.resources(NETWORK, "AWS::EC2::VPCEndpoint").values()}
    assert endpoints["s3"] == "Gateway"
    for service in ("ecr.api", "ecr.dkr", "sts", "sagemaker.api", "sagemaker.runtime", "logs"):
        assert endpoints.get(service) == "Interface", service
    subnets = synth.resources(NETWORK, "AWS::EC2::Subnet")
    assert any(not s["Properties"].get("MapPublicIpOnLaunch") for s in subnets.values())


def test_eks_has_a_managed_node_group(synth: Synth) -> None:
    template(synth, CLUSTER).resource_count_is("Custom::AWSCDK-EKS-Cluster", 1)
    template(synth, CLUSTER).has_resource_properties("AWS::EKS::Nodegroup", {
        "ScalingConfig": Match.object_like({"MinSize": Match.any_value()})})


def _trusts(synth: Synth) -> dict[str, str | tuple[str, ...]]:
    """Role logical id -> the ServiceAccount subject (or subjects) its web-identity trust admits."""
    cfn_json = synth.resources(CLUSTER, "Custom::AWSCDKCfnJson")
    found = {}
    for key, role in synth.resources(CLUSTER, "AWS::IAM::Role").items():
        statements = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        if len(statements) != 1 or statements[0]["Action"] != "sts:AssumeRoleWithWebIdentity":
            continue
        (statement,) = statements
        (condition,) = statement["Condition"].values()
        claims = render(cfn_json[condition["Fn::GetAtt"][0]]["Properties"]["Value"], "", "")
        value = json.loads(claims.replace("<Cluster9EE0221C.OpenIdConnectIssuer>", "issuer"))
        assert value["issuer:aud"] == "sts.amazonaws.com"
        sub = value["issuer:sub"]
        found[key] = sub if isinstance(sub, str) else tuple(sub)  # FlyteTaskRole: one of several
    return found


def test_each_service_assumes_its_own_role_through_its_k8s_service_account(synth: Synth) -> None:
    roles = synth.resources(CLUSTER, "AWS::IAM::Role")
    trusts = _trusts(synth)
    by_name = {roles[k]["Properties"].get("RoleName"): sub for k, sub in trusts.items()}
    objects = deploy_check.render_overlay(iam.OVERLAY)
    annotated = {o["metadata"]["name"]: o["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
                 for o in objects if o["kind"] == "ServiceAccount"}
    checked = set()
    for o in objects:
        if o["kind"] not in ("Deployment", "Job"):
            continue
        account = o["spec"]["template"]["spec"]["serviceAccountName"]
        if not annotated.get(account):
            continue
        role_name = annotated[account].rsplit("/", 1)[-1]  # the role irsa.yaml annotates
        assert by_name[role_name] == f"system:serviceaccount:{o['metadata']['namespace']}:{account}"
        checked.add(role_name)
    assert {"flywheel-ingest", "flywheel-orchestrator", "flywheel-monitor"} <= checked
    for service in IRSA_SERVICES:  # serving too, before its Deployment exists
        role = synth.names.role(service)
        assert by_name[role.role_name] == f"system:serviceaccount:{role.namespace}:{role.service_account}"


def test_service_and_sagemaker_roles_carry_exactly_the_generated_documents(synth: Synth) -> None:
    docs = iam.documents(iam.deployed(required=(Service.INGEST, Service.ORCHESTRATOR, Service.MONITOR)))
    roles = {r["Properties"]["RoleName"]: r["Properties"]
             for stack in (DATA, CLUSTER) for r in synth.resources(stack, "AWS::IAM::Role").values()
             if isinstance(r["Properties"].get("RoleName"), str)}
    checked = []
    for spec in synth.names.roles:
        (policy,) = roles[spec.role_name]["Policies"]
        if spec.generated:
            assert normalized(rendered(synth, policy["PolicyDocument"])) == normalized(docs[f"{spec.role_name}.json"])
            checked.append(spec.service)
    assert {Service.INGEST, Service.ORCHESTRATOR, Service.MONITOR} <= set(checked)
    # Every web-identity trust the generator writes (services, the topics Job) has its role here.
    irsa = {f.removesuffix(".trust.json") for f, d in docs.items()
            if f.endswith(".trust.json") and d["Statement"][0]["Action"] == "sts:AssumeRoleWithWebIdentity"}
    assert irsa <= set(roles)
    execution = synth.names.sagemaker_role_name
    (policy,) = roles[execution]["Policies"]
    # The overlay's example subnet and security-group ids stand where the network stack's real ones are.
    text = json.dumps(rendered(synth, policy["PolicyDocument"]))
    for i, example in enumerate(synth.names.sagemaker_subnets, start=1):
        text = re.sub(rf"subnet/<FlywheelNetwork:[^>]*privateSubnet{i}[^>]*>", f"subnet/{example}", text)
    for example in synth.names.sagemaker_security_groups:
        text = re.sub(r"security-group/<FlywheelNetwork:[^>]*SageMakerTraining[^>]*>", f"security-group/{example}", text)
    assert normalized(json.loads(text)) == normalized(docs[f"{execution}.json"])


def test_sagemaker_role_writes_only_run_prefixes_and_trusts_only_run_named_jobs(synth: Synth) -> None:
    role = synth.resources(DATA, "AWS::IAM::Role")
    (props,) = [r["Properties"] for r in role.values() if r["Properties"].get("RoleName") == synth.names.sagemaker_role_name]
    (policy,) = props["Policies"]
    statements = normalized(rendered(synth, policy["PolicyDocument"]))
    writes = [r for s in statements if "s3:PutObject" in s["Action"] for r in s["Resource"]]
    artifacts = iam.s3(iam.deployed(required=(Service.ORCHESTRATOR,))[Service.ORCHESTRATOR].settings.artifact_bucket)
    assert writes and all(r.startswith(f"{artifacts}/") for r in writes), writes
    assert all("/models/*/fw-*/output/" in r or "/models/*/fw-*/checkpoints/" in r for r in writes), writes
    assert not [r for s in statements for r in s["Resource"] if "flywheel-data-" in r]
    (trust,) = props["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert rendered(synth, trust["Condition"]["ArnLike"]["aws:SourceArn"]).endswith(":training-job/fw-*")


def test_flyte_binary_chart_with_its_bucket_database_and_roles(synth: Synth) -> None:
    (props,) = [c["Properties"] for c in synth.resources(CLUSTER, "Custom::AWSCDK-EKS-HelmChart").values()
                if c["Properties"]["Chart"] == "flyte-binary"]
    assert (props["Chart"], props["Release"], props["Namespace"], props["Version"]) == (
        "flyte-binary", FLYTE_RELEASE, FLYTE_NAMESPACE, FLYTE_CHART_VERSION)
    values = json.dumps(props["Values"])
    assert "passwordPath" in values and '\\"password\\"' not in values  # no secret in the template
    (db,) = synth.resources(CLUSTER, "AWS::RDS::DBInstance").values()
    assert db["Properties"]["Engine"] == "postgres" and db["Properties"]["StorageEncrypted"] is True
    assert not db["Properties"].get("PubliclyAccessible", False)
    subjects = set(_trusts(synth).values())
    assert f"system:serviceaccount:{FLYTE_NAMESPACE}:{FLYTE_RELEASE}" in subjects


def _export_of(synth: Synth, stack: str, value: dict) -> str:
    """The export name under which `stack` publishes `value` (a Ref or GetAtt of one of its resources)."""
    (name,) = [o["Export"]["Name"] for o in synth.templates[stack]["Outputs"].values()
               if "Export" in o and o["Value"] == value]
    return name


def test_sagemaker_jobs_get_a_group_with_no_ingress_and_https_egress_only_to_the_vpc_and_s3(synth: Synth) -> None:
    groups = synth.resources(NETWORK, "AWS::EC2::SecurityGroup")
    (key,) = [k for k in groups if k.startswith("SageMakerTraining")]
    props = groups[key]["Properties"]
    assert not props.get("SecurityGroupIngress")
    assert not [r for r in synth.resources(NETWORK, "AWS::EC2::SecurityGroupIngress").values()
                if r["Properties"].get("GroupId") == {"Fn::GetAtt": [key, "GroupId"]}]
    egress = [*props.get("SecurityGroupEgress", []),
              *(r["Properties"] for r in synth.resources(NETWORK, "AWS::EC2::SecurityGroupEgress").values()
                if r["Properties"]["GroupId"] == {"Fn::GetAtt": [key, "GroupId"]})]
    assert all((r["IpProtocol"], r["FromPort"], r["ToPort"]) == ("tcp", 443, 443) for r in egress), egress
    (vpc,) = synth.resources(NETWORK, "AWS::EC2::VPC")
    assert {json.dumps(r.get("CidrIp")) for r in egress if "CidrIp" in r} == {
        json.dumps({"Fn::GetAtt": [vpc, "CidrBlock"]})}  # the interface endpoints, nothing outside the VPC
    (lookup,) = synth.resources(NETWORK, "Custom::AWS").values()
    assert "describeManagedPrefixLists" in json.dumps(lookup["Properties"])
    (s3,) = [r for r in egress if "DestinationPrefixListId" in r]
    assert s3["DestinationPrefixListId"]["Fn::GetAtt"][0] == next(iter(synth.resources(NETWORK, "Custom::AWS")))
    assert not [r for r in egress if r.get("CidrIp") == "0.0.0.0/0"]


def test_the_orchestrators_vpc_config_comes_from_the_outputs_and_the_role_may_use_just_that(synth: Synth) -> None:
    outputs = synth.templates[NETWORK]["Outputs"]
    groups = synth.resources(NETWORK, "AWS::EC2::SecurityGroup")
    (group,) = [k for k in groups if k.startswith("SageMakerTraining")]
    assert outputs["SageMakerSecurityGroupIds"]["Description"] == "FLYWHEEL_SAGEMAKER_SECURITY_GROUP_IDS"
    assert outputs["SageMakerSecurityGroupIds"]["Value"] == {"Fn::Join": ["", ['["', {"Fn::GetAtt": [group, "GroupId"]}, '"]']]}
    subnets = outputs["SageMakerSubnets"]["Value"]["Fn::Join"][1][1]["Fn::Join"][1]
    private = [k for k, v in synth.resources(NETWORK, "AWS::EC2::Subnet").items() if "private" in k]
    assert outputs["SageMakerSubnets"]["Description"] == "FLYWHEEL_SAGEMAKER_SUBNETS"
    assert sorted(s["Ref"] for s in subnets) == sorted(private)
    # The execution role may attach job interfaces in exactly those subnets with exactly that group.
    role = next(r for r in synth.resources(DATA, "AWS::IAM::Role").values()
                if r["Properties"].get("RoleName") == synth.names.sagemaker_role_name)
    (policy,) = role["Properties"]["Policies"]
    (eni,) = [st for st in policy["PolicyDocument"]["Statement"] if st["Sid"] == "JobNetworkInterfacesInItsSubnets"]
    named = {r for r in rendered(synth, eni["Resource"]) if ":subnet/" in r or ":security-group/" in r}
    wanted = {f"subnet/<{_export_of(synth, NETWORK, {'Ref': s})}>" for s in private}
    wanted.add(f"security-group/<{_export_of(synth, NETWORK, {'Fn::GetAtt': [group, 'GroupId']})}>")
    assert {r.split(":", 5)[-1] for r in named} == wanted
    text = json.dumps(policy)
    assert not [x for x in (*synth.names.sagemaker_subnets, *synth.names.sagemaker_security_groups) if x in text]


def test_the_admin_role_given_at_deploy_time_gets_a_cluster_admin_access_entry(synth: Synth) -> None:
    parameter = synth.templates[CLUSTER]["Parameters"][ADMIN_ROLE_PARAMETER]
    assert parameter["Type"] == "String" and "Default" not in parameter  # deploys name it, never a guess
    assert re.fullmatch(parameter["AllowedPattern"], "arn:aws:iam::111122223333:role/Admin")
    assert not re.fullmatch(parameter["AllowedPattern"], "arn:aws:iam::111122223333:user/someone")
    (entry,) = synth.resources(CLUSTER, "AWS::EKS::AccessEntry").values()
    assert entry["Properties"]["PrincipalArn"] == {"Ref": ADMIN_ROLE_PARAMETER}
    (policy,) = entry["Properties"]["AccessPolicies"]
    assert policy["AccessScope"] == {"Type": "cluster"}
    assert rendered(synth, policy["PolicyArn"]) == f"arn:aws:eks::aws:cluster-access-policy/{ADMIN_ACCESS_POLICY}"
    (cluster,) = synth.resources(CLUSTER, "Custom::AWSCDK-EKS-Cluster").values()
    assert cluster["Properties"]["Config"]["accessConfig"]["authenticationMode"] in ("API", "API_AND_CONFIG_MAP")


def test_kube_prometheus_stack_scrapes_every_service_monitor_the_base_manifests_ship(synth: Synth) -> None:
    (props,) = [c["Properties"] for c in synth.resources(CLUSTER, "Custom::AWSCDK-EKS-HelmChart").values()
                if c["Properties"]["Chart"] == "kube-prometheus-stack"]
    assert (props["Release"], props["Namespace"]) == (PROMETHEUS_RELEASE, MONITORING_NAMESPACE)
    assert props["Repository"] == "https://prometheus-community.github.io/helm-charts" and props["Version"]
    values = json.loads(props["Values"]) if isinstance(props["Values"], str) else props["Values"]
    spec = values["prometheus"]["prometheusSpec"]
    # Not only the ServiceMonitors/PrometheusRules labelled with the chart's release: k8s/base's carry no such label.
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False and spec["ruleSelectorNilUsesHelmValues"] is False
    assert values["grafana"]["sidecar"]["dashboards"]["label"] == "grafana_dashboard"
    objects = deploy_check.render_overlay(iam.OVERLAY)
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} >= {f"flywheel-{s}" for s in IRSA_SERVICES}
    assert not [m for m in monitors if "release" in m["metadata"].get("labels", {})]
    # Each service's NetworkPolicy admits scrapes from the namespace the chart runs in.
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].startswith("flywheel-")
                   and o["metadata"]["name"] != "flywheel-topics"):
        peers = [p for rule in policy["spec"].get("ingress", []) for p in rule.get("from", [])]
        assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}}} in peers, \
            policy["metadata"]["name"]


def test_the_manifests_are_validated_against_the_clusters_kubernetes_version(synth: Synth) -> None:
    (cluster,) = synth.resources(CLUSTER, "Custom::AWSCDK-EKS-Cluster").values()
    assert cluster["Properties"]["Config"]["version"] == KUBERNETES_VERSION.version
    assert deploy_check.KUBERNETES_VERSION.rsplit(".", 1)[0] == KUBERNETES_VERSION.version
