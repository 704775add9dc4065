"""Window aggregates: what one tumbling window knows about one (model, metric). Pure: no Faust, no Kafka.

Serving may send one observation per event or a pre-aggregated summary of many (count, sum, sum of
squares, min, max, histogram); both fold into the same Aggregate, so cost is per event, not per observation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flywheel.events import to_millis

Z_95 = 1.6448536269514722  # normal 95th percentile, for p95 without a histogram


@dataclass(slots=True)
class Aggregate:
    """Running totals of one window; histogram kept only while every part used the same bucket bounds."""

    count: int = 0
    total: float = 0.0
    sum_squares: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    bounds: tuple[float, ...] | None = None
    buckets: list[int] | None = None
    mixed_bounds: bool = False

    def add(self, record: dict[str, Any]) -> Aggregate:
        """Fold one ModelMetricsObserved record in (in place; returns self)."""
        summary = record.get("summary")
        if summary is None:
            n = record["sample_count"]
            value = record["value"]
            self._add_totals(n, value * n, value * value * n, value, value)
            return self
        self._add_totals(summary["count"], summary["sum"], summary["sum_squares"], summary["min"], summary["max"])
        self._add_histogram(tuple(summary["bucket_bounds"]), summary["bucket_counts"])
        return self

    def _add_totals(self, n: int, total: float, squares: float, low: float, high: float) -> None:
        self.count += n
        self.total += total
        self.sum_squares += squares
        self.low = min(self.low, low)
        self.high = max(self.high, high)

    def _add_histogram(self, bounds: tuple[float, ...], counts: list[int]) -> None:
        if not counts or self.mixed_bounds:
            return
        if self.buckets is None:
            self.bounds, self.buckets = bounds, list(counts)
        elif bounds == self.bounds:
            self.buckets = [a + b for a, b in zip(self.buckets, counts, strict=True)]
        else:  # a histogram over different buckets cannot be merged; say so rather than guess
            self.bounds, self.buckets, self.mixed_bounds = None, None, True

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    @property
    def stddev(self) -> float:
        if self.count < 2:
            return 0.0
        var = (self.sum_squares - self.total * self.total / self.count) / (self.count - 1)
        return math.sqrt(max(var, 0.0))

    def quantile(self, q: float) -> float:
        """From the histogram (linear within a bucket, clamped to min/max); else a normal approximation."""
        if not self.count:
            return math.nan
        if self.buckets is None or self.bounds is None:
            return min(max(self.mean + Z_95 * self.stddev, self.low), self.high)
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.buckets):
            if n and seen + n >= rank:
                lower = self.bounds[i - 1] if i > 0 else self.low
                upper = self.bounds[i] if i < len(self.bounds) else self.high
                lower, upper = max(lower, self.low), min(upper, self.high)
                return lower + (upper - lower) * (rank - seen) / n
            seen += n
        return self.high

    def value(self, aggregation: str, window_s: float) -> float:
        """The aggregate a rule compares with its threshold."""
        match aggregation:
            case "mean":
                return self.mean
            case "min":
                return self.low if self.count else math.nan
            case "max":
                return self.high if self.count else math.nan
            case "p95":
                return self.quantile(0.95)
            case "sum":
                return self.total
            case "count":
                return float(self.count)
            case "rate":  # observations per second over the window
                return self.count / window_s
        raise ValueError(f"unknown aggregation {aggregation!r}")


def observed_at_ms(record: dict[str, Any]) -> int:
    """Event time of an observation: the end of the window serving measured (not arrival time)."""
    return to_millis(record["window_end"])


def window_index(at_ms: int, window_ms: int) -> int:
    return at_ms // window_ms


class DictWindowStore:
    """In-memory WindowStore (ports.py), the service's (a per-worker cache: docs/decisions/0015) and the tests'
    and benchmarks': the latest `keep` windows per key and size."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._data: dict[tuple[str, int], dict[int, Aggregate]] = {}

    def get(self, key: str, window_ms: int, at_ms: int) -> Aggregate | None:
        return self._data.get((key, window_ms), {}).get(at_ms // window_ms)

    def put(self, key: str, window_ms: int, at_ms: int, aggregate: Aggregate) -> None:
        windows = self._data.setdefault((key, window_ms), {})
        windows[at_ms // window_ms] = aggregate
        if len(windows) > self.keep:
            del windows[min(windows)]
