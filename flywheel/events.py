"""Building events: the shared envelope and lineage between events."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def envelope(producer: str, correlation_id: str | None = None, causation: dict[str, Any] | None = None,
             occurred_at_ms: int | None = None) -> dict[str, Any]:
    """A new envelope; with `causation` (the causing event's envelope) the chain's correlation id carries on."""
    event_id = str(uuid.uuid4())
    if causation is not None:
        correlation_id = causation["correlation_id"]
    return {
        "event_id": event_id,
        "occurred_at": occurred_at_ms if occurred_at_ms is not None else now_ms(),
        "correlation_id": correlation_id or event_id,
        "causation_id": causation["event_id"] if causation is not None else None,
        "producer": producer,
    }


def ids(record: dict[str, Any]) -> dict[str, str | None]:
    """The ids every log line about an event carries."""
    env = record.get("envelope") or {}
    return {"event_id": env.get("event_id"), "correlation_id": env.get("correlation_id")}


def to_millis(value: datetime | int | float) -> int:
    """Timestamps decode as datetimes; arithmetic wants epoch milliseconds (a naive datetime is UTC).

    Integer arithmetic on purpose: `int(dt.timestamp() * 1000)` is one millisecond short for some values.
    """
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (aware - _EPOCH) // _ONE_MS
    return int(value)


def jsonable(value: Any) -> Any:
    """Decoded records as JSON-friendly values (datetimes as ISO 8601, bytes as hex)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value
