"""Helpers of the infra tests: the synthesized app, template rendering, cfn-lint and checkov runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")

from flywheel_infra.app import Flywheel  # noqa: E402
from flywheel_infra.names import Names  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CHECKOV_VENV = REPO / ".venv" / "checkov"


@dataclass
class Synth:
    flywheel: Flywheel
    names: Names
    directory: Path
    assembly: Any  # aws_cdk.cx_api.CloudAssembly
    templates: dict[str, dict[str, Any]]  # stack name -> template (top-level stacks)

    @property
    def template_files(self) -> list[Path]:
        """Every template CDK wrote, nested stacks (EKS's providers) included."""
        return sorted(self.directory.glob("*.template.json"))

    def resources(self, stack: str, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.templates[stack]["Resources"].items() if v["Type"] == kind}


def render(value: Any, account: str, region: str) -> Any:
    """A template value with Fn::Join and the pseudo parameters resolved; other references as <Ref>."""
    if isinstance(value, list):
        return [render(v, account, region) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Fn::Join"}:
        sep, parts = value["Fn::Join"]
        return sep.join(str(render(p, account, region)) for p in parts)
    if set(value) == {"Ref"}:
        return {"AWS::AccountId": account, "AWS::Region": region, "AWS::Partition": "aws"}.get(
            value["Ref"], f"<{value['Ref']}>")
    if set(value) == {"Fn::GetAtt"}:
        return "<{}>".format(".".join(value["Fn::GetAtt"]))
    if set(value) == {"Fn::ImportValue"}:
        return f"<{value['Fn::ImportValue']}>"
    return {k: render(v, account, region) for k, v in value.items()}


def normalized(policy: dict[str, Any]) -> list[dict[str, Any]]:
    """Statements compared by meaning: one value or a list of them is the same grant."""

    def as_list(v: Any) -> list[Any]:
        return sorted(v if isinstance(v, list) else [v], key=json.dumps)

    return sorted(({**s, "Action": as_list(s["Action"]), "Resource": as_list(s["Resource"])}
                   for s in policy["Statement"]), key=lambda s: s.get("Sid", ""))


def cfn_lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    # W3005: CDK writes DependsOn that cfn-lint deems redundant (its own references already order them).
    return subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), "-i", "W3005", "--", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def checkov_binary() -> Path:
    found = Path(os.environ.get("FLYWHEEL_CHECKOV", CHECKOV_VENV / "bin" / "checkov"))
    if not found.is_file():
        pytest.skip(f"checkov is not installed ({found}); `make checkov` gives it its own venv")
    return found


def checkov(*paths: Path) -> list[dict[str, Any]]:
    """checkov's JSON report per file, offline (no policy download, no version check)."""
    args = [str(checkov_binary()), "--skip-download", "--compact", "-o", "json",
            "--framework", "cloudformation"]
    for p in paths:
        args += ["-f", str(p)]
    env = {**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}
    run = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert run.stdout.strip(), f"checkov printed no report (rc {run.returncode}): {run.stderr[-2000:]}"
    report = json.loads(run.stdout)
    return report if isinstance(report, list) else [report]
