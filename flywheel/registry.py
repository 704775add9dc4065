"""Schema registry port and its adapters: embedded (from schemas/, the default) and AWS Glue Schema Registry.

Wire formats (docs/decisions/0001-wire-format.md):
- embedded: Confluent framing, magic byte 0x00 + 4-byte big-endian schema id + Avro binary;
- glue: AWS Glue Schema Registry framing, 0x03 + compression byte 0x00 + 16-byte schema version UUID + Avro.

The Glue adapter caches what it learns: known versions for the life of the process, unknown ones (a
bounded, expiring negative cache) so that a flood of records naming one unknown id costs one Glue call per
TTL. Throttling, 5xx and connection errors are retried a few times with capped backoff; when Glue stays
unavailable or denies access it raises RegistryUnavailable, which consumers retry (the bytes may be fine),
while an id Glue does not know raises UnknownSchemaId, a CodecError that is dead-lettered.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from flywheel.errors import RegistryUnavailable, UndecodableRecord, UnknownEventType, UnknownSchemaId
from flywheel.schemas import SchemaSet, SchemaVersion

CONFLUENT_MAGIC = 0
GLUE_HEADER_VERSION = 3
GLUE_NO_COMPRESSION = 0
CONFLUENT_HEADER_LEN = 5
GLUE_HEADER_LEN = 18
# Glue's name for Avro's BACKWARD_TRANSITIVE: every version must read data written by all earlier ones.
GLUE_COMPATIBILITY = "BACKWARD_ALL"


@dataclass(frozen=True)
class WriterInfo:
    """What a decoder needs to read a payload: the writer schema and the reader schema to resolve into."""

    name: str
    writer: dict[str, Any]
    reader: dict[str, Any] | None  # None when writer == reader: no resolution needed
    header_len: int


class SchemaRegistry(Protocol):
    """Port: turn an event name into a wire header, and a wire header back into schemas."""

    schemas: SchemaSet

    def header_for(self, name: str) -> bytes: ...

    def resolve(self, data: bytes) -> WriterInfo: ...

    def resolves_locally(self, data: Any) -> bool:
        """True when `resolve(data)` answers from memory, without a remote call that could block."""
        ...


def embedded_schema_id(version: SchemaVersion) -> int:
    """Stable 31-bit id from the schema's Parsing Canonical Form: same schema, same id, in every process."""
    digest = hashlib.sha256(version.canonical.encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _writer_info(version: SchemaVersion, current: SchemaVersion, header_len: int) -> WriterInfo:
    reader = None if version.canonical == current.canonical else current.parsed
    return WriterInfo(version.name, version.parsed, reader, header_len)


class EmbeddedRegistry:
    """Registry built from schemas/ with no server: current and released versions, hash-derived ids."""

    def __init__(self, schemas: SchemaSet) -> None:
        self.schemas = schemas
        self._headers: dict[str, bytes] = {}
        self._by_id: dict[int, WriterInfo] = {}
        for version in [*schemas.released(), *schemas.events.values()]:
            schema_id = embedded_schema_id(version)
            current = schemas.event(version.name)
            self._by_id[schema_id] = _writer_info(version, current, CONFLUENT_HEADER_LEN)
        for name, version in schemas.events.items():
            self._headers[name] = struct.pack(">bI", CONFLUENT_MAGIC, embedded_schema_id(version))

    def header_for(self, name: str) -> bytes:
        return self._headers[self.schemas.event(name).name]

    def resolve(self, data: bytes) -> WriterInfo:
        if len(data) < CONFLUENT_HEADER_LEN or data[0] != CONFLUENT_MAGIC:
            raise UndecodableRecord(_bad_header(data, "Confluent (0x00)"))
        schema_id = struct.unpack_from(">I", data, 1)[0]
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise UnknownSchemaId(f"schema id {schema_id} is not in the embedded registry") from None

    def resolves_locally(self, data: Any) -> bool:
        return True

    def ids(self) -> dict[int, str]:
        return {schema_id: info.name for schema_id, info in self._by_id.items()}


def _bad_header(data: bytes, expected: str) -> str:
    head = data[:8].hex() if data else "(empty)"
    return f"not a {expected} framed Avro record: first bytes {head}, {len(data)} bytes in all"


# Glue error codes that mean "try again later" and "this principal may not": both leave the record intact.
_THROTTLED = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
                        "InternalServiceException", "InternalFailure", "ServiceUnavailable",
                        "ServiceUnavailableException"})
_DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
                     "InvalidClientTokenId", "ExpiredTokenException", "ExpiredToken", "InvalidSignatureException",
                     "SignatureDoesNotMatch"})


def _glue_failure(exc: BaseException) -> str | None:
    """Classify an error a Glue call raised: "transient", "denied", or None (an answer, e.g. EntityNotFound).

    Duck-typed on botocore's ClientError (`response`) and BotoCoreError (connection errors, timeouts,
    missing credentials), so the runtime core's pure users do not import botocore."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _DENIED or status == 403:
            return "denied"
        if code in _THROTTLED or status == 429 or status >= 500:
            return "transient"
        return None
    if any(cls.__name__ == "BotoCoreError" for cls in type(exc).__mro__):
        return "transient"
    return None


@dataclass(frozen=True)
class GlueRetry:
    """Attempts per Glue call on throttling/5xx/connection errors, and the capped exponential backoff."""

    attempts: int = 3
    first_backoff_s: float = 0.1
    max_backoff_s: float = 1.0

    def backoff(self, attempt: int) -> float:
        return min(self.first_backoff_s * 2 ** (attempt - 1), self.max_backoff_s)


class GlueRegistry:
    """AWS Glue Schema Registry adapter: registers schemas (BACKWARD_ALL) and frames with version UUIDs."""

    def __init__(self, schemas: SchemaSet, glue_client: Any, registry_name: str, *, miss_ttl_s: float = 60.0,
                 max_misses: int = 1024, retry: GlueRetry = GlueRetry(),
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.schemas = schemas
        self._glue = glue_client
        self._registry = registry_name
        self._headers: dict[str, bytes] = {}
        self._by_uuid: dict[uuid.UUID, WriterInfo] = {}
        # negative cache: version id -> (expires at on `clock`, the UnknownSchemaId message), oldest first
        self._misses: OrderedDict[uuid.UUID, tuple[float, str]] = OrderedDict()
        self._miss_ttl_s, self._max_misses = miss_ttl_s, max_misses
        self._retry, self._clock, self._sleep = retry, clock, sleep

    def header_for(self, name: str) -> bytes:
        version = self.schemas.event(name)
        header = self._headers.get(version.name)
        if header is None:
            schema_version_id = self._register(version)
            header = bytes([GLUE_HEADER_VERSION, GLUE_NO_COMPRESSION]) + schema_version_id.bytes
            self._headers[version.name] = header
            self._by_uuid[schema_version_id] = _writer_info(version, version, GLUE_HEADER_LEN)
        return header

    def resolve(self, data: bytes) -> WriterInfo:
        schema_version_id = self._version_id(data)
        info = self._by_uuid.get(schema_version_id)
        if info is not None:
            return info
        missed = self._cached_miss(schema_version_id)
        if missed is not None:
            raise UnknownSchemaId(missed)
        try:
            info = self._fetch(schema_version_id)
        except UnknownSchemaId as exc:
            self._remember_miss(schema_version_id, str(exc))
            raise
        self._by_uuid[schema_version_id] = info
        return info

    def resolves_locally(self, data: Any) -> bool:
        try:
            schema_version_id = self._version_id(data)
        except (UndecodableRecord, TypeError):
            return True  # refused without a call
        return schema_version_id in self._by_uuid or self._cached_miss(schema_version_id) is not None

    @staticmethod
    def _version_id(data: bytes) -> uuid.UUID:
        if len(data) < GLUE_HEADER_LEN or data[0] != GLUE_HEADER_VERSION:
            raise UndecodableRecord(_bad_header(data, "Glue (0x03)"))
        if data[1] != GLUE_NO_COMPRESSION:
            raise UndecodableRecord(f"Glue compression byte {data[1]} is not supported (only 0, none)")
        return uuid.UUID(bytes=bytes(data[2:GLUE_HEADER_LEN]))

    def _cached_miss(self, schema_version_id: uuid.UUID) -> str | None:
        entry = self._misses.get(schema_version_id)
        if entry is None:
            return None
        expires, message = entry
        if self._clock() >= expires:
            self._misses.pop(schema_version_id, None)
            return None
        return message

    def _remember_miss(self, schema_version_id: uuid.UUID, message: str) -> None:
        self._misses.pop(schema_version_id, None)
        self._misses[schema_version_id] = (self._clock() + self._miss_ttl_s, message)
        while len(self._misses) > self._max_misses:
            self._misses.popitem(last=False)

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """One Glue API call, retried on throttling/5xx/connection errors; RegistryUnavailable when it
        keeps failing or access is denied. Any other error (EntityNotFound, AlreadyExists) is raised as is."""
        for attempt in range(1, self._retry.attempts + 1):
            try:
                return getattr(self._glue, operation)(**kwargs)
            except Exception as exc:
                failure = _glue_failure(exc)
                if failure is None:
                    raise
                if failure == "denied":
                    raise RegistryUnavailable(f"Glue registry {self._registry} denied {operation}: {exc}") from exc
                if attempt == self._retry.attempts:
                    raise RegistryUnavailable(f"Glue registry {self._registry} unavailable: {operation} failed "
                                              f"{attempt} times, last: {exc}") from exc
                self._sleep(self._retry.backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _register(self, version: SchemaVersion) -> uuid.UUID:
        definition = json.dumps(version.expanded)
        schema_id = {"RegistryName": self._registry, "SchemaName": version.name}
        try:
            found = self._call("get_schema_by_definition", SchemaId=schema_id, SchemaDefinition=definition)
            return uuid.UUID(found["SchemaVersionId"])
        except self._glue.exceptions.EntityNotFoundException:
            pass
        self._ensure_registry()
        try:
            created = self._call(
                "create_schema",
                RegistryId={"RegistryName": self._registry},
                SchemaName=version.name,
                DataFormat="AVRO",
                Compatibility=GLUE_COMPATIBILITY,
                SchemaDefinition=definition,
            )
            return uuid.UUID(created["SchemaVersionId"])
        except self._glue.exceptions.AlreadyExistsException:
            added = self._call("register_schema_version", SchemaId=schema_id, SchemaDefinition=definition)
            return uuid.UUID(added["SchemaVersionId"])

    def _ensure_registry(self) -> None:
        with contextlib.suppress(self._glue.exceptions.AlreadyExistsException):
            self._call("create_registry", RegistryName=self._registry)

    def _fetch(self, schema_version_id: uuid.UUID) -> WriterInfo:
        try:
            found = self._call("get_schema_version", SchemaVersionId=str(schema_version_id))
        except self._glue.exceptions.EntityNotFoundException:
            raise UnknownSchemaId(f"schema version {schema_version_id} is not in Glue registry {self._registry}") from None
        writer = SchemaVersion(_name_from_arn(found["SchemaArn"]), json.loads(found["SchemaDefinition"]))
        try:
            current = self.schemas.event(writer.name)
        except UnknownEventType:  # another schema of the registry: this consumer cannot read it
            raise UnknownSchemaId(f"schema version {schema_version_id} is {writer.name}, not a Flywheel event") from None
        return _writer_info(writer, current, GLUE_HEADER_LEN)


def _name_from_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]
