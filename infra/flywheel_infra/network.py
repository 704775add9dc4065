"""The VPC: private subnets for every workload, endpoints so AWS traffic stays off the NAT."""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, Fn, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from flywheel_infra.acks import AWS_CUSTOM_RESOURCE, LAMBDA_BASIC, LOGS_ENCRYPTION, ack, checkov_skip

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
        self._sagemaker_training(private)

    def _sagemaker_training(self, private: ec2.SubnetSelection) -> None:
        """The security group of SageMaker training jobs (the orchestrator's VpcConfig): no ingress at all;
        egress HTTPS only, to the interface endpoints (the VPC CIDR) and to S3 through its gateway endpoint
        (the region's S3 prefix list). Jobs run single-instance, so no rule between job instances is needed."""
        self.sagemaker_security_group = ec2.SecurityGroup(
            self, "SageMakerTraining", vpc=self.vpc, allow_all_outbound=False,
            description="Flywheel SageMaker training jobs: no ingress; HTTPS to the VPC endpoints and S3 only")
        self.sagemaker_security_group.add_egress_rule(ec2.Peer.ipv4(self.vpc.vpc_cidr_block), ec2.Port.tcp(443),
                                                      "Interface endpoints: ECR, STS, CloudWatch Logs, SageMaker")
        # The S3 gateway endpoint is reached through the region's AWS-managed prefix list, whose id CloudFormation
        # cannot name: read it at deploy time (an SDK call, no context lookup at synth).
        s3_prefix_list = cr.AwsCustomResource(
            self, "S3PrefixList",
            on_update=cr.AwsSdkCall(
                service="EC2", action="describeManagedPrefixLists",
                parameters={"Filters": [{"Name": "prefix-list-name",
                                         "Values": [f"com.amazonaws.{Aws.REGION}.s3"]}]},
                physical_resource_id=cr.PhysicalResourceId.of(f"s3-prefix-list-{Aws.REGION}"),
                output_paths=["PrefixLists.0.PrefixListId"]),
            policy=cr.AwsCustomResourcePolicy.from_sdk_calls(resources=cr.AwsCustomResourcePolicy.ANY_RESOURCE),
            install_latest_aws_sdk=False,
        )
        ack(s3_prefix_list, "AwsSolutions-IAM5[Resource::*]",
            "ec2:DescribeManagedPrefixLists takes no resource-level permission; it is the only action granted.")
        ack(self.node.find_child(AWS_CUSTOM_RESOURCE), f"AwsSolutions-IAM4[Policy::{LAMBDA_BASIC}]",
            "CDK's AwsCustomResource handler logs with AWSLambdaBasicExecutionRole; CDK has no switch for it.")
        self.sagemaker_security_group.add_egress_rule(
            ec2.Peer.prefix_list(s3_prefix_list.get_response_field("PrefixLists.0.PrefixListId")),
            ec2.Port.tcp(443), "S3 through the gateway endpoint: channels, output, checkpoints")
        subnets = self.vpc.select_subnets(subnet_type=private.subnet_type).subnet_ids
        # The orchestrator's settings (k8s/overlays/eks/orchestrator.env), as JSON lists.
        CfnOutput(self, "SageMakerSubnets", value=Fn.join("", ['["', Fn.join('","', subnets), '"]']),
                  description="FLYWHEEL_SAGEMAKER_SUBNETS")
        CfnOutput(self, "SageMakerSecurityGroupIds",
                  value=Fn.join("", ['["', self.sagemaker_security_group.security_group_id, '"]']),
                  description="FLYWHEEL_SAGEMAKER_SECURITY_GROUP_IDS")
