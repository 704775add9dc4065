"""Buckets, the S3-notification queue, image repositories, the Glue registry and the SageMaker role."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from flywheel_infra.acks import LAMBDA_BASIC, ack, checkov_skip, wildcard_findings
from flywheel_infra.names import Names

# Redeliveries of one S3 notification before it is parked in the DLQ (ingest's reconciliation scan still
# finds the object: the queue is the fast path, the listing the guarantee; docs/decisions/0102).
MAX_RECEIVES = 5
SSE_SQS = ("Encrypted at rest with SSE-SQS (SqsManagedSseEnabled), which checkov does not recognise; a KMS key "
           "would need a key policy for S3 to send notifications.")


def secure_bucket(scope: Construct, construct_id: str, *, name: str | None, logs: s3.IBucket | None,
                  log_prefix: str = "") -> s3.Bucket:
    """Versioned, SSE-KMS (the account's aws/s3 key, S3 Bucket Keys on), TLS only, no public access."""
    return s3.Bucket(
        scope, construct_id,
        bucket_name=name,
        versioned=True,
        encryption=s3.BucketEncryption.KMS_MANAGED,
        bucket_key_enabled=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        server_access_logs_bucket=logs,
        server_access_logs_prefix=log_prefix or None,
        removal_policy=RemovalPolicy.RETAIN,
    )


def access_log_bucket(scope: Construct, construct_id: str) -> s3.Bucket:
    # S3 server access logging delivers only to SSE-S3 buckets.
    bucket = s3.Bucket(
        scope, construct_id,
        versioned=True,
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,  # log delivery by bucket policy, no ACL
        lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365),
                                          noncurrent_version_expiration=Duration.days(30))],
        removal_policy=RemovalPolicy.RETAIN,
    )
    ack(bucket, "AwsSolutions-S1", "This is the access-log bucket: logging it into itself would loop.")
    checkov_skip(bucket, "CKV_AWS_18", "This is the access-log bucket: logging it into itself would loop.")
    return bucket


def with_vpc_config(policy: dict[str, Any], names: Names, subnets: Sequence[str],
                    security_group: str | None) -> dict[str, Any]:
    """The execution role's policy with the overlay's example subnet and security-group ids replaced by the
    network stack's (the ids `FLYWHEEL_SAGEMAKER_SUBNETS` / `..._SECURITY_GROUP_IDS` take from its outputs)."""
    if not subnets or security_group is None:
        return policy
    text = json.dumps(policy)
    for example, real in zip(names.sagemaker_subnets, subnets, strict=False):
        text = text.replace(f"subnet/{example}", f"subnet/{real}")
    for example in names.sagemaker_security_groups:
        text = text.replace(f"security-group/{example}", f"security-group/{security_group}")
    return json.loads(text)


def conditions(trust: dict[str, Any]) -> dict[str, Any]:
    (statement,) = trust["Statement"]
    return statement.get("Condition", {})


class DataStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, names: Names, vpc: ec2.IVpc | None = None,
                 sagemaker_security_group: ec2.ISecurityGroup | None = None, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.access_logs = access_log_bucket(self, "AccessLogs")
        self.data_bucket = secure_bucket(self, "DataBucket", name=names.data_bucket, logs=self.access_logs,
                                         log_prefix="data/")
        self.artifact_bucket = secure_bucket(self, "ArtifactBucket", name=names.artifact_bucket,
                                             logs=self.access_logs, log_prefix="artifacts/")

        self.dead_letters = sqs.Queue(
            self, "NotificationDeadLetters",
            queue_name=f"{names.notification_queue}-dlq",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        ack(self.dead_letters, "AwsSolutions-SQS3", "This queue is the dead-letter queue of the notifications.")
        self.queue = sqs.Queue(
            self, "NotificationQueue",
            queue_name=names.notification_queue,
            # SSE-SQS: S3 can send to it with no key policy (an aws/sqs-encrypted queue refuses S3).
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(60),
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letters, max_receive_count=MAX_RECEIVES),
        )
        for queue in (self.queue, self.dead_letters):
            checkov_skip(queue, "CKV_AWS_27", SSE_SQS)
        for prefix in names.dataset_prefixes:
            self.data_bucket.add_event_notification(s3.EventType.OBJECT_CREATED, s3n.SqsDestination(self.queue),
                                                    s3.NotificationKeyFilter(prefix=prefix))

        self.repositories = {
            name: ecr.Repository(
                self, f"Repository-{name}",
                repository_name=name,
                image_scan_on_push=True,
                image_tag_mutability=ecr.TagMutability.IMMUTABLE,
                encryption=ecr.RepositoryEncryption.KMS,
                lifecycle_rules=[ecr.LifecycleRule(description="keep the last 100 images", max_image_count=100)],
                removal_policy=RemovalPolicy.RETAIN,
            )
            for name in names.repositories
        }

        self.schema_registry = glue.CfnRegistry(
            self, "SchemaRegistry", name=names.glue_registry,
            description="Flywheel event schemas (schemas/*.avsc), registered by the services with BACKWARD_ALL.")

        # The training jobs' role: the generator's policy and trust (deploy/iam/flywheel-sagemaker-execution*).
        self.sagemaker_role = iam.Role(
            self, "SageMakerExecutionRole",
            role_name=names.sagemaker_role_name,
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com").with_conditions(
                conditions(names.sagemaker_trust)),
            inline_policies={names.sagemaker_role_name: iam.PolicyDocument.from_json(with_vpc_config(
                names.sagemaker_policy, names,
                vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnet_ids if vpc else (),
                sagemaker_security_group.security_group_id if sagemaker_security_group else None))},
            description="SageMaker training jobs: read a run's channel, write its output and checkpoints only.",
        )
        for finding, reason in wildcard_findings(names.sagemaker_source_policy, names.account,
                                                 names.region).items():
            ack(self.sagemaker_role, finding, reason)
        self._acknowledge_notification_handler()

    def _acknowledge_notification_handler(self) -> None:
        # CDK's singleton that applies bucket notifications (a custom resource Lambda and its role).
        handler = self.node.try_find_child("BucketNotificationsHandler050a0587b7544547bf325f094a3db834")
        if handler is None:
            return
        ack(handler, f"AwsSolutions-IAM4[Policy::{LAMBDA_BASIC}]",
            "CDK's bucket-notification custom resource logs with AWSLambdaBasicExecutionRole; CDK has no switch.")
