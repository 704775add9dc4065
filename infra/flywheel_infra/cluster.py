"""EKS with a managed node group, one IRSA role per service, and Flyte (flyte-binary) with its database."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnJson, CfnOutput, CfnParameter, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from aws_cdk.lambda_layer_kubectl_v35 import KubectlV35Layer
from constructs import Construct

from flywheel_dev import iam as generated
from flywheel_infra.acks import (
    LAMBDA_BASIC,
    LAMBDA_VPC,
    MANAGED,
    ack,
    ack_all,
    checkov_skip,
    wildcard_findings,
)
from flywheel_infra.data import secure_bucket
from flywheel_infra.names import Names, ServiceRole

CLUSTER_NAME = "flywheel"
KUBERNETES_VERSION = eks.KubernetesVersion.V1_35  # paired with the kubectl v35 Lambda layer
NODE_INSTANCE = "m6i.xlarge"
NODES = (2, 2, 4)  # min, desired, max

# Flyte: the single-binary chart, its release name is its ServiceAccount's name.
FLYTE_NAMESPACE = "flyte"
FLYTE_RELEASE = "flyte-binary"
FLYTE_CHART_REPOSITORY = "https://flyteorg.github.io/flyte"
FLYTE_CHART_VERSION = "v1.16.0"  # flyteadmin/propeller matching the flytekit 1.16 the lock pins
FLYTE_DOMAINS = generated.FLYTE_DOMAINS  # each one's task pods run as FlyteTaskRole (flywheel_dev.iam)
FLYTE_DB_NAME = "flyteadmin"
FLYTE_DB_USER = "flyteadmin"
FLYTE_DB_PASSWORD_SECRET = "flyte-db-pass"  # Kubernetes Secret holding pass.txt (docs/deploy.md)
FLYTE_DB_INSTANCE = "t4g.micro"

# Operators' cluster access: an EKS access entry for the role given at deploy time
# (`cdk deploy FlywheelCluster --parameters AdminRoleArn=arn:aws:iam::<account>:role/<role>`).
ADMIN_ROLE_PARAMETER = "AdminRoleArn"
ADMIN_ACCESS_POLICY = "AmazonEKSClusterAdminPolicy"

# Metrics: the Prometheus Operator, Prometheus, Alertmanager and Grafana (kube-prometheus-stack) in the namespace
# the services' NetworkPolicies admit scrapes from. Its Prometheus selects every ServiceMonitor and PrometheusRule
# in the cluster (not only those labelled with its release), so k8s/base's ServiceMonitors are scraped as they are.
MONITORING_NAMESPACE = "monitoring"
PROMETHEUS_RELEASE = "kube-prometheus-stack"
PROMETHEUS_CHART_REPOSITORY = "https://prometheus-community.github.io/helm-charts"
PROMETHEUS_CHART_VERSION = "81.6.2"


def web_identity(cluster: eks.Cluster, scope: Construct, construct_id: str, *, operator: str,
                 subject: str | list[str]) -> iam.WebIdentityPrincipal:
    """IRSA trust: tokens of the cluster's OIDC issuer, for exactly this ServiceAccount (or any one of
    these), for STS."""
    issuer = cluster.cluster_open_id_connect_issuer
    claims = CfnJson(scope, construct_id, value={f"{issuer}:sub": subject, f"{issuer}:aud": "sts.amazonaws.com"})
    return iam.WebIdentityPrincipal(cluster.open_id_connect_provider.open_id_connect_provider_arn,
                                    {operator: claims})


class ClusterStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, names: Names, vpc: ec2.IVpc,
                 access_logs: s3.IBucket, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self._names = names
        private = [ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)]
        self.cluster = eks.Cluster(
            self, "Cluster",
            cluster_name=CLUSTER_NAME,
            version=KUBERNETES_VERSION,
            kubectl_layer=KubectlV35Layer(self, "KubectlLayer"),
            vpc=vpc,
            vpc_subnets=private,
            default_capacity=0,
            endpoint_access=eks.EndpointAccess.PUBLIC_AND_PRIVATE,
            authentication_mode=eks.AuthenticationMode.API_AND_CONFIG_MAP,
            cluster_logging=[eks.ClusterLoggingTypes.API, eks.ClusterLoggingTypes.AUDIT,
                             eks.ClusterLoggingTypes.AUTHENTICATOR, eks.ClusterLoggingTypes.CONTROLLER_MANAGER,
                             eks.ClusterLoggingTypes.SCHEDULER],
        )
        self.nodes = self.cluster.add_nodegroup_capacity(
            "Nodes",
            instance_types=[ec2.InstanceType(NODE_INSTANCE)],
            min_size=NODES[0], desired_size=NODES[1], max_size=NODES[2],
            subnets=private[0],
            ami_type=eks.NodegroupAmiType.AL2023_X86_64_STANDARD,
            disk_size=50,
        )
        self.service_roles = {r.service: self._service_role(r) for r in names.roles}
        self._admin_access()
        self._flyte(vpc, access_logs)
        self._prometheus()
        self._acknowledge_cluster()

    def _admin_access(self) -> None:
        """An access entry (authentication mode API) making the deploy-time admin role a cluster admin."""
        self.admin_role_arn = CfnParameter(
            self, ADMIN_ROLE_PARAMETER, type="String",
            allowed_pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$",
            description="IAM role of the operators who run kubectl, helm and skaffold (EKS cluster admin)")
        self.cluster.grant_access("AdminAccess", self.admin_role_arn.value_as_string, [
            eks.AccessPolicy.from_access_policy_name(ADMIN_ACCESS_POLICY,
                                                     access_scope_type=eks.AccessScopeType.CLUSTER)])

    def _prometheus(self) -> None:
        self.prometheus = self.cluster.add_helm_chart(
            "Prometheus",
            chart="kube-prometheus-stack",
            repository=PROMETHEUS_CHART_REPOSITORY,
            version=PROMETHEUS_CHART_VERSION,
            release=PROMETHEUS_RELEASE,
            namespace=MONITORING_NAMESPACE,
            create_namespace=True,
            values={
                "prometheus": {"prometheusSpec": {
                    "serviceMonitorSelectorNilUsesHelmValues": False,
                    "podMonitorSelectorNilUsesHelmValues": False,
                    "ruleSelectorNilUsesHelmValues": False,
                    "retention": "15d",
                }},
                # Dashboards: ConfigMaps labelled grafana_dashboard=1 in any namespace (docs/deploy.md).
                "grafana": {"sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard",
                                                       "labelValue": "1", "searchNamespace": "ALL"}}},
            },
        )

    def _service_role(self, spec: ServiceRole) -> iam.Role:
        subject = f"system:serviceaccount:{spec.namespace}:{spec.service_account}"
        role = iam.Role(
            self, f"Role-{spec.service}",
            role_name=spec.role_name,
            assumed_by=web_identity(self.cluster, self, f"Trust-{spec.service}", operator="StringEquals",
                                    subject=subject),
            inline_policies={spec.role_name: iam.PolicyDocument.from_json(spec.policy)},
            description=f"IRSA role of {subject} (policy generated by flywheel_dev.iam)",
        )
        for finding, reason in wildcard_findings(spec.source_policy, self._names.account,
                                                 self._names.region).items():
            ack(role, finding, reason)
        return role

    def _flyte(self, vpc: ec2.IVpc, access_logs: s3.IBucket) -> None:
        self.flyte_bucket = secure_bucket(self, "FlyteBucket", name=None, logs=access_logs, log_prefix="flyte/")

        self.flyte_db = rds.DatabaseInstance(
            self, "FlyteDatabase",
            engine=rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_17_9),
            instance_type=ec2.InstanceType(FLYTE_DB_INSTANCE),
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            database_name=FLYTE_DB_NAME,
            credentials=rds.Credentials.from_generated_secret(FLYTE_DB_USER),
            storage_encrypted=True,
            allocated_storage=20,
            max_allocated_storage=100,
            backup_retention=Duration.days(7),
            deletion_protection=True,
            multi_az=False,
            cloudwatch_logs_exports=["postgresql"],
            removal_policy=RemovalPolicy.SNAPSHOT,
        )
        self.flyte_db.connections.allow_default_port_from(self.cluster, "flyte-binary in the cluster")
        ack(self.flyte_db, "AwsSolutions-RDS3",
            "Single-AZ for the small setup: Flyte's database holds execution metadata, restored from the "
            "7-day backups; set multi_az for production uptime.")
        ack(self.flyte_db, "AwsSolutions-RDS11",
            "Port 5432 is reachable only from the cluster security group inside private subnets.")
        checkov_skip(self.flyte_db, "CKV_AWS_157",
                     "Single-AZ for the small setup (see AwsSolutions-RDS3 above); set multi_az for production.")
        checkov_skip(self.flyte_db, "CKV_AWS_118",
                     "Enhanced monitoring needs its own role; CloudWatch metrics and the exported postgresql "
                     "log cover a metadata database of this size.")
        checkov_skip(self.flyte_db, "CKV_AWS_161",
                     "flyte-binary connects with a password (IAM auth tokens expire every 15 minutes and "
                     "Flyte cannot refresh them); the instance is reachable only from the cluster.")
        checkov_skip(self.flyte_db.node.find_child("Secret"), "CKV_AWS_149",
                     "The database password is encrypted with the account's aws/secretsmanager key; only "
                     "administrators read it, once, to create the Kubernetes Secret.")
        if self.flyte_db.secret is not None:  # the generated secret is a child of the instance
            ack(self.flyte_db, "AwsSolutions-SMG4",
                "flyte-binary reads the password from a mounted file; rotation means re-creating the "
                "Kubernetes Secret and restarting Flyte, done by hand (docs/deploy.md).")

        admin_sa = f"system:serviceaccount:{FLYTE_NAMESPACE}:{FLYTE_RELEASE}"
        self.flyte_backend_role = iam.Role(
            self, "FlyteBackendRole",
            assumed_by=web_identity(self.cluster, self, "TrustFlyteBackend", operator="StringEquals",
                                    subject=admin_sa),
            description="flyte-binary (admin, propeller, datacatalog): its bucket only",
        )
        # Task pods run as `default` in the <project>-<domain> namespaces Flyte creates: the training workflow's
        # tasks, with the generator's grants (deploy/iam/flywheel-flyte-tasks.json) for the Flywheel project's
        # namespaces only, plus Flyte's bucket below.
        n = self._names
        self.flyte_task_role = iam.Role(
            self, "FlyteTaskRole",
            role_name=n.flyte_tasks_role_name,
            assumed_by=web_identity(self.cluster, self, "TrustFlyteTasks", operator="StringEquals",
                                    subject=list(n.flyte_tasks_subjects)),
            inline_policies={n.flyte_tasks_role_name: iam.PolicyDocument.from_json(n.flyte_tasks_policy)},
            description="Flyte task pods of the training workflow: a run's S3 keys and SageMaker job (policy "
                        "generated by flywheel_dev.iam), and Flyte's bucket (inputs, outputs, offloaded data)",
        )
        for finding, reason in wildcard_findings(n.flyte_tasks_source_policy, n.account, n.region).items():
            ack(self.flyte_task_role, finding, reason)
        objects = self.flyte_bucket.arn_for_objects("*")
        for role in (self.flyte_backend_role, self.flyte_task_role):
            role.add_to_policy(iam.PolicyStatement(actions=["s3:ListBucket", "s3:GetBucketLocation"],
                                                   resources=[self.flyte_bucket.bucket_arn]))
            role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                                                   resources=[objects]))
            ack(role, f"AwsSolutions-IAM5[Resource::<{self._logical(self.flyte_bucket)}.Arn>/*]",
                "Flyte names the keys in its own bucket (metadata, offloaded inputs and outputs) per execution.")

        self.flyte = self.cluster.add_helm_chart(
            "Flyte",
            chart="flyte-binary",
            repository=FLYTE_CHART_REPOSITORY,
            version=FLYTE_CHART_VERSION,
            release=FLYTE_RELEASE,
            namespace=FLYTE_NAMESPACE,
            create_namespace=True,
            values=self._flyte_values(),
        )
        self.flyte.node.add_dependency(self.flyte_db)
        CfnOutput(self, "FlyteDatabaseSecretArn", value=self.flyte_db.secret.secret_arn if self.flyte_db.secret else "",
                  description=f"Copy its password into the Secret {FLYTE_NAMESPACE}/{FLYTE_DB_PASSWORD_SECRET}")
        CfnOutput(self, "FlyteBucketName", value=self.flyte_bucket.bucket_name)

    def _flyte_values(self) -> dict[str, Any]:
        task_role = self.flyte_task_role.role_arn
        return {
            "configuration": {
                "database": {
                    "username": FLYTE_DB_USER,
                    "passwordPath": "/etc/db/pass.txt",
                    "host": self.flyte_db.db_instance_endpoint_address,
                    "port": 5432,
                    "dbname": FLYTE_DB_NAME,
                    "options": "sslmode=require",
                },
                "storage": {
                    "metadataContainer": self.flyte_bucket.bucket_name,
                    "userDataContainer": self.flyte_bucket.bucket_name,
                    "provider": "s3",
                    "providerConfig": {"s3": {"region": self.region, "authType": "iam"}},
                },
                "inline": {
                    "cluster_resources": {
                        "customData": [{d: [{"defaultIamRole": {"value": task_role}}]} for d in FLYTE_DOMAINS],
                    },
                    "plugins": {"k8s": {"inject-finalizer": True}},
                },
            },
            "clusterResourceTemplates": {"inline": {
                "001_namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: '{{ namespace }}'\n",
                "002_serviceaccount.yaml": (
                    "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n"
                    "  namespace: '{{ namespace }}'\n  annotations:\n"
                    "    eks.amazonaws.com/role-arn: '{{ defaultIamRole }}'\n"),
            }},
            "deployment": {
                "extraVolumes": [{"name": "db-pass", "secret": {"secretName": FLYTE_DB_PASSWORD_SECRET}}],
                "extraVolumeMounts": [{"name": "db-pass", "mountPath": "/etc/db", "readOnly": True}],
            },
            "serviceAccount": {"create": True,
                               "annotations": {"eks.amazonaws.com/role-arn": self.flyte_backend_role.role_arn}},
        }

    def _logical(self, construct: Construct) -> str:
        return self.resolve(construct.node.default_child.logical_id)  # type: ignore[union-attr]

    def _acknowledge_cluster(self) -> None:
        """CDK's own machinery for aws_eks.Cluster: providers, waiters, the creation and node roles."""
        ack(self.cluster, "AwsSolutions-EKS1",
            "The API endpoint is public and private: operators run kubectl/skaffold from outside the VPC; "
            "restrict it with EndpointAccess.PUBLIC_AND_PRIVATE.only_from(<office CIDRs>) per account.")
        cdk_lambda = ("CDK's custom-resource Lambdas for aws_eks.Cluster log and attach ENIs through the AWS "
                      "managed Lambda execution policies; CDK offers no way to replace them.")
        cdk_invoke = ("CDK's provider framework invokes its own handler functions by ARN, any version "
                      "(<function ARN>:*); nothing else is reachable.")
        provider = self.node.find_child("@aws-cdk--aws-eks.ClusterResourceProvider")
        ack(provider, f"AwsSolutions-IAM4[Policy::{LAMBDA_BASIC}]", cdk_lambda)
        ack_all(provider, [f"AwsSolutions-IAM5[Resource::<{fn}.Arn>:*]" for fn in (
            "IsCompleteHandler7073F4DA", "OnEventHandler42BEBAE0", "ProviderframeworkisComplete26D7B0CB",
            "ProviderframeworkonTimeout0B47CA38")], cdk_invoke)
        ack_all(provider, ["AwsSolutions-SF1", "AwsSolutions-SF2"],
                "CDK's waiter state machine polls cluster creation; it is internal to CDK, short-lived, and "
                "its Lambdas log to CloudWatch already.")
        kubectl = self.node.find_child("@aws-cdk--aws-eks.KubectlProvider")
        ack_all(kubectl, [f"AwsSolutions-IAM4[Policy::{LAMBDA_BASIC}]", f"AwsSolutions-IAM4[Policy::{LAMBDA_VPC}]"],
                cdk_lambda)
        ack(kubectl, "AwsSolutions-IAM5[Resource::<Handler886CB40B.Arn>:*]", cdk_invoke)
        ack(kubectl, "AwsSolutions-L1",
            "CDK pins the kubectl handler's Python runtime together with the kubectl layer it is tested with.")
        ecr_public = ('{"Fn::If":["ClusterHasEcrPublic8EE1114E",{"Fn::Join":["",["arn:",{"Ref":"AWS::Partition"},'
                      '":iam::aws:policy/AmazonElasticContainerRegistryPublicReadOnly"]]},{"Ref":"AWS::NoValue"}]}')
        ack_all(self.cluster.node.find_child("KubectlHandlerRole"),
                [f"AwsSolutions-IAM4[Policy::{p}]" for p in (
                    LAMBDA_BASIC, LAMBDA_VPC, f"{MANAGED}AmazonEC2ContainerRegistryPullOnly", ecr_public)],
                "CDK's kubectl handler role: Lambda execution and pulling the kubectl layer's image, as CDK sets it.")
        ack(self.cluster.role, f"AwsSolutions-IAM4[Policy::{MANAGED}AmazonEKSClusterPolicy]",
            "EKS requires AmazonEKSClusterPolicy on the cluster's service role.")
        ack_all(self.nodes.role, [f"AwsSolutions-IAM4[Policy::{MANAGED}{p}]" for p in (
            "AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly")],
            "The managed node group's role needs the AWS managed worker, CNI and ECR read policies; the services "
            "get their own rights through IRSA, never through the node.")
        creation = self.cluster.node.find_child("Resource").node.find_child("CreationRole")
        ack_all(creation, ["AwsSolutions-IAM5[Resource::*]"] + [
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:eks:<AWS::Region>:<AWS::AccountId>:{kind}/"
            f"{CLUSTER_NAME}/*]" for kind in ("cluster", "fargateprofile")],
            "CDK's cluster-creation role: eks actions on this cluster's own sub-resources, and EC2/IAM calls "
            "(describe, pass its roles) that take no resource scope.")
