"""Checks on a decoded ModelMetricsObserved before it may touch a window. Pure.

Each failure raises InvalidEvent (a CodecError) with the reason, which the agent dead-letters. The checks
run on every event, so each reason is only formatted once it is known to be needed.
"""

from __future__ import annotations

import math
from operator import lt
from typing import Any

from flywheel.errors import InvalidEvent
from flywheel.events import to_millis

isfinite = math.isfinite


class UnknownModel(InvalidEvent):
    """Metrics for a model no ModelVersionRegistered has announced."""


def check_observation(record: dict[str, Any]) -> None:
    """Raise InvalidEvent naming the first bad field."""
    if not isfinite(record["value"]):
        raise InvalidEvent(f"value is {record['value']!r}, not a finite number")
    if record["sample_count"] < 0:
        raise InvalidEvent(f"sample_count is negative ({record['sample_count']})")
    if to_millis(record["window_end"]) < to_millis(record["window_start"]):
        raise InvalidEvent("window_end is before window_start")
    if record.get("summary") is not None:
        check_summary(record["summary"])


def check_summary(summary: dict[str, Any]) -> None:
    if summary["count"] < 0:
        raise InvalidEvent(f"summary.count is negative ({summary['count']})")
    for name in ("sum", "sum_squares", "min", "max"):
        if not isfinite(summary[name]):
            raise InvalidEvent(f"summary.{name} is {summary[name]!r}, not a finite number")
    if summary["count"] and summary["min"] > summary["max"]:
        raise InvalidEvent("summary.min is above summary.max")
    bounds, counts = summary["bucket_bounds"], summary["bucket_counts"]
    if bounds or counts:
        check_histogram(summary["count"], bounds, counts)


def check_histogram(count: int, bounds: list[float], counts: list[int]) -> None:
    if len(counts) != len(bounds) + 1:
        raise InvalidEvent(f"summary has {len(counts)} bucket_counts for {len(bounds)} bucket_bounds "
                           "(needs one more)")
    if not all(map(isfinite, bounds)):
        raise InvalidEvent("summary.bucket_bounds holds a non-finite bound")
    if not all(map(lt, bounds, bounds[1:])):
        raise InvalidEvent("summary.bucket_bounds is not strictly ascending")
    if min(counts) < 0:
        raise InvalidEvent("summary.bucket_counts holds a negative count")
    if sum(counts) != count:
        raise InvalidEvent("summary.bucket_counts do not add up to summary.count")
