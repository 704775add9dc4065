"""Turn a record a service cannot process into a DeadLetter event that keeps the original bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flywheel.events import envelope


@dataclass(frozen=True)
class SourceRecord:
    """Where a record came from and its raw bytes: everything needed to replay it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def dead_letter(source: SourceRecord, error: BaseException, consumer: str) -> dict[str, Any]:
    """A DeadLetter record for `source`, with the error's class as its type and its message as the reason."""
    correlation = f"{source.topic}/{source.partition}/{source.offset}"
    return {
        "envelope": envelope(consumer, correlation_id=correlation),
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "original_key": _as_bytes(source.key),
        "original_value": _as_bytes(source.value),
        "error_type": type(error).__name__,
        "reason": str(error) or repr(error),
        "consumer": consumer,
    }


def _as_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()
