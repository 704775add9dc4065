"""The VPC: private subnets for every workload, endpoints so AWS traffic stays off the NAT."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from flywheel_infra.acks import LOGS_ENCRYPTION, ack, checkov_skip

# Interface endpoints the services, the nodes and SageMaker jobs call (docs/decisions/0005).
INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "SageMakerApi": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_API,
    "SageMakerRuntime": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,
    "CloudWatchLogs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "Glue": ec2.InterfaceVpcEndpointAwsService.GLUE,
}


class NetworkStack(Stack):
    """Two AZs (all an environment-agnostic stack can name), public subnets only for the one NAT gateway."""

    def __init__(self, scope: Construct, construct_id: str, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.vpc = ec2.Vpc(
            self, "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            max_azs=2,
            # One NAT gateway: the Flyte chart, its images and EKS add-ons come from public registries.
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                                        cidr_mask=19),
            ],
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
        )
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.ONE_MONTH,
                                  removal_policy=RemovalPolicy.DESTROY)
        checkov_skip(flow_logs, "CKV_AWS_158", LOGS_ENCRYPTION)
        self.vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))
        private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.endpoints = {
            name: self.vpc.add_interface_endpoint(name, service=service, subnets=private, private_dns_enabled=True)
            for name, service in INTERFACE_ENDPOINTS.items()
        }
        for endpoint in self.endpoints.values():
            ack(endpoint, "AwsSolutions-EC23",
                "The endpoint admits HTTPS from the VPC's own CIDR (a reference cdk-nag cannot evaluate), "
                "never from 0.0.0.0/0.")
