"""What every benchmark returns, and small helpers for timing and percentiles."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BenchResult:
    """One benchmark's section of docs/benchmarks.md."""

    title: str
    command: str
    rows: list[dict[str, Any]]
    goal: str = ""
    verdict: str = ""  # e.g. "met: 0.93x >= 0.8x"
    notes: list[str] = field(default_factory=list)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median_rate(fn: Callable[[], int], repeats: int = 5) -> float:
    """Median over `repeats` runs of items/second, where fn() returns the item count it processed."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        items = fn()
        rates.append(items / (time.perf_counter() - start))
    return statistics.median(rates)
