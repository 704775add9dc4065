"""Monitor benchmarks, each beside its baseline measured in the same run.

(a) metric events/s through one monitor worker (Avro in, windows, rules) vs a no-op Faust agent, same topic;
(b) observations/s when events carry pre-aggregated summaries vs one observation per event;
(c) breach -> RetrainRequested latency p99 vs a bare produce -> consume hop on the same broker;
(d) two monitor workers on four partitions vs one, both measured after the group has settled.
Workers are subprocesses (bench/monitor_workers.py) on a fresh local stack each; (a) and (d) run their two
sides back to back `repeats` times and report the median of the per-pair ratios (the machine is shared).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from functools import partial

from bench.common import BenchResult, median_rate, percentile
from bench.monitor_latency import breach_latency
from bench.monitor_throughput import paired, pre_joined, pre_produced
from bench.monitor_workers import MODELS, OBS_PER_EVENT, events

COMMAND = "python -m bench --only monitor"


def in_process_rate(per_event: int, n: int) -> float:
    """Observations/s on one core: decode + validate + window + rules, no broker (the worker's own cost)."""
    from flywheel.bootstrap import build_codec
    from flywheel.settings import FlywheelSettings
    from flywheel_dev.harness.monitor import registration
    from flywheel_monitor.core import MonitorCore
    from flywheel_monitor.decoding import MillisDecoder
    from flywheel_monitor.rules import DEFAULT_RULES, RuleSet
    from flywheel_monitor.windows import DictWindowStore

    codec = build_codec(FlywheelSettings())
    decoder = MillisDecoder(codec)  # the service's decoder
    payloads = [codec.encode("ModelMetricsObserved", r) for r in events(n, per_event, 1_700_000_000_000)]
    monitor = MonitorCore(RuleSet.model_validate(DEFAULT_RULES), DictWindowStore())
    for i in range(MODELS):
        monitor.register(registration(f"model-{i}", at_ms=1_600_000_000_000))

    def once() -> int:
        for payload in payloads:
            monitor.observe(decoder.decode(payload).record)
        return n * per_event
    return median_rate(once, repeats=3)


def _verdict(ok: bool, text: str) -> str:
    return f"{'met' if ok else 'not met'}: {text}"


def _ratios(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def throughput(n: int, repeats: int) -> BenchResult:
    noop, one, ratio, ratios = paired(partial(pre_produced, "noop", n), partial(pre_produced, "monitor", n), repeats)
    return BenchResult(
        "Monitor: metric events/s through one worker", COMMAND,
        [{"worker": "no-op Faust agent (baseline)", "events/s": noop, "ratio": 1.0},
         {"worker": "monitor (Avro, windows, rules)", "events/s": one, "ratio": ratio}],
        "monitor >= 0.8x the no-op agent", _verdict(ratio >= 0.8, f"{ratio:.2f}x (median of {repeats} pairs)"),
        [f"{n:,} ModelMetricsObserved events ({OBS_PER_EVENT}-sample summaries, {MODELS} models) pre-produced "
         "to model.metrics-observed (4 partitions) on a fresh Tansu; each worker is a subprocess built by the "
         "same make_app settings on the same raw topic; rate = events over first-to-last handled.",
         f"{repeats} no-op/monitor pairs run back to back; rows are medians, ratio = median of the pair "
         f"ratios ({_ratios(ratios)})."])


def scale_out(n: int, repeats: int) -> BenchResult:
    produce_s: list[float] = []
    one, two, ratio, ratios = paired(partial(pre_joined, 1, n, produce_s), partial(pre_joined, 2, n, produce_s),
                                     repeats)
    return BenchResult(
        "Monitor: two workers on four partitions", COMMAND,
        [{"workers": 1, "events/s": one, "ratio": 1.0}, {"workers": 2, "events/s": two, "ratio": ratio}],
        "scales out with partitions (> 1x)", _verdict(ratio > 1.0, f"{ratio:.2f}x (median of {repeats} pairs)"),
        [f"Workers join first: {n:,} events are produced only once every partition is assigned and the "
         "assignment has held for 2 s, so no join or rebalance is in the figure; rate = events over "
         "first-to-last handled by any worker.",
         f"{os.cpu_count()} cores shared by the workers, the broker and the producer (which runs during the "
         f"span: median {statistics.median(produce_s):.1f} s for the {n:,} events); pair ratios "
         f"{_ratios(ratios)}."])


def run(quick: bool = False) -> list[BenchResult]:
    n, repeats = (3_000, 1) if quick else (20_000, 3)
    first = throughput(n, repeats)
    one = first.rows[1]["events/s"]
    pre = in_process_rate(OBS_PER_EVENT, 500 if quick else 3_000)
    single = in_process_rate(1, 2_000 if quick else 20_000)
    breach, bare = breach_latency(10 if quick else 60)
    p99, bare99 = percentile(breach, 99) * 1000, percentile(bare, 99) * 1000
    return [
        first,
        BenchResult("Monitor: observations/s with pre-aggregated events", COMMAND,
                    [{"path": "engine, 1 observation per event (baseline)", "observations/s": single},
                     {"path": f"engine, {OBS_PER_EVENT} per event (summary)", "observations/s": pre},
                     {"path": f"worker (a), {OBS_PER_EVENT} per event", "observations/s": one * OBS_PER_EVENT}],
                    ">= 1,000,000 observations/s per core",
                    _verdict(one * OBS_PER_EVENT >= 1e6, f"{one * OBS_PER_EVENT:,.0f}/s through the worker"),
                    ["engine rows: decode + validate + window + rules in-process on one core, no broker."]),
        BenchResult("Monitor: breach -> RetrainRequested latency", COMMAND,
                    [{"path": "bare produce -> consume hop (baseline)", "p50 ms": percentile(bare, 50) * 1000,
                      "p99 ms": bare99},
                     {"path": "metric event -> monitor -> RetrainRequested", "p50 ms": percentile(breach, 50) * 1000,
                      "p99 ms": p99}],
                    "p99 <= 500 ms", _verdict(p99 <= 500, f"p99 {p99:.0f} ms"),
                    [f"{len(breach)} breaches, one at a time, each a fresh model tipped by one event; local "
                     "profile (FLYWHEEL_KAFKA_FETCH_MAX_WAIT_MS=10, honoured by the Faust consumer)."]),
        scale_out(n, repeats),
    ]


if __name__ == "__main__":
    print(json.dumps([r.__dict__ for r in run(quick="--quick" in sys.argv)], indent=2, default=str))
