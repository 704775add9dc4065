"""What the monitor's core and handlers depend on, as Protocols; their adapters live beside them.

- `WindowStore`: `windows.DictWindowStore` in the service, unit tests and benchmarks (`tables.FaustWindowStore`,
  Faust windowed tables, is no longer wired: docs/decisions/0015-monitor-scale-out.md).
- `Publisher`: `flywheel.faust_app.FaustPublisher` in the service.
"""

from __future__ import annotations

from typing import Any, Protocol

from flywheel_monitor.windows import Aggregate


class WindowStore(Protocol):
    """Where window aggregates live, by key ("model|metric"), window size and event time."""

    def get(self, key: str, window_ms: int, at_ms: int) -> Aggregate | None: ...

    def put(self, key: str, window_ms: int, at_ms: int, aggregate: Aggregate) -> None: ...


class Publisher(Protocol):
    """publish(topic, record): schema, key and framing taken from the catalogue."""

    async def publish(self, topic_name: str, record: dict[str, Any], *, acked: bool = False) -> None: ...
