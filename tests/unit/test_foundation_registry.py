"""The Glue registry adapter's failure handling, with botocore's Stubber as the Glue API edge (no network).

Unknown schema versions are cached negatively (bounded, expiring); throttling and 5xx are retried with capped
backoff; a Glue that stays unavailable or denies access raises RegistryUnavailable (not a CodecError), and the
shared consume loop retries that record instead of crashing or dead-lettering it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from flywheel.codec import AvroCodec
from flywheel.errors import CodecError, RegistryUnavailable, UnknownSchemaId
from flywheel.events import envelope
from flywheel.faust_app import REGISTRY_WAITS, Backoff, DeadLetters, FaustPublisher, decoded, make_app
from flywheel.registry import EmbeddedRegistry, GlueRegistry, GlueRetry
from flywheel.schemas import SchemaSet
from flywheel.settings import REPO_SCHEMA_DIR, FlywheelSettings

SCHEMAS = SchemaSet(REPO_SCHEMA_DIR)
VERSION = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
BODY = AvroCodec(EmbeddedRegistry(SCHEMAS)).encode(
    "RetrainRequested", {"envelope": envelope("t"), "model_id": "m1", "trigger": "MANUAL", "rule": "r"})[5:]
FOUND = {
    "SchemaVersionId": str(VERSION), "DataFormat": "AVRO", "VersionNumber": 1, "Status": "AVAILABLE",
    "SchemaArn": "arn:aws:glue:us-east-1:123456789012:schema/flywheel/flywheel.RetrainRequested",
    "SchemaDefinition": json.dumps(SCHEMAS.event("RetrainRequested").expanded),
}


def framed(version: uuid.UUID = VERSION) -> bytes:
    return b"\x03\x00" + version.bytes + BODY


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Glue:
    """A real boto3 Glue client whose HTTP edge is a Stubber; records the backoff it was asked to sleep."""

    def __init__(self, **registry: Any) -> None:
        self.client = boto3.client("glue", region_name="us-east-1", aws_access_key_id="x",
                                   aws_secret_access_key="x")
        self.stub = Stubber(self.client)
        self.stub.activate()
        self.slept: list[float] = []
        self.clock = Clock()
        self.registry = GlueRegistry(SCHEMAS, self.client, "flywheel", clock=self.clock,
                                     sleep=self.slept.append, **registry)
        self.codec = AvroCodec(self.registry)

    def fails(self, code: str, status: int = 400, operation: str = "get_schema_version") -> None:
        self.stub.add_client_error(operation, service_error_code=code, http_status_code=status)

    def finds(self) -> None:
        self.stub.add_response("get_schema_version", FOUND, {"SchemaVersionId": str(VERSION)})


def test_throttling_is_retried_with_capped_backoff_then_decodes() -> None:
    glue = Glue()
    glue.fails("ThrottlingException")
    glue.fails("InternalServiceException", status=500)
    glue.finds()
    assert glue.codec.decode(framed()).record["model_id"] == "m1"
    assert glue.slept == [0.1, 0.2]
    glue.stub.assert_no_pending_responses()
    assert glue.codec.decode(framed()).record["rule"] == "r"  # cached: the Stubber has nothing queued


def test_a_glue_that_stays_throttled_raises_registry_unavailable_after_bounded_attempts() -> None:
    glue = Glue(retry=GlueRetry(attempts=4, first_backoff_s=0.5, max_backoff_s=1.0))
    for _ in range(4):
        glue.fails("ThrottlingException")
    with pytest.raises(RegistryUnavailable, match="get_schema_version failed 4 times") as raised:
        glue.codec.decode(framed())
    assert not isinstance(raised.value, CodecError), "the bytes may be fine: it must not be dead-lettered"
    assert glue.slept == [0.5, 1.0, 1.0]  # capped
    glue.finds()  # not cached as a miss: the next try asks again and succeeds
    assert glue.codec.decode(framed()).record["model_id"] == "m1"


@pytest.mark.parametrize("code", ["AccessDeniedException", "UnrecognizedClientException"])
def test_access_denied_raises_registry_unavailable_at_once(code: str) -> None:
    glue = Glue()
    glue.fails(code)
    with pytest.raises(RegistryUnavailable, match="denied get_schema_version"):
        glue.codec.decode(framed())
    assert glue.slept == []
    glue.stub.assert_no_pending_responses()


def test_an_unknown_version_costs_one_glue_call_per_ttl() -> None:
    glue = Glue(miss_ttl_s=60.0)
    unknown = uuid.uuid4()
    glue.fails("EntityNotFoundException")
    assert not glue.registry.resolves_locally(framed(unknown))
    for _ in range(100):  # a flood of records naming one unknown id; a second call would find no stub
        with pytest.raises(UnknownSchemaId, match=f"{unknown} is not in Glue registry flywheel"):
            glue.codec.decode(framed(unknown))
    assert glue.registry.resolves_locally(framed(unknown))
    glue.stub.assert_no_pending_responses()
    glue.clock.now = 60.0  # expired: Glue is asked again (the version may have been registered since)
    assert not glue.registry.resolves_locally(framed(unknown))
    glue.fails("EntityNotFoundException")
    with pytest.raises(UnknownSchemaId):
        glue.codec.decode(framed(unknown))
    glue.stub.assert_no_pending_responses()


def test_the_negative_cache_is_bounded_oldest_out_first() -> None:
    glue = Glue(max_misses=2)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for version in (first, second, third):
        glue.fails("EntityNotFoundException")
        with pytest.raises(UnknownSchemaId):
            glue.codec.decode(framed(version))
    assert [glue.registry.resolves_locally(framed(v)) for v in (first, second, third)] == [False, True, True]


def test_malformed_headers_resolve_locally_and_are_codec_errors() -> None:
    glue = Glue()
    for data in (b"", b"\x03", b"\x00" + bytes(30), b"\x03\x01" + bytes(30), None):
        assert glue.registry.resolves_locally(data)
        with pytest.raises(CodecError):
            glue.codec.decode(data)


def test_registering_a_schema_retries_throttling() -> None:
    glue = Glue()
    glue.fails("ThrottlingException", operation="get_schema_by_definition")
    glue.stub.add_response("get_schema_by_definition", {"SchemaVersionId": str(VERSION)})
    header = glue.registry.header_for("RetrainRequested")
    assert header == b"\x03\x00" + VERSION.bytes and glue.slept == [0.1]


class FakeTopic:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    async def send(self, key: bytes, value: bytes) -> None:
        self.sent.append((key, value))


class OneMessage:
    def __init__(self, value: bytes) -> None:
        self.message = SimpleNamespace(topic="retrain.requested", partition=0, offset=7, key=b"m1", value=value)

    async def events(self) -> Any:
        yield SimpleNamespace(message=self.message)


def test_the_consume_loop_retries_a_record_while_glue_denies_access(tmp_path: Path) -> None:
    settings = FlywheelSettings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path)
    glue = Glue()
    dead_letters = DeadLetters(FaustPublisher(make_app("monitor", settings), glue.codec, "monitor"))
    outbound = dead_letters.publisher._topics["monitor.dead-letter"] = FakeTopic()
    glue.fails("AccessDeniedException")  # e.g. an IAM policy being rolled out
    for _ in range(3):
        glue.fails("ThrottlingException")  # then throttled past the adapter's own attempts
    glue.finds()
    before = REGISTRY_WAITS.labels("monitor", "retrain.requested")._value.get()

    async def drain() -> list[Any]:
        return [item async for item in decoded(OneMessage(framed()), glue.codec, dead_letters,
                                               Backoff(first_s=0.001, max_s=0.002))]

    out = asyncio.run(drain())
    assert [(msg.offset, item.record["model_id"]) for msg, item in out] == [(7, "m1")]
    assert outbound.sent == [], "an unavailable registry is not the record's fault"
    assert REGISTRY_WAITS.labels("monitor", "retrain.requested")._value.get() == before + 2
    glue.stub.assert_no_pending_responses()
