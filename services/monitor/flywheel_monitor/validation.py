"""Checks on a decoded ModelMetricsObserved before it may touch a window. Pure.

Each failure raises InvalidEvent (a CodecError) with the reason, which the agent dead-letters. The checks
run on every event, so each reason is only formatted once it is known to be needed. Event time is bounded
against a clock the caller passes in (the core's injectable clock): a `window_end` far in the future would
otherwise move every rule's current window ahead and make all later, honest windows count as late.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from operator import lt
from typing import Any

from flywheel.errors import InvalidEvent
from flywheel.events import to_millis

isfinite = math.isfinite


class UnknownModel(InvalidEvent):
    """Metrics for a model no ModelVersionRegistered has announced."""


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """How far event time may stray: `window_end` at most `max_skew_ms` ahead of the clock, and a window at
    most `max_window_ms` long (settings: FLYWHEEL_MAX_CLOCK_SKEW_S, FLYWHEEL_MAX_OBSERVATION_WINDOW_S)."""

    max_skew_ms: int = 300_000
    max_window_ms: int = 86_400_000


DEFAULT_BOUNDS = TimeBounds()


def check_observation(record: dict[str, Any], now_ms: int, bounds: TimeBounds = DEFAULT_BOUNDS) -> None:
    """Raise InvalidEvent naming the first bad field; `now_ms` is the clock's reading for this event."""
    if not isfinite(record["value"]):
        raise InvalidEvent(f"value is {record['value']!r}, not a finite number")
    if record["sample_count"] < 0:
        raise InvalidEvent(f"sample_count is negative ({record['sample_count']})")
    end, start = to_millis(record["window_end"]), to_millis(record["window_start"])
    if end < start:
        raise InvalidEvent("window_end is before window_start")
    if end - now_ms > bounds.max_skew_ms:
        raise InvalidEvent(f"window_end is {(end - now_ms) / 1000:.0f} s ahead of the monitor's clock "
                           f"(at most {bounds.max_skew_ms / 1000:g} s of clock skew is allowed)")
    if end - start > bounds.max_window_ms:
        raise InvalidEvent(f"the window is {(end - start) / 1000:.0f} s long "
                           f"(at most {bounds.max_window_ms / 1000:g} s is allowed)")
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
