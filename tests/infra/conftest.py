"""The CDK app synthesized once per session (no AWS account, no network)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest
from infra_helpers import Synth

from flywheel_infra.app import build
from flywheel_infra.names import names


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synth]:
    """The app without cdk-nag (so an unacknowledged finding fails the nag test, not every assertion)."""
    out = tmp_path_factory.mktemp("cdk.out")
    flywheel = build(out)
    assembly = flywheel.app.synth()
    templates = {s.stack_name: json.loads((out / s.template_file).read_text()) for s in assembly.stacks}
    yield Synth(flywheel, names(), out, assembly, templates)
    shutil.rmtree(out, ignore_errors=True)  # the kubectl layer alone is ~60 MB of assets


