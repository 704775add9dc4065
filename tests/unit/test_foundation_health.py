"""Health that tells the truth: the stall and pool-age logic on a fake clock, readiness while loading, and the
Faust sampler over a scripted consumer (no broker)."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from flywheel.faust_app import health_of, make_app
from flywheel.health import CONSUMER_LAG, Health, HealthSampler, ProgressTracker, WatchedThreadPool, loading
from flywheel.settings import FlywheelSettings

pytestmark = pytest.mark.unit
TOPIC = "model.metrics-observed"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_partition_with_work_and_no_progress_stalls_at_the_bound_not_before() -> None:
    clock = Clock()
    tracker = ProgressTracker(stall_after_s=30, clock=clock)
    tracker.observe({(TOPIC, 0): (5, 9)})
    clock.now += 29.999
    tracker.observe({(TOPIC, 0): (5, 12)})  # more records, still no commit
    assert tracker.stalled() == []
    clock.now += 0.001
    [stall] = tracker.stalled()
    assert (stall.partition, stall.lag, stall.seconds) == ((TOPIC, 0), 7, 30.0)


def test_any_committed_advance_restarts_the_clock() -> None:
    clock = Clock()
    tracker = ProgressTracker(stall_after_s=30, clock=clock)
    tracker.observe({(TOPIC, 0): (5, 100)})
    clock.now += 29
    tracker.observe({(TOPIC, 0): (6, 100)})  # slow, but moving
    clock.now += 29
    assert tracker.stalled() == []
    assert tracker.lag() == {(TOPIC, 0): 94}
    clock.now += 1
    assert [s.partition for s in tracker.stalled()] == [(TOPIC, 0)]


def test_no_lag_is_never_a_stall_however_long_it_is_idle() -> None:
    clock = Clock()
    tracker = ProgressTracker(stall_after_s=30, clock=clock)
    tracker.observe({(TOPIC, 0): (9, 9)})
    clock.now += 3600
    tracker.observe({(TOPIC, 0): (9, 9)})
    assert tracker.stalled() == [] and tracker.waiting_s() == {(TOPIC, 0): 0.0}
    # the clock starts when records start to wait, not when the partition was last idle
    tracker.observe({(TOPIC, 0): (9, 10)})
    clock.now += 29
    assert tracker.stalled() == []


def test_revoked_partitions_are_forgotten_and_pause_restarts_every_clock() -> None:
    clock = Clock()
    tracker = ProgressTracker(stall_after_s=30, clock=clock)
    tracker.observe({(TOPIC, 0): (0, 5), (TOPIC, 1): (0, 5)})
    clock.now += 31
    tracker.observe({(TOPIC, 1): (0, 5)})
    assert [s.partition for s in tracker.stalled()] == [(TOPIC, 1)]
    tracker.pause()  # state loading: waiting is expected
    assert tracker.stalled() == []
    clock.now += 30
    assert [s.partition for s in tracker.stalled()] == [(TOPIC, 1)]


def test_a_pool_is_overdue_when_its_oldest_task_queued_or_running_passes_the_bound() -> None:
    clock = Clock()
    pool = WatchedThreadPool(1, name="io", max_task_s=10, clock=clock)
    release = threading.Event()
    try:
        running = pool.submit(release.wait)
        clock.now += 5
        queued = pool.submit(lambda: None)  # waits behind the running one
        assert pool.oldest_s() == 5 and not pool.overdue()
        clock.now += 5.5
        assert pool.overdue()
        release.set()
        running.result(timeout=5)
        queued.result(timeout=5)
        assert pool.oldest_s() == 0.0 and not pool.overdue()
    finally:
        release.set()
        pool.shutdown()


def test_a_pool_without_a_bound_is_never_overdue() -> None:
    clock = Clock()
    pool = WatchedThreadPool(1, name="jobs", max_task_s=None, clock=clock)
    release = threading.Event()
    try:
        pool.submit(release.wait)
        clock.now += 10**6
        assert not pool.overdue()
    finally:
        release.set()
        pool.shutdown()


def test_live_and_ready_say_why() -> None:
    clock = Clock()
    health = Health("monitor", stall_after_s=30, clock=clock, loads=lambda: [])
    assert health.ready() == (False, ["waiting for the first partition assignment"])
    health.assigned = True
    assert health.ready() == (True, [])
    with loading("monitor-recovery"):
        loads = Health("monitor", 30, clock).ready()
    assert loads == (False, ["loading monitor-recovery", "waiting for the first partition assignment"])
    assert Health("monitor", 30, clock).loads() == []  # the block ended
    health.progress.observe({(TOPIC, 2): (0, 3)})
    clock.now += 31
    live, reasons = health.live()
    assert not live and reasons == [f"{TOPIC}[2]: 3 records waiting, no progress for 31s"]


class ScriptedConsumer:
    """The consumer surface HealthSampler reads: assignment, Faust's committed offsets, fetched highwaters."""

    def __init__(self) -> None:
        self.tps = {TP(TOPIC, 0), TP(TOPIC, 1), TP("flywheel-monitor-test-windows-changelog", 0)}
        self._committed_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self.ends = {TP(TOPIC, 0): 7, TP(TOPIC, 1): None, TP("flywheel-monitor-test-windows-changelog", 0): 50}

    def assignment(self) -> set[TP]:
        return self.tps

    def highwater(self, tp: TP) -> int | None:
        return self.ends[tp]

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: 2 for tp in tps}


def gauge(topic: str, partition: int) -> float | None:
    for metric in CONSUMER_LAG.collect():
        for s in metric.samples:
            if s.labels.get("topic") == topic and s.labels.get("partition") == str(partition) \
                    and s.labels.get("group") == "flywheel-monitor-test":
                return s.value
    return None


def test_sampler_exports_lag_of_the_services_own_topics_and_drops_revoked_ones() -> None:
    clock = Clock()
    consumer = ScriptedConsumer()
    app = SimpleNamespace(conf=SimpleNamespace(id="flywheel-monitor-test"), producer_only=False, consumer=consumer)
    health = Health("monitor", stall_after_s=30, clock=clock, loads=lambda: [])
    sampler = HealthSampler(app, health)
    asyncio.run(sampler.sample())
    # nothing committed yet: the position is the partition's earliest offset (2); nothing fetched on 1
    assert health.progress.lag() == {(TOPIC, 0): 5, (TOPIC, 1): 0}
    assert gauge(TOPIC, 0) == 5 and gauge("flywheel-monitor-test-windows-changelog", 0) is None
    consumer._committed_offset[TP(TOPIC, 0)] = 7
    consumer.tps = {TP(TOPIC, 0)}
    asyncio.run(sampler.sample())
    assert gauge(TOPIC, 0) == 0 and gauge(TOPIC, 1) is None


def test_every_app_serves_live_and_ready_and_a_producer_only_one_needs_no_assignment(tmp_path: Path) -> None:
    settings = FlywheelSettings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, liveness_stall_s=45)
    app = make_app("ingest", settings)
    app.producer_only = True
    paths = {str(route) for route in app.web.views}
    assert {"/livez", "/readyz", "/healthz", "/metrics"} <= paths
    health = health_of(app)
    assert health.progress.stall_after_s == 45
    sampler = HealthSampler(app, health)
    asyncio.run(sampler.sample())
    assert health.ready() == (True, []) and health.live() == (True, [])


def test_faust_keeps_the_committed_offsets_the_sampler_reads(tmp_path: Path) -> None:
    # HealthSampler reads Faust's private record of committed offsets; this pins its name and shape.
    app = make_app("monitor", FlywheelSettings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path))
    committed: Any = app.consumer._committed_offset
    assert committed[TP(TOPIC, 0)] is None
