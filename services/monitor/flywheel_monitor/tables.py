"""Faust tumbling windowed tables: the service's adapter of the core's WindowStore port (ports.py).

The tables are caches (changelog recovery on Tansu restores stale values: docs/decisions/0003-tansu-quirks.md,
0201-monitor-windows-as-cache-tables.md), so they write no changelog: a restart starts the current window
empty, which rules tolerate (min_samples), while cooldowns are rebuilt from the retrain.requested topic
(recovery.py). Skipping the changelog also keeps a produce per metric event off the hot path.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import faust
from faust.streams import current_event

from flywheel.catalogue import MODEL_PARTITIONS
from flywheel_monitor.windows import Aggregate

KEEP_WINDOWS = 4  # windows kept per key: the current one, and late data for the few before it


def _missing() -> None:
    return None


class CacheTable(faust.Table):
    """A Faust table whose writes stay in memory (no changelog record per update)."""

    def on_key_set(self, key: Any, value: Any) -> None:
        self._maybe_set_key_ttl(key, _partition())

    def on_key_del(self, key: Any) -> None:
        self._maybe_del_key_ttl(key, _partition())


def _partition() -> int:
    event = current_event()
    return event.message.partition if event is not None else 0


class FaustWindowStore:
    """One tumbling windowed table per window size; keys are "model|metric", time is the event's window_end.

    Reads and writes go to the table's `(key, window range)` entries directly, the range taken from the
    observation's event time for both. (Faust's `relative_to(t)[key].current()` picks the window of the
    Kafka message timestamp instead, and builds two wrapper objects per call.)
    """

    def __init__(self, app: faust.App, window_sizes_ms: set[int]) -> None:
        self._tables = {size: _tumbling(app, size) for size in sorted(window_sizes_ms)}
        self._last_read: tuple[str, int, int, Aggregate | None] | None = None

    def get(self, key: str, window_ms: int, at_ms: int) -> Aggregate | None:
        table = self._tables[window_ms]
        value = table[(key, table.window.current(at_ms / 1000))]
        self._last_read = (key, window_ms, at_ms, value)
        return value

    def put(self, key: str, window_ms: int, at_ms: int, aggregate: Aggregate) -> None:
        """Store `aggregate`; a no-op when it is the very object just read from that entry.

        The tables use the memory store (make_app: store="memory://"), which holds the object itself, so an
        aggregate updated in place after `get` is already stored (and its key's expiry already tracked).
        """
        last = self._last_read
        if last is not None and last[3] is aggregate and last[:3] == (key, window_ms, at_ms):
            return
        table = self._tables[window_ms]
        table[(key, table.window.current(at_ms / 1000))] = aggregate


def _tumbling(app: faust.App, size_ms: int) -> CacheTable:
    table = app.tables.add(CacheTable(app, name=f"windows-{size_ms}ms", default=_missing,
                                      beacon=app.tables.beacon, partitions=MODEL_PARTITIONS,
                                      help="monitor window aggregates"))
    size = timedelta(milliseconds=size_ms)
    table.tumbling(size, expires=size * KEEP_WINDOWS)  # sets table.window (expiry keeps KEEP_WINDOWS)
    return table
