"""Throughput runs behind monitor benchmarks (a) and (d), each on a fresh local stack.

(a) `pre_produced`: n metric events are on the topic before the worker starts; the rate is n over the span
from the first event the worker handled to the last. The no-op agent and the monitor run the same way.
(d) `pre_joined`: the workers start on a topic holding only the model registrations and are left to join
the group until every metric partition is assigned (and the assignment has held still); only then are the n
events produced. The rate is n over the span from the first event any worker handled to the last, so
neither the join nor the rebalance it causes is in the figure; the producer runs during the span, the same
way for one worker and for two.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.monitor_workers import produce, rate, read, spawn, stop, wait_until
from flywheel_dev.localstack import LocalStack

PARTITIONS = 4
SETTLE_S = 2.0  # an assignment that held this long is the group's final one


def pre_produced(kind: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp, LocalStack() as stack:
        produce(stack, n)
        files = [Path(tmp) / "progress-0.json"]
        procs = [spawn(kind, stack, files[0], Path(tmp) / "state-0")]
        try:
            spans = wait_until(files, lambda s: s[0]["count"] >= n, f"{n} events handled")
        finally:
            stop(procs)
        return rate(spans, n)


def pre_joined(workers: int, n: int, produce_s: list[float] | None = None) -> float:
    """Events/s with `workers` monitors already holding their partitions; the producer's seconds go to produce_s."""
    with tempfile.TemporaryDirectory() as tmp, LocalStack() as stack:
        produce(stack, 0)  # the registrations only: the models are known, no metric event yet
        files = [Path(tmp) / f"progress-{i}.json" for i in range(workers)]
        procs = [spawn("monitor", stack, f, Path(tmp) / f"state-{i}") for i, f in enumerate(files)]
        try:
            _wait_assigned(files, workers)
            produced = produce(stack, n, registrations=False)
            if produce_s is not None:
                produce_s.append(produced)
            spans = wait_until(files, lambda s: sum(x["count"] for x in s) >= n, f"{n} events handled")
        finally:
            stop(procs)
        return rate(spans, n)


def _wait_assigned(files: list[Path], workers: int) -> None:
    def joined(spans: list[dict[str, Any]]) -> bool:
        return sum(s["assigned"] for s in spans) == PARTITIONS and all(s["assigned"] for s in spans)

    while True:
        before = wait_until(files, joined, f"{workers} worker(s) holding all {PARTITIONS} partitions")
        time.sleep(SETTLE_S)
        if read(files) == before:
            return


def paired(first: Any, second: Any, repeats: int) -> tuple[float, float, float, list[float]]:
    """Run first() then second() `repeats` times; medians of each and of the per-pair ratio second/first."""
    pairs = [(first(), second()) for _ in range(repeats)]
    ratios = [b / a for a, b in pairs]
    return (statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs),
            statistics.median(ratios), ratios)
