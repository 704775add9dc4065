"""Every AWS call each service makes, with the names the code really generates, is allowed by its IAM
policy in deploy/iam, and nothing beyond its own resources is.

The names come from the code, not from the policies: run ids from the orchestrator's ids, groups from the
Faust apps, the start-up readers and serving's event follower (captured from the services' own code),
internal topics from the apps' tables, S3 keys and SageMaker requests recorded from the real adapters,
launcher, workflow tasks, promotions (the stage store, flywheel.lifecycle) and serving's start-up over
recording fake clients, Glue names from the registry adapter. A tiny evaluator decides: action match,
fnmatch of the resource ARN against Allow statements, and the few condition operators the documents use
(the documents hold no Deny, which is asserted).
"""

from __future__ import annotations

import asyncio
import io
import json
import operator
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from flywheel import topicreader
from flywheel.catalogue import BY_NAME, TOPICS, Service, consumed_by, produced_by, replayed_by
from flywheel.lifecycle import STAGES_KEY
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
SERVICES = (Service.INGEST, Service.ORCHESTRATOR, Service.MONITOR, Service.SERVING)
FAUST_APPS = (Service.INGEST, Service.ORCHESTRATOR, Service.MONITOR)  # serving is FastAPI + confluent-kafka
EXECUTION_ROLE = "flywheel-sagemaker-execution"
MODEL, OTHER_MODEL = "sentiment-en", "spam-filter"
CLUSTER_UUID = "5a8f1c2e-0b7d-4c3a-9e61-2f4d8c7b1a90-2"  # MSK appends one to every cluster/topic/group ARN
READS = frozenset({"s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket"})
LISTED_AT = datetime(2026, 1, 5, tzinfo=UTC)


# --- the evaluator ---------------------------------------------------------------------------------------

def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


# The condition operators the documents use; any other fails loudly (KeyError) instead of being ignored.
OPERATORS: dict[str, Callable[[str, str], bool]] = {"StringEquals": operator.eq, "StringLike": fnmatchcase,
                                                    "ArnLike": fnmatchcase}


def conditions_hold(condition: dict[str, dict[str, str | list[str]]], context: Mapping[str, str]) -> bool:
    """Every key of every operator matches one of its values; a key the request does not carry fails (IAM)."""
    return all(key in context and any(OPERATORS[op](context[key], v) for v in as_list(values))
               for op, keys in condition.items() for key, values in keys.items())


def allowed(doc: dict[str, Any], action: str, resource: str, context: Mapping[str, str] | None = None) -> bool:
    """IAM's Allow matching: exact action, `*`-wildcard resource (crossing '/'), conditions on `context`."""
    return any(st["Effect"] == "Allow" and action in as_list(st["Action"])
               and any(fnmatchcase(resource, pattern) for pattern in as_list(st["Resource"]))
               and conditions_hold(st.get("Condition", {}), context or {})
               for st in doc["Statement"])


def policy(name: str, folder: Path = IAM) -> dict[str, Any]:
    return json.loads((folder / f"{name}.json").read_text())


def test_the_evaluator_matches_like_iam():
    doc = {"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::b/models/*/fw-*/x"},
                         {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": "arn:aws:s3:::b",
                          "Condition": {"StringLike": {"s3:prefix": ["models/*"]}}}]}
    assert allowed(doc, "s3:GetObject", "arn:aws:s3:::b/models/m/fw-a/x")
    assert allowed(doc, "s3:GetObject", "arn:aws:s3:::b/models/a/b/fw-a/x")  # IAM's * crosses '/'
    assert not allowed(doc, "s3:PutObject", "arn:aws:s3:::b/models/m/fw-a/x")
    assert not allowed(doc, "s3:GetObject", "arn:aws:s3:::b/models/m/flywheel-a/x")
    assert allowed(doc, "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "models/m/"})
    assert not allowed(doc, "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "data/"})
    assert not allowed(doc, "s3:ListBucket", "arn:aws:s3:::b")  # the request carries no prefix: no match
    with pytest.raises(KeyError):
        allowed({"Statement": [{**doc["Statement"][1], "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}]},
                "s3:ListBucket", "arn:aws:s3:::b", {"aws:SourceIp": "10.0.0.1"})


@pytest.mark.parametrize("path", sorted(IAM.glob("*.json")), ids=lambda p: p.name)
def test_documents_only_allow(path: Path):
    assert {st["Effect"] for st in json.loads(path.read_text())["Statement"]} == {"Allow"}


@dataclass(frozen=True)
class Call:
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()  # the request's condition keys (s3:prefix, iam:PassedToService)


def permits(doc: dict[str, Any], call: Call) -> bool:
    return allowed(doc, call.action, call.resource, dict(call.context))


def denied(doc: dict[str, Any], calls: list[Call]) -> list[str]:
    return sorted({f"{c.action} {c.resource} {dict(c.context) or ''}".rstrip() for c in calls if not permits(doc, c)})


# --- the deployment and the names its code generates ------------------------------------------------------

@cache
def deployed() -> dict[str, iam.Deployed]:
    return iam.deployed()


@cache
def where() -> iam.Place:
    return iam.Place.of(deployed())


def settings(service: str) -> Any:
    return deployed()[service].settings


def role(service: str) -> dict[str, Any]:
    return policy(deployed()[service].role)


def kafka(kind: str, name: str) -> str:
    p = where()
    return f"arn:aws:kafka:{p.region}:{p.account}:{kind}/{p.cluster}/{CLUSTER_UUID}" + (f"/{name}" if name else "")


def run_id(model: str = MODEL, kind: str = "NEW_DATA") -> str:
    return ids.run_id(model, f"{model}-v1", kind)


@cache
def faust_names(service: str) -> tuple[str, tuple[str, ...]]:
    """The Faust app's group id and its internal topics, from the service's own create_app."""
    module = __import__(f"flywheel_{service}.app", fromlist=["create_app"])
    with tempfile.TemporaryDirectory() as tmp:
        local = settings(service).model_copy(update={"data_dir": Path(tmp), "schema_dir": REPO_SCHEMA_DIR,
                                                     "registry": RegistryKind.EMBEDDED})
        app = module.create_app(local)
        return app.conf.id, tuple(t.changelog_topic.get_topic_name() for t in app.tables.values())


class Captured(Exception):
    pass


def replay_reader(service: str) -> str:
    """The reader name the service's start-up recovery passes to topicreader.read_to_end."""

    def fake_read_to_end(*args: Any, reader: str, **kwargs: Any) -> Any:
        raise Captured(reader)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(Captured) as caught:
        if service == Service.ORCHESTRATOR:
            from flywheel_orchestrator import handlers

            patch.setattr(handlers, "read_to_end", fake_read_to_end)
            asyncio.run(handlers.migrate_from_log(settings(service), None, None))
        else:
            from flywheel_monitor import recovery

            patch.setattr(recovery, "read_to_end", fake_read_to_end)
            recovery.recover(None, settings(service), None, "monitor")
    return str(caught.value)


def follower_group() -> str:
    """The group id serving's event follower gives its consumer (flywheel_serving.adapters.EventFollower):
    one per process, so every replica sees every promotion."""
    import confluent_kafka

    from flywheel_serving.adapters import EventFollower
    from flywheel_serving.topics import CONSUMES

    def consumer(config: dict[str, Any]) -> Any:
        raise Captured(config["group.id"])

    follower = EventFollower(settings(Service.SERVING), None, CONSUMES, print, print, None, print)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Captured) as caught:
        patch.setattr(confluent_kafka, "Consumer", consumer)
        follower._follow()
    return str(caught.value)


def groups(service: str) -> tuple[str, ...]:
    """Every consumer group the service's code names: its Faust app's, its start-up reader's, its follower's."""
    if service == Service.SERVING:
        return (follower_group(),)
    found = (faust_names(service)[0],)
    if service != Service.INGEST:
        found += (topicreader.group_id(replay_reader(service)),)
    return found


def internal_topics(service: str) -> tuple[str, ...]:
    return faust_names(service)[1] if service in FAUST_APPS else ()


def kafka_calls(service: str) -> list[Call]:
    calls = [Call("kafka-cluster:Connect", kafka("cluster", "")), Call("kafka-cluster:DescribeCluster", kafka("cluster", ""))]
    for t in produced_by(service):
        calls += [Call("kafka-cluster:WriteData", kafka("topic", t)), Call("kafka-cluster:DescribeTopic", kafka("topic", t)),
                  Call("kafka-cluster:CreateTopic", kafka("topic", t))]
    for t in {*consumed_by(service), *replayed_by(service)}:
        calls += [Call("kafka-cluster:ReadData", kafka("topic", t)), Call("kafka-cluster:DescribeTopic", kafka("topic", t))]
    for t in internal_topics(service):
        calls += [Call(a, kafka("topic", t)) for a in ("kafka-cluster:CreateTopic", "kafka-cluster:WriteData",
                                                       "kafka-cluster:ReadData", "kafka-cluster:DescribeTopic")]
    for g in groups(service):
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


def no_such_key(key: str) -> ClientError:
    return ClientError({"Error": {"Code": "NoSuchKey", "Message": key}}, "GetObject")


class RecordingS3:
    """Answers like S3 (bodies from `objects`, a missing key is NoSuchKey), and records each call as the IAM
    actions it needs. Objects are keyed by key alone: which bucket a call names is in its recorded ARN."""

    def __init__(self, objects: dict[str, bytes] | None = None, etag: str = "abc") -> None:
        self.objects, self.etag, self.calls = dict(objects or {}), etag, []

    def _read(self, bucket: str, key: str, version: str | None) -> None:
        self.calls.append(Call("s3:GetObject", iam.s3(bucket, key)))
        if version:
            self.calls.append(Call("s3:GetObjectVersion", iam.s3(bucket, key)))

    def get_object(self, Bucket: str, Key: str, VersionId: str | None = None, **_: Any) -> dict[str, Any]:
        self._read(Bucket, Key, VersionId)
        if Key not in self.objects:
            raise no_such_key(Key)
        return {"Body": Body(self.objects[Key]), "ETag": f'"{self.etag}"'}

    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self._read(Bucket, Key, None)
        return {}

    def put_object(self, Bucket: str, Key: str, Body: bytes = b"", **_: Any) -> dict[str, Any]:
        self.calls.append(Call("s3:PutObject", iam.s3(Bucket, Key)))  # conditional (IfMatch) or not: PutObject
        self.objects[Key] = Body
        return {"ETag": f'"{self.etag}"'}

    def copy_object(self, Bucket: str, Key: str, CopySource: dict[str, str], **_: Any) -> dict[str, Any]:
        self._read(CopySource["Bucket"], CopySource["Key"], CopySource.get("VersionId"))
        self.calls.append(Call("s3:PutObject", iam.s3(Bucket, Key)))
        return {"CopyObjectResult": {"ETag": f'"{self.etag}"'}}

    def delete_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self.calls.append(Call("s3:DeleteObject", iam.s3(Bucket, Key)))
        return {}

    def list_objects_v2(self, Bucket: str, Prefix: str = "", **_: Any) -> dict[str, Any]:
        self.calls.append(Call("s3:ListBucket", iam.s3(Bucket), (("s3:prefix", Prefix),)))
        return {"Contents": [{"Key": k, "ETag": f'"{self.etag}"', "Size": len(v), "LastModified": LISTED_AT}
                             for k, v in sorted(self.objects.items()) if k.startswith(Prefix)], "IsTruncated": False}

    def get_paginator(self, op: str) -> Any:
        assert op == "list_objects_v2", op
        s3 = self

        class Pages:
            def paginate(self, **kwargs: Any) -> Any:
                yield s3.list_objects_v2(**kwargs)

        return Pages()


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
        self.calls.append(Call("iam:PassRole", request["RoleArn"], (("iam:PassedToService", "sagemaker.amazonaws.com"),)))
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
    s3.objects[key] = b'{"text": "fine", "label": "positive"}\n'
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
    run: str
    orchestrator: list[Call]
    execution_role: list[Call]
    output_prefix: str
    request: dict[str, Any]  # the CreateTrainingJob request the launcher built
    objects: dict[str, bytes]  # what the run left in the artifact bucket (its registration among them)


def training_run(model: str = MODEL, kind: str = "NEW_DATA", champion_uri: str = "") -> RunCalls:
    """Launch, watch and stop one run with the real launcher, then read its outputs with the real workflow
    tasks; returns the orchestrator's calls and the calls SageMaker makes as the execution role."""
    from flywheel_orchestrator import workflow
    from flywheel_orchestrator.taskcontext import TaskContext, scoped

    orch, ingest = settings(Service.ORCHESTRATOR), settings(Service.INGEST)
    run = run_id(model, kind)
    key = dataset_key(model)
    manifest_key = ingest_ids.manifest_key(ingest.manifest_prefix, model, f"{model}-v1")
    manifest = {"bucket": orch.data_bucket, "prefix": key.rsplit("/", 1)[0] + "/", "row_count": 8,
                "model_id": model, "dataset_version_id": f"{model}-v1",
                "objects": [{"key": key, "etag": "abc", "version_id": "3HL4kqtJlcpXroDTDmJ", "rows": 8}]}
    s3 = RecordingS3({manifest_key: json.dumps(manifest).encode(),
                      "metrics.json": json.dumps({"metrics": {"accuracy": 0.9}, "baseline_metrics": {"accuracy": 0.5}}).encode()})
    sm = RecordingSageMaker()
    launcher = SageMakerLauncher(sm, SageMakerConfig(role_arn=orch.sagemaker_role_arn, image_uri=orch.sagemaker_image_uri,
                                                     use_spot=True), sleep=lambda s: None, s3=s3)
    with scoped(TaskContext(s3, launcher, orch.artifact_bucket)):
        channel = workflow.prepare.task_function(run, model, [f"s3://{orch.data_bucket}/{manifest_key}"])
    request = JobRequest(job_name=run, model_id=model, data_bucket=channel.bucket, data_prefix=channel.prefix,
                         data_keys=tuple(channel.keys), output_bucket=orch.artifact_bucket,
                         output_prefix=ids.output_prefix(model, run), data_etags=tuple(channel.etags),
                         data_version_ids=tuple(channel.version_ids), tags={"flywheel:run_id": run},
                         champion_uri=champion_uri)
    assert launcher.start(request)
    launcher.status(run)
    launcher.stop(run)
    # A pinned object that changed: the copy is dropped again.
    with pytest.raises(ChannelChanged):
        pinning.copy(s3_changed(s3), orch.data_bucket, Pin(key, "abc"),
                     orch.artifact_bucket, f"{request.output_prefix}input/train/x")

    # What SageMaker does as the execution role: read the channels (the train manifest file and what it lists;
    # the champion's model.tar.gz), write the model under <S3OutputPath><job name>/output/, and checkpoints.
    created = sm.requests[run]
    role: list[Call] = []
    for source in (c["DataSource"]["S3DataSource"] for c in created["InputDataConfig"]):
        bucket, channel_key = source["S3Uri"].removeprefix("s3://").split("/", 1)
        if source["S3DataType"] == "ManifestFile":
            role.append(Call("s3:GetObject", iam.s3(bucket, channel_key)))
            listing = json.loads(s3.objects[channel_key])
            base = listing[0]["prefix"].removeprefix("s3://")
            role += [Call("s3:GetObject", f"arn:aws:s3:::{base}{name}") for name in listing[1:]]
        else:  # S3Prefix: SageMaker lists the prefix, then downloads what it found (here: the one object)
            assert source["S3DataType"] == "S3Prefix", source
            role += [Call("s3:ListBucket", iam.s3(bucket), (("s3:prefix", channel_key),)),
                     Call("s3:GetObject", iam.s3(bucket, channel_key))]
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
    return RunCalls(run, s3.calls + sm.calls, role, request.output_prefix, created, s3.objects)


def s3_changed(s3: RecordingS3) -> RecordingS3:
    changed = RecordingS3(etag="changed")
    changed.calls = s3.calls  # one record of the orchestrator's calls
    return changed


@cache
def run_calls() -> RunCalls:
    return training_run()


@dataclass
class Lifecycle:
    orchestrator: list[Call]  # the stage store's reads and conditional writes, registration reads, the 2nd run
    challenger: RunCalls  # the run launched against the champion (its `champion` channel)
    champion_uri: str  # the production version's artifact when the challenger was launched
    sent: list[str]  # the topics the decisions were announced on
    objects: dict[str, bytes]  # the artifact bucket afterwards: stages.json and the registrations
    production: tuple[str, str]  # (version, artifact URI) in production at the end
    registered: tuple[str, str]  # the other version, one serving would prefetch


@cache
def lifecycle() -> Lifecycle:
    """The orchestrator's promotions over its real stage store (flywheel.lifecycle.StageStore), wired as its
    create_app wires them: the first version decided at start-up and promoted, a second run launched against
    it as champion, the gate's verdict on that one, an operator's promote of it, then a rollback."""
    from flywheel.events import envelope
    from flywheel.lifecycle import StageStore
    from flywheel_orchestrator.adapters import registration_reader
    from flywheel_orchestrator.domain import RunSpec
    from flywheel_orchestrator.policy import Kind
    from flywheel_orchestrator.promotions import CHAMPION_URI, CHAMPION_VERSION, Promotions

    orch, first = settings(Service.ORCHESTRATOR), run_calls()
    s3, sent = RecordingS3(first.objects), []

    async def send(topic: str, record: dict[str, Any]) -> None:
        sent.append(topic)

    promotions = Promotions(StageStore(s3, orch.artifact_bucket), send, orch.gate(),
                            registration_reader(s3, orch.artifact_bucket))

    def spec(run: str, kind: Kind, lineage: dict[str, str] | None = None) -> RunSpec:
        return RunSpec(run, MODEL, f"{MODEL}-v1", kind, "s3://manifest", "trigger", "correlation", lineage=lineage or {})

    asyncio.run(promotions.catch_up({MODEL: (spec(first.run, Kind.NEW_DATA), envelope(Service.ORCHESTRATOR))}))
    lineage = asyncio.run(promotions.champion(MODEL))
    assert lineage[CHAMPION_VERSION] == first.run, lineage
    second = training_run(MODEL, Kind.MANUAL, champion_uri=lineage[CHAMPION_URI])
    s3.objects.update(second.objects)
    registration = json.loads(s3.objects[f"{second.output_prefix}registration.json"])
    succeeded = envelope(Service.ORCHESTRATOR)
    asyncio.run(promotions.registered(spec(second.run, Kind.MANUAL, lineage), registration, succeeded,
                                      succeeded["event_id"]))
    for action in ("promote", "rollback"):
        asyncio.run(promotions.stage_change({"model_id": MODEL, "action": action, "model_version": second.run,
                                             "reason": "", "envelope": envelope("cli")}))
    # Promotions log failures instead of raising: that every step happened is asserted here.
    assert sent == ["model.version-promoted", "model.version-rejected", "model.version-promoted",
                    "model.version-rolled-back"], sent
    assert {c.action for c in s3.calls} >= {"s3:GetObject", "s3:PutObject"}
    return Lifecycle(s3.calls + second.orchestrator, second, lineage[CHAMPION_URI], sent, s3.objects,
                     (first.run, lineage[CHAMPION_URI]), (second.run, registration["artifact_uri"]))


def stages_arn(bucket: str, model: str = MODEL) -> str:
    return iam.s3(bucket, STAGES_KEY.format(model_id=model))


# --- serving: its start-up over its real parts ------------------------------------------------------------

def model_archive() -> bytes:
    """The smallest model.tar.gz serving's artifact store accepts (config.json and labels.json at the top)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in (("config.json", b"{}"), ("labels.json", b'["negative", "positive"]')):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


class StubPredictor:
    def __init__(self, version: str, labels: list[str]) -> None:
        self.version, self.labels = version, labels

    def predict(self, texts: list[str]) -> list[Any]:
        return []


class StubLoader:
    """The loader reads what the artifact store extracted; no torch needed to know what S3 serving reads."""

    def load(self, directory: Path, version: str) -> StubPredictor:
        return StubPredictor(version, json.loads((directory / "labels.json").read_text()))


@cache
def serving_s3_calls() -> tuple[Call, ...]:
    """Serving's parts as its build_parts wires them (stage store and artifact store on one S3 client) over
    RecordingS3 holding what the orchestrator left: the model manager's start-up (list the models, read each
    one's stages, fetch and load the production artifact) and the prefetch of the registered version."""
    from flywheel_serving import app as serving_app
    from flywheel_serving.core import Target
    from flywheel_serving.metrics import ServingMetrics
    from flywheel_serving.models import ModelManager

    done = lifecycle()
    artifacts = {uri.removeprefix("s3://").split("/", 1)[1]: model_archive()
                 for uri in (done.production[1], done.registered[1])}
    s3 = RecordingS3({**done.objects, **artifacts})
    with tempfile.TemporaryDirectory() as cache_dir, pytest.MonkeyPatch.context() as patch:
        s = settings(Service.SERVING).model_copy(update={"cache_dir": Path(cache_dir)})
        patch.setattr(serving_app, "aws_client", lambda _settings, name: s3 if name == "s3" else pytest.fail(name))
        patch.setattr(serving_app, "build_codec", lambda _settings: None)
        patch.setattr(serving_app, "ServingPublisher", lambda _settings, _codec: None)
        parts = serving_app.build_parts(s)
        manager = ModelManager(parts.stages, parts.artifacts, StubLoader(), parts.publisher, ServingMetrics(),
                               max_batch=s.max_batch, max_wait_s=s.max_wait_ms / 1000, models=s.models)

        async def start_and_stop() -> None:
            await manager.start()
            await manager.stop()

        asyncio.run(start_and_stop())
        assert {m: p.version for m, p in manager.current.items()} == {MODEL: done.production[0]}
        parts.stages.models()  # what it lists when no FLYWHEEL_MODELS narrows it (the overlay may set some)
        parts.artifacts.fetch(Target(MODEL, *done.registered))  # prefetch on model.version-registered
    return tuple(s3.calls)


@cache
def serving_harvest_calls() -> tuple[Call, ...]:
    """The data flywheel as build_parts and build_harvester wire it from the deployed settings, over
    RecordingS3: labelled feedback written as one dataset version (its data object, then its marker)."""
    from flywheel_serving import app as serving_app
    from flywheel_serving.core import Joined
    from flywheel_serving.metrics import ServingMetrics

    s3 = RecordingS3()
    with tempfile.TemporaryDirectory() as cache_dir, pytest.MonkeyPatch.context() as patch:
        s = settings(Service.SERVING).model_copy(update={"cache_dir": Path(cache_dir)})
        patch.setattr(serving_app, "aws_client", lambda _settings, name: s3 if name == "s3" else pytest.fail(name))
        patch.setattr(serving_app, "build_codec", lambda _settings: None)
        patch.setattr(serving_app, "ServingPublisher", lambda _settings, _codec: None)
        harvester = serving_app.build_harvester(s, serving_app.build_parts(s).feedback, ServingMetrics())
    assert harvester is not None, "the overlay turns harvesting off: nothing to check"
    harvester.add(Joined(MODEL, "v1", (("negative", "positive"),), "req-1", ("great",), (0.6,), 1), 2)
    harvester.collect(everything=True)
    harvester.write_pending()
    return tuple(s3.calls)


def monitor_s3_calls() -> tuple[Call, ...]:
    """The monitor's durable rule state as flywheel_monitor.statestore really reads and writes it: a model
    with no document yet (404 through ListBucket), its first create-only write, a fenced update."""
    from flywheel_monitor.statestore import S3RuleStates

    s3 = RecordingS3()
    states = S3RuleStates(s3, settings(Service.MONITOR).artifact_bucket)
    doc, etag = states.load(MODEL)
    assert doc is None
    etag = states.save(MODEL, {"model_id": MODEL, "rules": {}}, etag)
    states.load(MODEL)
    states.save(MODEL, {"model_id": MODEL, "rules": {"accuracy": {"breaching": True}}}, etag)
    return tuple(s3.calls)


# --- the checks ------------------------------------------------------------------------------------------

def service_calls(service: str) -> list[Call]:
    calls = kafka_calls(service) + glue_calls(service)
    if service == Service.INGEST:
        calls += ingest_s3_calls() + ingest_sqs_calls()
    if service == Service.ORCHESTRATOR:
        calls += run_calls().orchestrator + lifecycle().orchestrator
    if service == Service.SERVING:
        calls += serving_s3_calls() + serving_harvest_calls()
    if service == Service.MONITOR:
        calls += monitor_s3_calls()
    return calls


def test_the_monitor_touches_only_its_rule_state():
    """Its S3 calls are all under monitor/models/ of the artifact bucket; it may not read or write the
    models, the stage documents or the orchestrator's state there."""
    calls, doc = monitor_s3_calls(), role(Service.MONITOR)
    bucket = settings(Service.MONITOR).artifact_bucket
    assert {c.action for c in calls} == {"s3:GetObject", "s3:PutObject"}
    assert all(c.resource.startswith(iam.s3(bucket, "monitor/models/")) for c in calls), calls
    for key in (f"models/{MODEL}/stages.json", f"models/{MODEL}/run/model.tar.gz",
                f"orchestrator/models/{MODEL}/state.json"):
        assert not allowed(doc, "s3:GetObject", iam.s3(bucket, key))
        assert not allowed(doc, "s3:PutObject", iam.s3(bucket, key))


@pytest.mark.parametrize("service", SERVICES)
def test_every_call_the_service_makes_is_allowed(service):
    found = denied(role(service), service_calls(service))
    assert not found, "denied:\n" + "\n".join(found)


def test_the_run_id_is_the_training_job_name_the_orchestrator_may_manage():
    doc, run = role(Service.ORCHESTRATOR), run_id()
    arn = f"arn:aws:sagemaker:{where().region}:{where().account}:training-job/{run}"
    for action in ("sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"):
        assert allowed(doc, action, arn), f"{action} on {run} is denied"
        assert not allowed(doc, action, arn.replace(run, "someone-elses-job"))


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_kept_to_its_own_topics_and_groups(service):
    doc = role(service)
    writes, reads = set(produced_by(service)), {*consumed_by(service), *replayed_by(service)}
    for t in TOPICS:
        assert allowed(doc, "kafka-cluster:WriteData", kafka("topic", t.name)) == (t.name in writes), t.name
        assert allowed(doc, "kafka-cluster:ReadData", kafka("topic", t.name)) == (t.name in reads), t.name
    for other in set(SERVICES) - {service}:
        for group in groups(other):
            assert not allowed(doc, "kafka-cluster:AlterGroup", kafka("group", group)), group
            assert not allowed(doc, "kafka-cluster:DescribeGroup", kafka("group", group)), group
        for name in internal_topics(other):
            assert not allowed(doc, "kafka-cluster:ReadData", kafka("topic", name)), name


def test_serving_follows_with_a_fresh_group_of_its_own():
    """Each replica's follower names its own group (`flywheel-serving-<reader>-<hex>`): every one is serving's."""
    first, second = follower_group(), follower_group()
    assert first != second and first.startswith(f"flywheel-{Service.SERVING}-")
    doc = role(Service.SERVING)
    for group in (first, second):
        assert allowed(doc, "kafka-cluster:AlterGroup", kafka("group", group))
        assert allowed(doc, "kafka-cluster:DescribeGroup", kafka("group", group))


def test_services_touch_no_aws_resource_of_another():
    ingest, orch, monitor, serving = (role(s) for s in SERVICES)
    artifacts = settings(Service.ORCHESTRATOR).artifact_bucket
    for call in run_calls().orchestrator:  # runs, jobs, the execution role: the orchestrator's alone
        if call.action.startswith(("sagemaker:", "iam:")) or f":::{artifacts}" in call.resource:
            assert not permits(ingest, call), call
            assert not permits(monitor, call), call
            if call.action not in READS:
                assert not permits(serving, call), call
    for call in ingest_s3_calls() + ingest_sqs_calls():  # manifests, state, the queue: ingest's to write
        if call.action not in READS:
            assert not permits(orch, call), call
        assert not permits(monitor, call), call
        assert not permits(serving, call), call
    data = settings(Service.INGEST).data_bucket
    assert not allowed(orch, "s3:PutObject", iam.s3(data, dataset_key()))  # no service rewrites datasets
    assert not allowed(ingest, "s3:PutObject", iam.s3(data, dataset_key()))


def test_only_the_orchestrator_writes_the_stage_store():
    """The stage documents are the orchestrator's (promotions); serving, the monitor, ingest and the training
    jobs may not write them, whatever the model."""
    bucket = settings(Service.ORCHESTRATOR).artifact_bucket
    writes = [c for c in lifecycle().orchestrator if c.resource == stages_arn(bucket) and c.action not in READS]
    assert {c.action for c in writes} == {"s3:PutObject"}
    others = [role(s) for s in SERVICES if s != Service.ORCHESTRATOR] + [policy(EXECUTION_ROLE)]
    for doc in others:
        for call in [*writes, Call("s3:PutObject", stages_arn(bucket, OTHER_MODEL)),
                     Call("s3:DeleteObject", stages_arn(bucket))]:
            assert not permits(doc, call), call


def test_serving_only_reads_models_where_the_orchestrator_keeps_them():
    """Serving's S3 calls are reads of the artifact bucket the orchestrator writes (a serving pointed at
    another bucket would serve nothing the lifecycle decided), and its role may write nothing there."""
    doc, artifacts = role(Service.SERVING), settings(Service.ORCHESTRATOR).artifact_bucket
    calls = serving_s3_calls()
    assert {c.action for c in calls} == {"s3:GetObject", "s3:ListBucket"}
    assert {c.resource.split("/", 1)[0] for c in calls} == {iam.s3(artifacts)}
    assert settings(Service.SERVING).artifact_bucket == artifacts
    assert Call("s3:GetObject", stages_arn(artifacts)) in calls
    assert not allowed(doc, "s3:ListBucket", iam.s3(artifacts), {"s3:prefix": ""})  # models/ only
    writes = [c for c in (*run_calls().orchestrator, *lifecycle().orchestrator, *lifecycle().challenger.execution_role)
              if c.action not in READS and c.action.startswith("s3:")]
    for call in writes:
        assert not permits(doc, call), call
    for action in ("s3:PutObject", "s3:DeleteObject"):
        assert not allowed(doc, action, iam.s3(artifacts, f"models/{MODEL}/anything"))
    assert not [a for st in doc["Statement"] for a in as_list(st["Action"]) if a.startswith(("sagemaker:", "iam:"))]


def test_serving_writes_only_feedback_versions_into_the_data_bucket():
    """Harvesting creates <dataset prefix><model>/feedback-*/ versions in the bucket ingest watches, where
    ingest takes them for data; the role may put those keys and nothing else of the data bucket (no other
    version, no manifest or ingest state, no read or delete), and without harvesting not even those."""
    doc, s, ingest = role(Service.SERVING), settings(Service.SERVING), settings(Service.INGEST)
    calls = serving_harvest_calls()
    assert [c.action for c in calls] == ["s3:PutObject", "s3:PutObject"]
    assert s.data_bucket == ingest.data_bucket and s.dataset_prefix in ingest.dataset_prefixes
    for call in calls:
        found = data_place(call.resource.removeprefix(iam.s3(ingest.data_bucket) + "/"), ingest.dataset_prefixes)
        assert isinstance(found, DataPlace) and found.model_id == MODEL and found.version.startswith("feedback-")
    assert denied(without(doc, "WriteFeedbackVersions"), list(calls)) == sorted(f"{c.action} {c.resource}"
                                                                              for c in calls)
    for key in (dataset_key(), dataset_key(OTHER_MODEL), f"{ingest.manifest_prefix}{MODEL}/dv-1.json",
                f"{ingest.state_prefix}done/{MODEL}/dv-1.json", f"elsewhere/{MODEL}/feedback-1/part-0000.jsonl",
                f"{MODEL}/feedback-1/part-0000.jsonl"):
        assert not allowed(doc, "s3:PutObject", iam.s3(ingest.data_bucket, key)), key
    for call in calls:
        for action in ("s3:GetObject", "s3:DeleteObject"):
            assert not allowed(doc, action, call.resource), (action, call.resource)
    off = iam.serving_policy(where(), s.model_copy(update={"harvest_enabled": False}))
    assert not any(permits(off, call) for call in calls)


def test_sagemaker_role_reads_its_channel_and_writes_its_outputs():
    found = denied(policy(EXECUTION_ROLE), run_calls().execution_role)
    assert not found, "denied:\n" + "\n".join(found)


def test_sagemaker_role_reads_the_champion_it_is_compared_with():
    """The `champion` channel of a run launched while a version is in production: the production version's
    model.tar.gz, as the promotions recorded it in the stage store and the launcher put it in the request."""
    done = lifecycle()
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                for c in done.challenger.request["InputDataConfig"]}
    assert channels["champion"] == done.champion_uri
    assert done.champion_uri.endswith(f"/{run_calls().output_prefix}output/model.tar.gz")  # another run's output
    found = denied(policy(EXECUTION_ROLE), done.challenger.execution_role)
    assert not found, "denied:\n" + "\n".join(found)


def test_sagemaker_role_writes_only_its_runs_outputs():
    """Not a run's channel (its own or another's), not a registration, not the stage store, not the data
    bucket, nothing outside a run's output and checkpoint prefixes (one role serves every run: see
    docs/deploy.md; so a run's output/ is not told from another run's by the role, only by its key shape)."""
    doc, orch = policy(EXECUTION_ROLE), settings(Service.ORCHESTRATOR)
    mine, other = run_calls().output_prefix, ids.output_prefix(OTHER_MODEL, run_id(OTHER_MODEL, "MANUAL"))
    champion = lifecycle().champion_uri.removeprefix(f"s3://{orch.artifact_bucket}/")
    assert allowed(doc, "s3:PutObject", iam.s3(orch.artifact_bucket, f"{mine}output/model.tar.gz"))
    for key in (f"{mine}input/train/part.jsonl", f"{mine}input/train.manifest", f"{mine}registration.json",
                f"{other}input/train.manifest", f"{other}registration.json", f"models/{MODEL}/model.tar.gz",
                STAGES_KEY.format(model_id=MODEL), STAGES_KEY.format(model_id=OTHER_MODEL), "index.html"):
        assert not allowed(doc, "s3:PutObject", iam.s3(orch.artifact_bucket, key)), key
    assert not allowed(doc, "s3:GetObject", iam.s3(orch.artifact_bucket, STAGES_KEY.format(model_id=MODEL)))
    assert not allowed(doc, "s3:PutObject", iam.s3(orch.data_bucket, dataset_key()))
    assert not allowed(doc, "s3:GetObject", iam.s3(orch.data_bucket, dataset_key()))  # only the pinned copies
    for action in ("s3:DeleteObject", "sagemaker:CreateTrainingJob", "iam:PassRole"):
        assert not allowed(doc, action, iam.s3(orch.artifact_bucket, f"{mine}output/model.tar.gz"))
        assert not allowed(doc, action, iam.s3(orch.artifact_bucket, champion))


def test_sagemaker_role_writes_exactly_what_sagemaker_uploads_and_no_other_services_keys():
    """The writes a run really makes are its two output archives and its checkpoints; the keys the other parts
    of the code generate in the same buckets (the orchestrator's state and run documents, the local launcher's
    jobs/, ingest's manifests and claims, serving's feedback) are out of reach, and so is anything else under
    a run's output/ (profiler reports are off in the request)."""
    doc, orch, ingest = policy(EXECUTION_ROLE), settings(Service.ORCHESTRATOR), settings(Service.INGEST)
    from flywheel_orchestrator import statestore
    from flywheel_orchestrator.launchers.local import job_key

    done = run_calls()
    writes = [c for c in done.execution_role if c.action == "s3:PutObject"]
    assert {c.resource.rsplit("/", 1)[-1] for c in writes} == {"model.tar.gz", "output.tar.gz", "step-100.pt"}
    assert not denied(doc, writes)
    assert done.request["ProfilerConfig"] == {"DisableProfiler": True}
    mine = done.output_prefix
    artifacts = [statestore.state_key(MODEL), statestore.run_key(done.run), statestore.MIGRATED_KEY,
                 job_key(done.run, "job.json"), job_key(done.run, "status.json"),
                 f"{mine}output/profiler-output/system/x.json", f"{mine}output/rule-output/x.json",
                 f"{mine}output/metrics.json", f"{mine}registration.json", f"{mine}training-manifest.json"]
    for key in artifacts:
        assert not allowed(doc, "s3:PutObject", iam.s3(orch.artifact_bucket, key)), key
    manifest = ingest_ids.manifest_key(ingest.manifest_prefix, MODEL, f"{MODEL}-v1")
    claim = ingest_ids.claim_key(ingest.state_prefix, MODEL, "subject")
    for key in (manifest, claim, dataset_key(), dataset_key(OTHER_MODEL)):
        for action in ("s3:PutObject", "s3:GetObject"):
            assert not allowed(doc, action, iam.s3(ingest.data_bucket, key)), (action, key)


def test_only_run_named_training_jobs_may_assume_the_execution_role():
    (st,) = policy(f"{EXECUTION_ROLE}.trust")["Statement"]
    pattern = st["Condition"]["ArnLike"]["aws:SourceArn"]
    assert fnmatchcase(f"arn:aws:sagemaker:{where().region}:{where().account}:training-job/{run_id()}", pattern)
    assert st["Condition"]["StringEquals"]["aws:SourceAccount"] == where().account


def without(doc: dict[str, Any], sid: str, resource: str | None = None) -> dict[str, Any]:
    """`doc` less its statement `sid` (or, with `resource`, less that one resource of it)."""
    sts = []
    for st in doc["Statement"]:
        if st.get("Sid") == sid:
            assert resource is None or resource in as_list(st["Resource"]), (sid, resource)
            st = {**st, "Resource": [r for r in as_list(st["Resource"]) if r != resource]} if resource else None
        if st is not None:
            sts.append(st)
    assert len(sts) < len(doc["Statement"]) or resource is not None, sid
    return {**doc, "Statement": sts}


def test_the_checked_names_fail_the_documents_as_first_committed():
    """The old grant training-job/flywheel-* is exactly what this file exists to catch."""
    old = role(Service.ORCHESTRATOR)
    for st in old["Statement"]:
        st["Resource"] = [r.replace(f"training-job/{ids.RUN_ID_PREFIX}*", "training-job/flywheel-*")
                          for r in as_list(st["Resource"])]
    arn = f"arn:aws:sagemaker:{where().region}:{where().account}:training-job/{run_id()}"
    assert not allowed(old, "sagemaker:CreateTrainingJob", arn)


def test_the_checked_calls_fail_the_documents_before_the_lifecycle_and_serving():
    """Each grant the stage store, the champion channel and serving's follower need is one these calls miss."""
    orch = without(role(Service.ORCHESTRATOR), "ReadAndWriteModelStages")
    stage_calls = [c for c in lifecycle().orchestrator if c.resource.endswith("/stages.json")]
    assert {c.action for c in stage_calls} == {"s3:GetObject", "s3:PutObject"}
    assert denied(orch, stage_calls) == denied(orch, lifecycle().orchestrator) != []

    champion = iam.s3(settings(Service.ORCHESTRATOR).artifact_bucket, f"{iam.run_prefix_pattern()}*model.tar.gz")
    execution = without(policy(EXECUTION_ROLE), "ReadItsChannelAndCheckpoints", champion)
    assert denied(execution, lifecycle().challenger.execution_role) == [
        f"s3:GetObject arn:aws:s3:::{lifecycle().champion_uri.removeprefix('s3://')}"]
    assert not denied(execution, run_calls().execution_role)  # a run with no champion never needed it

    calls = kafka_calls(Service.SERVING)
    follower = next(c.resource for c in calls if c.action == "kafka-cluster:AlterGroup")
    faust_only = without(role(Service.SERVING), "UseOwnConsumerGroups",
                         where().kafka("group", f"flywheel-{Service.SERVING}-*"))
    assert denied(faust_only, calls) == sorted(f"kafka-cluster:{a} {follower}" for a in ("AlterGroup", "DescribeGroup"))
