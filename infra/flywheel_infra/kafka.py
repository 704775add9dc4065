"""MSK: IAM client authentication over TLS only, brokers in the private subnets."""

from __future__ import annotations

from typing import Any

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_msk as msk
from constructs import Construct

from flywheel_infra.acks import LOGS_ENCRYPTION, ack, checkov_skip
from flywheel_infra.names import Names

KAFKA_VERSION = "3.9.x"
# A small setup: two brokers in each of the two AZs, so topics get replication factor 3 with
# min.insync.replicas 2 (one broker may be down and producers with acks=all still write).
BROKER_INSTANCE = "kafka.t3.small"
BROKERS_PER_AZ = 2
BROKER_STORAGE_GIB = 100
IAM_PORT = 9098  # SASL/IAM over TLS (docs/decisions/0402)
SERVER_PROPERTIES = """\
auto.create.topics.enable=false
default.replication.factor=3
min.insync.replicas=2
num.partitions=4
unclean.leader.election.enable=false
"""


class KafkaStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, names: Names, vpc: ec2.IVpc,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        private = vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.security_group = ec2.SecurityGroup(self, "Brokers", vpc=vpc, allow_all_outbound=False,
                                                description="MSK brokers: SASL/IAM over TLS from inside the VPC")
        # Pods, nodes and SageMaker jobs all live in the VPC; IAM decides what each may do (deploy/iam).
        self.security_group.add_ingress_rule(ec2.Peer.ipv4(vpc.vpc_cidr_block), ec2.Port.tcp(IAM_PORT),
                                             "Kafka clients in the VPC (SASL/IAM over TLS)")
        ack(self.security_group, "AwsSolutions-EC23",
            "Ingress is port 9098 from the VPC's own CIDR (a reference cdk-nag cannot evaluate), never 0.0.0.0/0.")
        broker_logs = logs.LogGroup(self, "BrokerLogs", retention=logs.RetentionDays.ONE_MONTH,
                                    removal_policy=RemovalPolicy.DESTROY)
        checkov_skip(broker_logs, "CKV_AWS_158", LOGS_ENCRYPTION)
        configuration = msk.CfnConfiguration(self, "Configuration", name=f"{names.msk_cluster}-config",
                                             server_properties=SERVER_PROPERTIES,
                                             kafka_versions_list=[KAFKA_VERSION])
        self.cluster = msk.CfnCluster(
            self, "Cluster",
            cluster_name=names.msk_cluster,
            kafka_version=KAFKA_VERSION,
            number_of_broker_nodes=BROKERS_PER_AZ * len(private.subnet_ids),
            broker_node_group_info=msk.CfnCluster.BrokerNodeGroupInfoProperty(
                instance_type=BROKER_INSTANCE,
                client_subnets=private.subnet_ids,
                security_groups=[self.security_group.security_group_id],
                storage_info=msk.CfnCluster.StorageInfoProperty(
                    ebs_storage_info=msk.CfnCluster.EBSStorageInfoProperty(volume_size=BROKER_STORAGE_GIB)),
            ),
            client_authentication=msk.CfnCluster.ClientAuthenticationProperty(
                sasl=msk.CfnCluster.SaslProperty(iam=msk.CfnCluster.IamProperty(enabled=True)),
                unauthenticated=msk.CfnCluster.UnauthenticatedProperty(enabled=False),
            ),
            encryption_info=msk.CfnCluster.EncryptionInfoProperty(
                encryption_in_transit=msk.CfnCluster.EncryptionInTransitProperty(client_broker="TLS",
                                                                                 in_cluster=True),
            ),
            configuration_info=msk.CfnCluster.ConfigurationInfoProperty(arn=configuration.attr_arn, revision=1),
            logging_info=msk.CfnCluster.LoggingInfoProperty(broker_logs=msk.CfnCluster.BrokerLogsProperty(
                cloud_watch_logs=msk.CfnCluster.CloudWatchLogsProperty(enabled=True,
                                                                       log_group=broker_logs.log_group_name))),
            enhanced_monitoring="PER_BROKER",
        )
