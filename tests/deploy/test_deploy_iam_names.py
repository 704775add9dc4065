"""Every AWS call each service makes, with the names the code really generates, is allowed by its IAM
policy in deploy/iam, and nothing beyond its own resources is.

The names come from the code, not from the policies: run ids from the orchestrator's ids, groups from the
Faust apps and the start-up readers (captured from the services' own recovery code), internal topics from
the apps' tables, S3 keys and SageMaker requests recorded from the real adapters and launcher over
recording fake clients, Glue names from the registry adapter. A tiny evaluator decides: action match and
fnmatch of the resource ARN against Allow statements (the documents hold no Deny, which is asserted).
"""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from flywheel import topicreader
from flywheel.catalogue import BY_NAME, TOPICS, Service, consumed_by, produced_by, replayed_by
from flywheel.registry import GlueRegistry
from flywheel.schemas import SchemaSet
from flywheel.settings import REPO_SCHEMA_DIR, RegistryKind
from flywheel_dev import deploy_check, iam
from flywheel_ingest import ids as ingest_ids
from flywheel_ingest.adapters import S3Store, SqsQueue
from flywheel_ingest.layout import Place as DataPlace
from flywheel_ingest.layout import place as data_place
from flywheel_orchestrator import ids
from flywheel_orchestrator.launchers import pinning
from flywheel_orchestrator.launchers.base import ChannelChanged, JobRequest, Pin
from flywheel_orchestrator.launchers.sagemaker import SageMakerConfig, SageMakerLauncher

IAM = deploy_check.REPO / "deploy" / "iam"
SERVICES = (Service.INGEST, Service.ORCHESTRATOR, Service.MONITOR)
MODEL, OTHER_MODEL = "sentiment-en", "spam-filter"
CLUSTER_UUID = "5a8f1c2e-0b7d-4c3a-9e61-2f4d8c7b1a90-2"  # MSK appends one to every cluster/topic/group ARN


# --- the evaluator ---------------------------------------------------------------------------------------

def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def allowed(doc: dict[str, Any], action: str, resource: str) -> bool:
    """IAM's Allow matching without conditions: exact action, `*`-wildcard resource (crossing '/')."""
    return any(st["Effect"] == "Allow" and action in as_list(st["Action"])
               and any(fnmatchcase(resource, pattern) for pattern in as_list(st["Resource"]))
               for st in doc["Statement"])


def policy(name: str, folder: Path = IAM) -> dict[str, Any]:
    return json.loads((folder / f"{name}.json").read_text())


def test_the_evaluator_matches_like_iam():
    doc = {"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::b/models/*/fw-*/x"}]}
    assert allowed(doc, "s3:GetObject", "arn:aws:s3:::b/models/m/fw-a/x")
    assert allowed(doc, "s3:GetObject", "arn:aws:s3:::b/models/a/b/fw-a/x")  # IAM's * crosses '/'
    assert not allowed(doc, "s3:PutObject", "arn:aws:s3:::b/models/m/fw-a/x")
    assert not allowed(doc, "s3:GetObject", "arn:aws:s3:::b/models/m/flywheel-a/x")


@pytest.mark.parametrize("path", sorted(IAM.glob("*.json")), ids=lambda p: p.name)
def test_documents_only_allow(path: Path):
    assert {st["Effect"] for st in json.loads(path.read_text())["Statement"]} == {"Allow"}


# --- the deployment and the names its code generates ------------------------------------------------------

@cache
def deployed() -> dict[str, iam.Deployed]:
    return iam.deployed()


@cache
def where() -> iam.Place:
    return iam.Place.of(deployed())


def settings(service: str) -> Any:
    return deployed()[service].settings


def kafka(kind: str, name: str) -> str:
    p = where()
    return f"arn:aws:kafka:{p.region}:{p.account}:{kind}/{p.cluster}/{CLUSTER_UUID}" + (f"/{name}" if name else "")


def run_id(model: str = MODEL, kind: str = "NEW_DATA") -> str:
    return ids.run_id(model, f"{model}-v1", kind)


@cache
def faust_names(service: str, tmp: str) -> tuple[str, tuple[str, ...]]:
    """The Faust app's group id and its internal topics, from the service's own create_app."""
    module = __import__(f"flywheel_{service}.app", fromlist=["create_app"])
    local = settings(service).model_copy(update={"data_dir": Path(tmp), "schema_dir": REPO_SCHEMA_DIR,
                                                 "registry": RegistryKind.EMBEDDED})
    app = module.create_app(local)
    return app.conf.id, tuple(t.changelog_topic.get_topic_name() for t in app.tables.values())


class Captured(Exception):
    pass


def replay_reader(service: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The reader name the service's start-up recovery passes to topicreader.read_to_end."""

    def fake_read_to_end(*args: Any, reader: str, **kwargs: Any) -> Any:
        raise Captured(reader)

    with pytest.raises(Captured) as caught:
        if service == Service.ORCHESTRATOR:
            from flywheel_orchestrator import handlers

            monkeypatch.setattr(handlers, "read_to_end", fake_read_to_end)
            asyncio.run(handlers.recover_state(settings(service), None, None))
        else:
            from flywheel_monitor import recovery

            monkeypatch.setattr(recovery, "read_to_end", fake_read_to_end)
            recovery.recover(None, settings(service), None, "monitor")
    return str(caught.value)


@dataclass(frozen=True)
class Call:
    action: str
    resource: str


def kafka_calls(service: str, group: str, internal: tuple[str, ...], readers: list[str]) -> list[Call]:
    calls = [Call("kafka-cluster:Connect", kafka("cluster", "")), Call("kafka-cluster:DescribeCluster", kafka("cluster", ""))]
    for t in produced_by(service):
        calls += [Call("kafka-cluster:WriteData", kafka("topic", t)), Call("kafka-cluster:DescribeTopic", kafka("topic", t)),
                  Call("kafka-cluster:CreateTopic", kafka("topic", t))]
    for t in {*consumed_by(service), *replayed_by(service)}:
        calls += [Call("kafka-cluster:ReadData", kafka("topic", t)), Call("kafka-cluster:DescribeTopic", kafka("topic", t))]
    for t in internal:
        calls += [Call(a, kafka("topic", t)) for a in ("kafka-cluster:CreateTopic", "kafka-cluster:WriteData",
                                                       "kafka-cluster:ReadData", "kafka-cluster:DescribeTopic")]
    for g in (group, *(topicreader.group_id(r) for r in readers)):
        calls += [Call("kafka-cluster:DescribeGroup", kafka("group", g)), Call("kafka-cluster:AlterGroup", kafka("group", g))]
    return calls


def glue_calls(service: str) -> list[Call]:
    """What the Glue registry adapter calls to register the schemas of the service's topics."""

    class NotFound(Exception):
        pass

    class Glue:
        exceptions = type("E", (), {"EntityNotFoundException": NotFound, "AlreadyExistsException": KeyError})
        made: list[tuple[str, dict[str, Any]]] = []

        def __getattr__(self, op: str) -> Any:
            def call(**kwargs: Any) -> Any:
                self.made.append((op, kwargs))
                if op == "get_schema_by_definition":
                    raise NotFound(op)
                return {"SchemaVersionId": "6f1c6a0e-9f2b-4d5e-8a3c-1b2c3d4e5f60"}
            return call

    glue, registry_name, p = Glue(), settings(service).glue_registry_name, where()
    registry = GlueRegistry(SchemaSet(REPO_SCHEMA_DIR), glue, registry_name)
    for t in {*produced_by(service), *consumed_by(service), *replayed_by(service)}:
        registry.header_for(BY_NAME[t].value_schema)
    calls = []
    for op, kwargs in glue.made:
        action = "glue:" + "".join(w.capitalize() for w in op.split("_"))
        if "SchemaName" in kwargs or "SchemaId" in kwargs:
            name = kwargs.get("SchemaName") or kwargs["SchemaId"]["SchemaName"]
            calls.append(Call(action, f"arn:aws:glue:{p.region}:{p.account}:schema/{registry_name}/{name}"))
        if op == "create_schema":
            calls.append(Call(action, f"arn:aws:glue:{p.region}:{p.account}:registry/{registry_name}"))
        if op == "create_registry":
            calls.append(Call(action, f"arn:aws:glue:{p.region}:{p.account}:registry/{kwargs['RegistryName']}"))
    assert {c.action for c in calls} >= {"glue:GetSchemaByDefinition", "glue:CreateRegistry", "glue:CreateSchema"}
    return calls


# --- recording fakes of the AWS clients (the edge), turned into IAM calls ---------------------------------

class Body(io.BytesIO):
    def iter_chunks(self, size: int) -> Any:
        yield from iter(lambda: self.read(size), b"")


class RecordingS3:
    """Answers like S3 (bodies from `objects`, or '{}'), and records each call as the IAM actions it needs."""

    def __init__(self, objects: dict[str, bytes] | None = None, etag: str = "abc") -> None:
        self.objects, self.etag, self.calls = objects or {}, etag, []

    def _read(self, bucket: str, key: str, version: str | None) -> None:
        self.calls.append(Call("s3:GetObject", iam.s3(bucket, key)))
        if version:
            self.calls.append(Call("s3:GetObjectVersion", iam.s3(bucket, key)))

    def get_object(self, Bucket: str, Key: str, VersionId: str | None = None, **_: Any) -> dict[str, Any]:
        self._read(Bucket, Key, VersionId)
        return {"Body": Body(self.objects.get(Key, b"{}")), "ETag": f'"{self.etag}"'}

    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self._read(Bucket, Key, None)
        return {}

    def put_object(self, Bucket: str, Key: str, Body: bytes = b"", **_: Any) -> dict[str, Any]:
        self.calls.append(Call("s3:PutObject", iam.s3(Bucket, Key)))
        self.objects[Key] = Body
        return {}

    def copy_object(self, Bucket: str, Key: str, CopySource: dict[str, str], **_: Any) -> dict[str, Any]:
        self._read(CopySource["Bucket"], CopySource["Key"], CopySource.get("VersionId"))
        self.calls.append(Call("s3:PutObject", iam.s3(Bucket, Key)))
        return {"CopyObjectResult": {"ETag": f'"{self.etag}"'}}

    def delete_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self.calls.append(Call("s3:DeleteObject", iam.s3(Bucket, Key)))
        return {}

    def list_objects_v2(self, Bucket: str, **_: Any) -> dict[str, Any]:
        self.calls.append(Call("s3:ListBucket", iam.s3(Bucket)))
        return {"Contents": [], "IsTruncated": False}


class RecordingSageMaker:
    def __init__(self) -> None:
        self.requests: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []

    def _arn(self, name: str) -> str:
        return f"arn:aws:sagemaker:{where().region}:{where().account}:training-job/{name.lower()}"

    def describe_training_job(self, TrainingJobName: str) -> dict[str, Any]:
        self.calls.append(Call("sagemaker:DescribeTrainingJob", self._arn(TrainingJobName)))
        if TrainingJobName not in self.requests:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "not found"}}, "Describe")
        return {"TrainingJobStatus": "InProgress"}

    def create_training_job(self, **request: Any) -> dict[str, Any]:
        self.requests[request["TrainingJobName"]] = request
        self.calls.append(Call("sagemaker:CreateTrainingJob", self._arn(request["TrainingJobName"])))
        if request.get("Tags"):
            self.calls.append(Call("sagemaker:AddTags", self._arn(request["TrainingJobName"])))
        self.calls.append(Call("iam:PassRole", request["RoleArn"]))
        return {}

    def stop_training_job(self, TrainingJobName: str) -> dict[str, Any]:
        self.calls.append(Call("sagemaker:StopTrainingJob", self._arn(TrainingJobName)))
        return {}


def dataset_key(model: str = MODEL) -> str:
    key = f"{settings(Service.INGEST).dataset_prefixes[0]}{model}/{model}-v1/part-0001.jsonl"
    assert isinstance(data_place(key, settings(Service.INGEST).dataset_prefixes), DataPlace)
    return key


def ingest_s3_calls() -> list[Call]:
    s = settings(Service.INGEST)
    s3 = RecordingS3()
    store = S3Store(s3)
    key = dataset_key()
    store.list_page(s.data_bucket, s.dataset_prefixes[0], "", 1000)
    list(store.chunks(s.data_bucket, key, 1024))
    for own in (ingest_ids.manifest_key(s.manifest_prefix, MODEL, f"{MODEL}-v1"),
                ingest_ids.done_key(s.state_prefix, MODEL, key),
                ingest_ids.cursor_key(s.state_prefix, s.dataset_prefixes[0])):
        store.put_json(s.data_bucket, own, {})
        store.get_json(s.data_bucket, own)
        store.exists(s.data_bucket, own)
    return s3.calls


def ingest_sqs_calls() -> list[Call]:
    s = settings(Service.INGEST)
    ops: list[str] = []

    class Sqs:
        def __getattr__(self, op: str) -> Any:
            def call(**kwargs: Any) -> dict[str, Any]:
                ops.append(op)
                return {}
            return call

    queue = SqsQueue(Sqs(), s.notification_queue_url, 1, 60, 10)
    queue.receive(), queue.extend(["r1"]), queue.delete(["r1"])
    actions = {"receive_message": "sqs:ReceiveMessage", "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
               "delete_message_batch": "sqs:DeleteMessage"}
    _, account, name = s.notification_queue_url.rstrip("/").rsplit("/", 2)
    return [Call(actions[op], f"arn:aws:sqs:{where().region}:{account}:{name}") for op in ops]


@dataclass
class RunCalls:
    orchestrator: list[Call]
    execution_role: list[Call]
    output_prefix: str


def training_run(model: str = MODEL) -> RunCalls:
    """Launch, watch and stop one run with the real launcher, then read its outputs with the real workflow
    tasks; returns the orchestrator's calls and the calls SageMaker makes as the execution role."""
    from flywheel_orchestrator import workflow
    from flywheel_orchestrator.taskcontext import TaskContext, scoped

    orch, ingest = settings(Service.ORCHESTRATOR), settings(Service.INGEST)
    run = run_id(model)
    key = dataset_key(model)
    manifest_key = ingest_ids.manifest_key(ingest.manifest_prefix, model, f"{model}-v1")
    manifest = {"bucket": orch.data_bucket, "prefix": key.rsplit("/", 1)[0] + "/", "row_count": 8,
                "objects": [{"key": key, "etag": "abc", "version_id": "3HL4kqtJlcpXroDTDmJ", "rows": 8}]}
    s3 = RecordingS3({manifest_key: json.dumps(manifest).encode(),
                      "metrics.json": json.dumps({"metrics": {"accuracy": 0.9}, "baseline_metrics": {"accuracy": 0.5}}).encode()})
    sm = RecordingSageMaker()
    launcher = SageMakerLauncher(sm, SageMakerConfig(role_arn=orch.sagemaker_role_arn, image_uri=orch.sagemaker_image_uri,
                                                     use_spot=True), sleep=lambda s: None, s3=s3)
    with scoped(TaskContext(s3, launcher, orch.artifact_bucket)):
        channel = workflow.prepare.task_function(f"s3://{orch.data_bucket}/{manifest_key}")
    request = JobRequest(job_name=run, model_id=model, data_bucket=channel.bucket, data_prefix=channel.prefix,
                         data_keys=tuple(channel.keys), output_bucket=orch.artifact_bucket,
                         output_prefix=ids.output_prefix(model, run), data_etags=tuple(channel.etags),
                         data_version_ids=tuple(channel.version_ids), tags={"flywheel:run_id": run})
    assert launcher.start(request)
    launcher.status(run)
    launcher.stop(run)
    # A pinned object that changed: the copy is dropped again.
    with pytest.raises(ChannelChanged):
        pinning.copy(s3_changed(s3), orch.data_bucket, Pin(key, "abc"),
                     orch.artifact_bucket, f"{request.output_prefix}input/train/x")

    # What SageMaker does as the execution role: read the channel (manifest file and what it lists), write
    # the model under <S3OutputPath><job name>/output/, and checkpoints.
    created = sm.requests[run]
    role: list[Call] = []
    channel_uri = created["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    bucket, manifest_file = channel_uri.removeprefix("s3://").split("/", 1)
    role.append(Call("s3:GetObject", iam.s3(bucket, manifest_file)))
    listing = json.loads(s3.objects[manifest_file])
    base = listing[0]["prefix"].removeprefix("s3://")
    role += [Call("s3:GetObject", f"arn:aws:s3:::{base}{name}") for name in listing[1:]]
    output = created["OutputDataConfig"]["S3OutputPath"].removeprefix("s3://") + f"{run}/output/"
    role += [Call("s3:PutObject", f"arn:aws:s3:::{output}{f}") for f in ("model.tar.gz", "output.tar.gz")]
    checkpoints = created["CheckpointConfig"]["S3Uri"].removeprefix("s3://")
    role += [Call(a, f"arn:aws:s3:::{checkpoints}step-100.pt") for a in ("s3:PutObject", "s3:GetObject")]
    image = created["AlgorithmSpecification"]["TrainingImage"]
    host, _, path = image.partition("/")
    role.append(Call("ecr:BatchGetImage",
                     f"arn:aws:ecr:{host.split('.')[3]}:{host.split('.')[0]}:repository/{path.rsplit(':', 1)[0]}"))

    # The workflow reads the metrics SageMaker wrote and registers the version beside its artifact.
    model_uri = f"s3://{output}model.tar.gz"
    s3.objects[f"{output.split('/', 1)[1]}metrics.json"] = s3.objects["metrics.json"]
    with scoped(TaskContext(s3, launcher, orch.artifact_bucket)):
        evaluated = workflow.evaluate.task_function(run, model, workflow.TrainOutput(
            model_uri, model_uri.rsplit("/", 1)[0] + "/metrics.json", 1.0))
        workflow.register.task_function(run, model, evaluated)
    return RunCalls(s3.calls + sm.calls, role, request.output_prefix)


def s3_changed(s3: RecordingS3) -> RecordingS3:
    changed = RecordingS3(etag="changed")
    changed.calls = s3.calls  # one record of the orchestrator's calls
    return changed


@cache
def run_calls() -> RunCalls:
    return training_run()


# --- the checks ------------------------------------------------------------------------------------------

def service_calls(service: str, tmp: str, monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    group, internal = faust_names(service, tmp)
    readers = [] if service == Service.INGEST else [replay_reader(service, monkeypatch)]
    calls = kafka_calls(service, group, internal, readers) + glue_calls(service)
    if service == Service.INGEST:
        calls += ingest_s3_calls() + ingest_sqs_calls()
    if service == Service.ORCHESTRATOR:
        calls += run_calls().orchestrator
    return calls


@pytest.mark.parametrize("service", SERVICES)
def test_every_call_the_service_makes_is_allowed(service, tmp_path_factory, monkeypatch):
    doc = policy(deployed()[service].role)
    calls = service_calls(service, str(tmp_path_factory.mktemp(service)), monkeypatch)
    denied = sorted({f"{c.action} {c.resource}" for c in calls if not allowed(doc, c.action, c.resource)})
    assert not denied, "denied:\n" + "\n".join(denied)


def test_the_run_id_is_the_training_job_name_the_orchestrator_may_manage():
    doc, run = policy(deployed()[Service.ORCHESTRATOR].role), run_id()
    arn = f"arn:aws:sagemaker:{where().region}:{where().account}:training-job/{run}"
    for action in ("sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"):
        assert allowed(doc, action, arn), f"{action} on {run} is denied"
        assert not allowed(doc, action, arn.replace(run, "someone-elses-job"))


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_kept_to_its_own_topics_and_groups(service, tmp_path_factory, monkeypatch):
    doc = policy(deployed()[service].role)
    writes, reads = set(produced_by(service)), {*consumed_by(service), *replayed_by(service)}
    for t in TOPICS:
        assert allowed(doc, "kafka-cluster:WriteData", kafka("topic", t.name)) == (t.name in writes), t.name
        assert allowed(doc, "kafka-cluster:ReadData", kafka("topic", t.name)) == (t.name in reads), t.name
    for other in set(SERVICES) - {service}:
        group, internal = faust_names(other, str(tmp_path_factory.mktemp(other)))
        assert not allowed(doc, "kafka-cluster:AlterGroup", kafka("group", group))
        for name in internal:
            assert not allowed(doc, "kafka-cluster:ReadData", kafka("topic", name))
        if other != Service.INGEST:
            reader_group = topicreader.group_id(replay_reader(other, monkeypatch))
            assert not allowed(doc, "kafka-cluster:AlterGroup", kafka("group", reader_group))


def test_services_touch_no_aws_resource_of_another():
    ingest, orch, monitor = (policy(deployed()[s].role) for s in SERVICES)
    artifacts = settings(Service.ORCHESTRATOR).artifact_bucket
    for call in run_calls().orchestrator:  # runs, jobs, the execution role: the orchestrator's alone
        if call.action.startswith(("sagemaker:", "iam:")) or f":::{artifacts}" in call.resource:
            assert not allowed(ingest, call.action, call.resource), call
            assert not allowed(monitor, call.action, call.resource), call
    for call in ingest_s3_calls() + ingest_sqs_calls():  # manifests, state, the queue: ingest's to write
        if call.action != "s3:GetObject" and call.action != "s3:ListBucket":
            assert not allowed(orch, call.action, call.resource), call
        assert not allowed(monitor, call.action, call.resource), call
    data = settings(Service.INGEST).data_bucket
    assert not allowed(orch, "s3:PutObject", iam.s3(data, dataset_key()))  # no service rewrites datasets
    assert not allowed(ingest, "s3:PutObject", iam.s3(data, dataset_key()))


def test_sagemaker_role_reads_its_channel_and_writes_its_outputs():
    doc = policy("flywheel-sagemaker-execution")
    calls = run_calls().execution_role
    denied = sorted({f"{c.action} {c.resource}" for c in calls if not allowed(doc, c.action, c.resource)})
    assert not denied, "denied:\n" + "\n".join(denied)


def test_sagemaker_role_writes_only_its_runs_outputs():
    """Not a run's channel (its own or another's), not a registration, not the data bucket, nothing outside
    a run's output and checkpoint prefixes (one role serves every run: see docs/deploy.md)."""
    doc, orch = policy("flywheel-sagemaker-execution"), settings(Service.ORCHESTRATOR)
    mine, other = run_calls().output_prefix, ids.output_prefix(OTHER_MODEL, run_id(OTHER_MODEL, "MANUAL"))
    assert allowed(doc, "s3:PutObject", iam.s3(orch.artifact_bucket, f"{mine}output/model.tar.gz"))
    for key in (f"{mine}input/train/part.jsonl", f"{mine}input/train.manifest", f"{mine}registration.json",
                f"{other}input/train.manifest", f"{other}registration.json", f"models/{MODEL}/model.tar.gz",
                "index.html"):
        assert not allowed(doc, "s3:PutObject", iam.s3(orch.artifact_bucket, key)), key
    assert not allowed(doc, "s3:PutObject", iam.s3(orch.data_bucket, dataset_key()))
    assert not allowed(doc, "s3:GetObject", iam.s3(orch.data_bucket, dataset_key()))  # only the pinned copies
    for action in ("s3:DeleteObject", "sagemaker:CreateTrainingJob", "iam:PassRole"):
        assert not allowed(doc, action, iam.s3(orch.artifact_bucket, f"{mine}output/model.tar.gz"))


def test_only_run_named_training_jobs_may_assume_the_execution_role():
    (st,) = policy("flywheel-sagemaker-execution.trust")["Statement"]
    pattern = st["Condition"]["ArnLike"]["aws:SourceArn"]
    assert fnmatchcase(f"arn:aws:sagemaker:{where().region}:{where().account}:training-job/{run_id()}", pattern)
    assert st["Condition"]["StringEquals"]["aws:SourceAccount"] == where().account


def test_the_checked_names_fail_the_documents_as_first_committed(tmp_path):
    """The old grant training-job/flywheel-* is exactly what this file exists to catch."""
    old = policy(deployed()[Service.ORCHESTRATOR].role)
    for st in old["Statement"]:
        st["Resource"] = [r.replace(f"training-job/{ids.RUN_ID_PREFIX}*", "training-job/flywheel-*")
                          for r in as_list(st["Resource"])]
    arn = f"arn:aws:sagemaker:{where().region}:{where().account}:training-job/{run_id()}"
    assert not allowed(old, "sagemaker:CreateTrainingJob", arn)
