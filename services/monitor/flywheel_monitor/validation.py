"""Checks on a decoded ModelMetricsObserved before it may touch a window. Pure.

Each failure raises InvalidEvent (a CodecError) with the reason, which the agent dead-letters.
"""

from __future__ import annotations

import math
from typing import Any

from flywheel.errors import InvalidEvent
from flywheel.events import to_millis


class UnknownModel(InvalidEvent):
    """Metrics for a model no ModelVersionRegistered has announced."""


def check_observation(record: dict[str, Any]) -> None:
    """Raise InvalidEvent naming the first bad field."""
    _require(math.isfinite(record["value"]), f"value is {record['value']!r}, not a finite number")
    _require(record["sample_count"] >= 0, f"sample_count is negative ({record['sample_count']})")
    _require(to_millis(record["window_end"]) >= to_millis(record["window_start"]),
             "window_end is before window_start")
    if record.get("summary") is not None:
        check_summary(record["summary"])


def check_summary(summary: dict[str, Any]) -> None:
    _require(summary["count"] >= 0, f"summary.count is negative ({summary['count']})")
    for name in ("sum", "sum_squares", "min", "max"):
        _require(math.isfinite(summary[name]), f"summary.{name} is {summary[name]!r}, not a finite number")
    _require(summary["count"] == 0 or summary["min"] <= summary["max"], "summary.min is above summary.max")
    bounds, counts = summary["bucket_bounds"], summary["bucket_counts"]
    if not bounds and not counts:
        return
    _require(len(counts) == len(bounds) + 1,
             f"summary has {len(counts)} bucket_counts for {len(bounds)} bucket_bounds (needs one more)")
    _require(all(math.isfinite(b) for b in bounds), "summary.bucket_bounds holds a non-finite bound")
    _require(all(a < b for a, b in zip(bounds, bounds[1:], strict=False)),
             "summary.bucket_bounds is not strictly ascending")
    _require(all(c >= 0 for c in counts), "summary.bucket_counts holds a negative count")
    _require(sum(counts) == summary["count"], "summary.bucket_counts do not add up to summary.count")


def _require(ok: bool, reason: str) -> None:
    if not ok:
        raise InvalidEvent(reason)
