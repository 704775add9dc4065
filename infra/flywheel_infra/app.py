"""The CDK app: four environment-agnostic stacks, synthesized offline from plain Python.

    python -m flywheel_infra.app cdk.out          # templates into cdk.out/ (no AWS account, no network)
    python -m flywheel_infra.app cdk.out --nag    # the same, with cdk-nag's AwsSolutions pack (fails on
                                                  # any finding that is not acknowledged with a reason)

`cdk synth` / `cdk deploy` run the same app through infra/cdk.json.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from flywheel_infra.acks import CheckovSkipsForCdkInternals
from flywheel_infra.cluster import ClusterStack
from flywheel_infra.data import DataStack
from flywheel_infra.kafka import KafkaStack
from flywheel_infra.names import Names, names
from flywheel_infra.network import NetworkStack

STACK_PREFIX = "Flywheel"
CONTEXT = {
    "aws:cdk:enable-path-metadata": False,
    "aws:cdk:version-reporting": False,
    # S3 server access logs are delivered under a bucket policy, not the legacy log-delivery ACL.
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
}


@dataclass
class Flywheel:
    app: cdk.App
    network: NetworkStack
    data: DataStack
    kafka: KafkaStack
    cluster: ClusterStack

    @property
    def stacks(self) -> list[cdk.Stack]:
        return [self.network, self.data, self.kafka, self.cluster]


def build(outdir: str | Path | None = None, *, nag: bool = False, of: Names | None = None) -> Flywheel:
    """The app and its stacks; with `nag`, synth raises on any unacknowledged AwsSolutions finding."""
    n = of or names()
    app = cdk.App(outdir=None if outdir is None else str(outdir), context=CONTEXT)
    network = NetworkStack(app, f"{STACK_PREFIX}Network", description="Flywheel: VPC and endpoints")
    data = DataStack(app, f"{STACK_PREFIX}Data", names=n, vpc=network.vpc,
                     sagemaker_security_group=network.sagemaker_security_group,
                     description="Flywheel: S3, S3 notifications queue, ECR, Glue registry, SageMaker role")
    kafka = KafkaStack(app, f"{STACK_PREFIX}Kafka", names=n, vpc=network.vpc,
                       description="Flywheel: MSK with IAM auth over TLS")
    cluster = ClusterStack(app, f"{STACK_PREFIX}Cluster", names=n, vpc=network.vpc, access_logs=data.access_logs,
                           description="Flywheel: EKS, IRSA roles, Flyte")
    cdk.Aspects.of(app).add(CheckovSkipsForCdkInternals())
    if nag:
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return Flywheel(app, network, data, kafka, cluster)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    nag = "--nag" in args
    rest = [a for a in args if a != "--nag"]
    outdir = rest[0] if rest else os.environ.get("CDK_OUTDIR")
    assembly = build(outdir, nag=nag).app.synth()
    for stack in assembly.stacks:
        print(f"{stack.stack_name}: {Path(assembly.directory) / stack.template_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
