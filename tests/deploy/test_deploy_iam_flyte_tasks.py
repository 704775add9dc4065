"""Flyte's task pods (engine flyte-remote, docs/decisions/0014-flyte-remote.md) may make every call the training
workflow's tasks make, with the names they really generate, and nothing beyond a run's own keys and job.

The pod is reproduced as Flyte runs it: the environment registration sets on the tasks (the env files the
skaffold hook passes to `flywheel-orchestrator flyte register`, through `flyteregistry.task_environment`), the
task context the pod builds from it (`adapters.task_context_from_env`, only the AWS clients swapped for the
recording fakes of test_deploy_iam_names.py), and the real task functions prepare -> train -> evaluate ->
register, with SageMaker answering Completed. The calls are judged against deploy/iam/flywheel-flyte-tasks.json
(the document infra's FlyteTaskRole carries; tests/infra checks that) by the same evaluator.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from test_deploy_iam_names import (
    MODEL,
    OTHER_MODEL,
    Call,
    RecordingS3,
    RecordingSageMaker,
    allowed,
    as_list,
    dataset_key,
    denied,
    deployed,
    permits,
    policy,
    run_id,
    settings,
    where,
    without,
)

from flywheel.catalogue import Service
from flywheel.lifecycle import STAGES_KEY
from flywheel_dev import deploy_check, iam
from flywheel_ingest import ids as ingest_ids
from flywheel_orchestrator import adapters, ids, statestore, trainingset
from flywheel_orchestrator.flyteregistry import read_env_files, task_environment
from flywheel_orchestrator.launchers.base import ChannelChanged
from flywheel_orchestrator.launchers.local import job_key

pytestmark = pytest.mark.deploy

TASKS = iam.FLYTE_TASKS_ROLE
# The settings the policy is made from: a task pod must read the same values from its registered environment.
POLICY_SETTINGS = ("data_bucket", "artifact_bucket", "launcher", "sagemaker_role_arn", "aws_region",
                   "sagemaker_volume_kms_key_id", "sagemaker_output_kms_key_id", "sagemaker_subnets",
                   "sagemaker_security_group_ids", "sagemaker_image_uri", "sagemaker_gpu_image_uri")


def registered_environment() -> dict[str, str]:
    """The FLYWHEEL_* settings `flyte register` sets on the tasks, from the env files the skaffold hook names."""
    hook = (deploy_check.REPO / "skaffold.yaml").read_text()
    files = re.findall(r"--env-file\s+([\w./-]+)", hook)
    assert files, "the skaffold hook names no --env-file"
    return task_environment(read_env_files(deploy_check.REPO / f for f in files))


class CompletingSageMaker(RecordingSageMaker):
    """Records like RecordingSageMaker; a created job is Completed, its artifacts where SageMaker puts them."""

    def describe_training_job(self, TrainingJobName: str) -> dict[str, Any]:
        found = super().describe_training_job(TrainingJobName)
        request = self.requests[TrainingJobName]
        output = request["OutputDataConfig"]["S3OutputPath"]
        return {**found, "TrainingJobStatus": "Completed", "TrainingJobArn": self._arn(TrainingJobName),
                "ModelArtifacts": {"S3ModelArtifacts": f"{output}{TrainingJobName}/output/model.tar.gz"}}


def output_archive() -> bytes:
    """SageMaker's output.tar.gz, holding the entry point's metrics.json (what evaluate reads)."""
    body = json.dumps({"metrics": {"accuracy": 0.9}, "baseline_metrics": {"accuracy": 0.5}}).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("metrics.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


@dataclass
class PodRun:
    run: str
    calls: list[Call]
    objects: dict[str, bytes]  # the artifact bucket's keys afterwards (the fakes key objects by key alone)
    request: dict[str, Any]  # the CreateTrainingJob request


def pod_run(monkeypatch: pytest.MonkeyPatch, model: str = MODEL, etag: str = "abc") -> PodRun:
    """One run's four tasks as they execute in Flyte pods; `etag` other than the manifest's: a changed object."""
    from flywheel_orchestrator import workflow

    for name in [k for k in os.environ if k.startswith("FLYWHEEL_")]:
        monkeypatch.delenv(name)
    for name, value in registered_environment().items():
        monkeypatch.setenv(name, value)
    ingest = settings(Service.INGEST)
    data_bucket = settings(Service.ORCHESTRATOR).data_bucket
    run, key = run_id(model), dataset_key(model)
    manifest_key = ingest_ids.manifest_key(ingest.manifest_prefix, model, f"{model}-v1")
    manifest = {"bucket": data_bucket, "prefix": key.rsplit("/", 1)[0] + "/", "row_count": 8, "model_id": model,
                "dataset_version_id": f"{model}-v1",
                "objects": [{"key": key, "etag": "abc", "version_id": "3HL4kqtJlcpXroDTDmJ", "rows": 8}]}
    s3 = RecordingS3({manifest_key: json.dumps(manifest).encode(),
                      f"{ids.output_prefix(model, run)}output/output.tar.gz": output_archive()}, etag=etag)
    sm = CompletingSageMaker()
    clients = {"s3": s3, "sagemaker": sm}
    monkeypatch.setattr(adapters, "aws_client", lambda _settings, service, **_: clients[service])
    monkeypatch.setattr(workflow, "active", lambda: None)  # no executor around: the pod's own context

    channel = workflow.prepare.task_function(run, model, [f"s3://{data_bucket}/{manifest_key}"])
    output = workflow.train.task_function(run, model, channel, {"epochs": "1"}, {"flywheel:run_id": run}, "")
    evaluated = workflow.evaluate.task_function(run, model, output)
    workflow.register.task_function(run, model, evaluated)
    return PodRun(run, s3.calls + sm.calls, s3.objects, sm.requests[run])


@pytest.fixture(scope="module")
def tasks_run() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        yield pod_run(mp)


@cache
def tasks_policy() -> dict[str, Any]:
    return policy(TASKS)


def test_every_call_the_workflow_tasks_make_in_a_pod_is_allowed(tasks_run: PodRun) -> None:
    actions = {c.action for c in tasks_run.calls}
    assert {"s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "sagemaker:CreateTrainingJob",
            "sagemaker:DescribeTrainingJob", "sagemaker:AddTags", "iam:PassRole"} <= actions
    found = denied(tasks_policy(), tasks_run.calls)
    assert not found, "denied:\n" + "\n".join(found)


def test_the_pod_writes_the_run_s_training_manifest_channel_and_registration(tasks_run: PodRun) -> None:
    """The keys the tasks wrote are the ones the code names for the run, under its prefix."""
    mine = ids.output_prefix(MODEL, tasks_run.run)
    artifacts = iam.s3(settings(Service.ORCHESTRATOR).artifact_bucket)
    writes = {c.resource.removeprefix(f"{artifacts}/") for c in tasks_run.calls if c.action == "s3:PutObject"}
    assert trainingset.manifest_key(MODEL, tasks_run.run) in writes
    assert f"{mine}registration.json" in writes and f"{mine}input/train.manifest" in writes
    assert all(w.startswith(f"{mine}input/") or w in (trainingset.manifest_key(MODEL, tasks_run.run),
                                                       f"{mine}registration.json") for w in writes), writes
    assert tasks_run.request["TrainingJobName"] == tasks_run.run and tasks_run.run.startswith(ids.RUN_ID_PREFIX)
    assert tasks_run.request["RoleArn"] == settings(Service.ORCHESTRATOR).sagemaker_role_arn


@cache
def changed_calls() -> tuple[Call, ...]:
    """A run whose pinned object changed after validation: train fails it and drops the copy it made."""
    with pytest.MonkeyPatch.context() as mp:
        with pytest.raises(ChannelChanged):
            pod_run(mp, OTHER_MODEL, etag="changed")
        return tuple(adapters.aws_client(None, "s3").calls)


def test_the_train_task_drops_a_changed_object_s_copy_as_allowed() -> None:
    """pinning.copy deletes a copy whose ETag changed: the one DeleteObject the role has, and it is needed."""
    s3_calls = list(changed_calls())
    deletes = [c for c in s3_calls if c.action == "s3:DeleteObject"]
    assert deletes and not denied(tasks_policy(), s3_calls)
    assert denied(without(tasks_policy(), "DropAChangedChannelCopy"), deletes)


def test_the_task_role_keeps_to_a_run_s_keys_and_job(tasks_run: PodRun) -> None:
    """No dataset, manifest or ingest state write; not the stage store, the orchestrator's state, the local
    launcher's jobs, a model output (SageMaker's to write) or another bucket; no stop, no other job name, no
    other role passed; no Kafka and no schema registry."""
    doc, orch, ingest = tasks_policy(), settings(Service.ORCHESTRATOR), settings(Service.INGEST)
    data, artifacts = orch.data_bucket, orch.artifact_bucket
    mine = ids.output_prefix(MODEL, tasks_run.run)
    for key in (dataset_key(), dataset_key(OTHER_MODEL), ingest_ids.manifest_key(ingest.manifest_prefix, MODEL, "v9"),
                ingest_ids.claim_key(ingest.state_prefix, MODEL, "subject"),
                ingest_ids.done_key(ingest.state_prefix, MODEL, dataset_key()),
                ingest_ids.cursor_key(ingest.state_prefix, ingest.dataset_prefixes[0]),
                f"{ingest.dataset_prefixes[0]}{MODEL}/feedback-1/part-0000.jsonl"):
        for action in ("s3:PutObject", "s3:DeleteObject"):
            assert not allowed(doc, action, iam.s3(data, key)), (action, key)
    for key in (STAGES_KEY.format(model_id=MODEL), statestore.state_key(MODEL), statestore.run_key(tasks_run.run),
                statestore.MIGRATED_KEY, job_key(tasks_run.run, "status.json")):
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            assert not allowed(doc, action, iam.s3(artifacts, key)), (action, key)
    for key in (f"{mine}output/model.tar.gz", f"{mine}output/output.tar.gz", f"{mine}checkpoints/step-1.pt",
                f"models/{MODEL}/training-manifest.json", f"models/{MODEL}/registration.json", "index.html"):
        assert not allowed(doc, "s3:PutObject", iam.s3(artifacts, key)), key
    for key in (trainingset.manifest_key(MODEL, tasks_run.run), f"{mine}registration.json"):
        assert not allowed(doc, "s3:DeleteObject", iam.s3(artifacts, key)), key
    assert not allowed(doc, "s3:GetObject", iam.s3("some-other-bucket", dataset_key()))
    job = f"arn:aws:sagemaker:{where().region}:{where().account}:training-job/"
    assert not allowed(doc, "sagemaker:StopTrainingJob", job + tasks_run.run)  # the orchestrator stops jobs
    assert not allowed(doc, "sagemaker:CreateTrainingJob", job + "someone-elses-job")
    orchestrator_role = orch.sagemaker_role_arn.replace("flywheel-sagemaker-execution", "flywheel-orchestrator")
    assert not allowed(doc, "iam:PassRole", orchestrator_role, {"iam:PassedToService": "sagemaker.amazonaws.com"})
    assert not allowed(doc, "iam:PassRole", orch.sagemaker_role_arn, {"iam:PassedToService": "ec2.amazonaws.com"})
    services = {a.split(":")[0] for st in doc["Statement"] for a in as_list(st["Action"])}
    assert services == {"s3", "sagemaker", "iam"}


def test_the_task_grants_are_the_orchestrator_s_for_the_same_calls() -> None:
    """Each statement is the orchestrator's statement of that name, or a part of it (derived, not copied)."""
    orch = {st["Sid"]: st for st in policy(deployed()[Service.ORCHESTRATOR].role)["Statement"]}
    for st in tasks_policy()["Statement"]:
        theirs = orch[st["Sid"]]
        assert set(as_list(st["Action"])) <= set(as_list(theirs["Action"])), st["Sid"]
        assert as_list(st["Resource"]) == as_list(theirs["Resource"]), st["Sid"]
        assert st.get("Condition") == theirs.get("Condition"), st["Sid"]


def test_every_grant_but_listing_is_needed_by_a_call(tasks_run: PodRun) -> None:
    """Drop any statement and a recorded call is denied. ListBuckets is kept although no task lists: without it
    S3 answers a missing key with 403 instead of 404, and the pinning reads NoSuchKey as "deleted"."""
    calls = tasks_run.calls + list(changed_calls())
    for st in tasks_policy()["Statement"]:
        if st["Sid"] != "ListBuckets":
            assert denied(without(tasks_policy(), st["Sid"]), calls), st["Sid"]


def test_the_task_pods_read_the_settings_the_policy_is_made_from() -> None:
    """Registration sets the tasks' environment from the env files (skaffold hook); the generator reads the
    overlay's rendered ConfigMaps: both give the same buckets, launcher, role and job settings."""
    pod = iam._from_environment(type(settings(Service.ORCHESTRATOR)), registered_environment())
    generated = iam.flyte_tasks(deployed()[Service.ORCHESTRATOR]).settings
    for name in POLICY_SETTINGS:
        assert getattr(pod, name) == getattr(generated, name), name
    assert generated.artifact_bucket == settings(Service.ORCHESTRATOR).artifact_bucket


def test_the_task_role_trusts_only_the_flywheel_project_s_task_pods() -> None:
    """The ServiceAccount of each domain namespace Flyte makes for the orchestrator's project (the execution's
    namespace among them), exactly (StringEquals), not the services' accounts nor other projects' pods."""
    (st,) = policy(f"{TASKS}.trust")["Statement"]
    assert st["Action"] == "sts:AssumeRoleWithWebIdentity" and set(st["Condition"]) == {"StringEquals"}
    (subjects,) = [as_list(v) for k, v in st["Condition"]["StringEquals"].items() if k.endswith(":sub")]
    orch = settings(Service.ORCHESTRATOR)
    account = orch.flyte_service_account or "default"
    assert subjects == [f"system:serviceaccount:{orch.flyte_project}-{d}:{account}" for d in iam.FLYTE_DOMAINS]
    assert f"system:serviceaccount:{orch.flyte_project}-{orch.flyte_domain}:{account}" in subjects
    assert not [s for s in subjects if "*" in s]
    d = deployed()[Service.ORCHESTRATOR]
    assert f"system:serviceaccount:{d.namespace}:{d.service_account}" not in subjects


def test_the_role_flyte_s_tasks_had_denies_the_calls(tasks_run: PodRun) -> None:
    """Flyte's bucket alone (the task role before this document): every S3 call on Flywheel's buckets and every
    SageMaker call of a run is denied, which is what this file exists to catch."""
    flyte_only = {"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                                 "Resource": "arn:aws:s3:::flyte-bucket/*"}]}
    assert all(not permits(flyte_only, c) for c in tasks_run.calls)
