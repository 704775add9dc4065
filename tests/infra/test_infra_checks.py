"""The offline policy checks over the app: cdk-nag (AwsSolutions), cfn-lint, checkov. Each can fail."""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks
from infra_helpers import Synth, cfn_lint, checkov

from flywheel_infra.acks import acknowledged
from flywheel_infra.app import build

pytestmark = pytest.mark.infra


def _violations(app: cdk.App) -> list[str]:
    report = AwsSolutionsChecks().validate_scope(app)
    return [v.rule_name for v in report.violations]


def test_every_aws_solutions_finding_is_acknowledged(synth: Synth) -> None:
    assert _violations(synth.flywheel.app) == []


def test_every_acknowledgment_carries_a_written_reason(synth: Synth) -> None:
    acks = acknowledged(synth.flywheel.app)
    assert acks, "the app acknowledges nothing: cdk-nag was not consulted"
    short = {rule: reason for rule, reason in acks.items() if len(reason) < 40}
    assert not short, short


def test_a_synth_with_cdk_nag_succeeds(tmp_path: Path) -> None:
    assembly = build(tmp_path, nag=True).app.synth()
    assert {s.stack_name for s in assembly.stacks} == {
        "FlywheelNetwork", "FlywheelData", "FlywheelKafka", "FlywheelCluster"}


def test_an_unacknowledged_finding_is_reported_and_fails_the_nag_synth(tmp_path: Path) -> None:
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Bad")
    s3.Bucket(stack, "Open")  # no access logs, no TLS-only policy
    user = iam.User(stack, "Someone")
    user.add_to_policy(iam.PolicyStatement(actions=["s3:*"], resources=["*"]))
    found = _violations(app)
    assert "AwsSolutions-S1" in found and "AwsSolutions-IAM5[Action::s3:*]" in found
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()


def test_cfn_lint_passes_on_every_template(synth: Synth) -> None:
    run = cfn_lint(*synth.template_files)
    assert run.returncode == 0, run.stdout + run.stderr


def test_cfn_lint_catches_a_broken_template(tmp_path: Path) -> None:
    bad = tmp_path / "bad.template.json"
    bad.write_text(json.dumps({"Resources": {"B": {"Type": "AWS::S3::Bucket", "Properties": {
        "VersioningConfiguration": {"Status": "Sometimes"}}}}}))
    run = cfn_lint(bad)
    assert run.returncode != 0 and "Sometimes" in run.stdout


def test_checkov_finds_nothing_unexplained(synth: Synth) -> None:
    reports = checkov(*synth.template_files)
    failed = [(f["check_id"], f["resource"]) for r in reports for f in r["results"]["failed_checks"]]
    assert failed == []
    skipped = [f for r in reports for f in r["results"]["skipped_checks"]]
    assert skipped and all(len((f.get("check_result") or {}).get("suppress_comment") or "") >= 20
                           for f in skipped), "every checkov skip needs its written reason"


def test_checkov_catches_a_weak_bucket(tmp_path: Path) -> None:
    bad = tmp_path / "bad.template.json"
    bad.write_text(json.dumps({"Resources": {"B": {"Type": "AWS::S3::Bucket", "Properties": {}}}}))
    (report,) = checkov(bad)
    failed = {f["check_id"] for f in report["results"]["failed_checks"]}
    assert {"CKV_AWS_18", "CKV_AWS_21"} <= failed  # no access logging, no versioning
