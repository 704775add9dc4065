"""Flywheel's AWS infrastructure as an AWS CDK app (docs/decisions/0005-infrastructure-as-code.md)."""

import os

# jsii (aws-cdk-lib's bridge to Node) prints a banner for every process on Node 20, which this project
# runs on purpose; set before anything imports aws_cdk.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")
