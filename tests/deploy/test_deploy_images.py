"""Dockerfiles: pinned slim bases, multi-stage, non-root, one dependency group, schemas, console scripts."""

from __future__ import annotations

import re
import tomllib

import pytest

from flywheel_dev import deploy_check

REPO = deploy_check.REPO
SERVICES = ("ingest", "orchestrator", "monitor")
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm$")


def dockerfile(name: str) -> str:
    return (REPO / "services" / name / "Dockerfile").read_text()


def base_images(text: str) -> list[str]:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    return [args.get(f.strip("${}"), f) for f in froms if not f.startswith("build")]


@pytest.mark.parametrize("name", [*SERVICES, "training"])
def test_bases_are_pinned_slim_images_and_builds_are_multi_stage(name: str) -> None:
    text = dockerfile(name)
    bases = base_images(text)
    assert len(bases) == 2 and all(PINNED_BASE.match(b) for b in bases), bases
    assert "latest" not in text and "COPY --from=build" in text


@pytest.mark.parametrize("svc", SERVICES)
def test_service_image_installs_only_its_group_and_runs_its_console_script(svc: str) -> None:
    text = dockerfile(svc)
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert f"flywheel-{svc}" in scripts
    installs = re.findall(r"pip install (.*)$", text, re.M)
    assert len(installs) == 1 and "-c constraints.txt" in installs[0] and installs[0].endswith(f"'.[{svc}]'")
    assert "-e " not in installs[0]
    assert f'ENTRYPOINT ["flywheel-{svc}"]' in text
    assert "COPY schemas/ /app/schemas/" in text and "FLYWHEEL_SCHEMA_DIR=/app/schemas" in text


@pytest.mark.parametrize("svc", SERVICES)
def test_service_image_runs_as_the_uid_the_manifests_expect(svc: str) -> None:
    user = re.findall(r"^USER (\d+):(\d+)$", dockerfile(svc), re.M)
    pod = next(o for o in deploy_check.render_overlay("local")
               if o["kind"] == "Deployment" and o["metadata"]["name"] == f"flywheel-{svc}")
    assert user == [(str(pod["spec"]["template"]["spec"]["securityContext"]["runAsUser"]),) * 2]


def test_training_image_follows_the_sagemaker_contract() -> None:
    text = dockerfile("training")
    assert 'CMD ["train"]' in text and "/usr/local/bin/train" in text and "ENTRYPOINT" not in text
    assert "services/training/requirements.txt" in text and "SM_MODEL_DIR=/opt/ml/model" in text
    assert (REPO / "services" / "training" / "train.py").is_file()


def test_dockerignore_allows_only_what_images_need() -> None:
    lines = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "constraints.txt", "README.md", "flywheel", "services", "schemas"}
