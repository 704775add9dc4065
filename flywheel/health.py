"""Health that tells the truth: liveness from progress, readiness from loading (docs/operations.md#health).

- **Live** (`/livez`): the event loop answers, no consumed partition has had records waiting (lag > 0)
  without its committed offset advancing for `liveness_stall_s`, and no task of a watched thread pool
  (queued or running) is older than its bound. A stalled consumer or a wedged worker thread is a restart.
  The stall clock is paused while state loads (a replay, Faust table recovery): the agent legitimately
  waits then, and a restart would only start the load again.
- **Ready** (`/readyz`, and `/healthz` which Kubernetes' readiness probe uses): the first partition
  assignment completed (a producer-only service skips this) and nothing is loading. Start-up replays mark
  themselves with `loading(name)`; `flywheel.topicreader.read_to_end` does so for every replay.
- **Lag** (`flywheel_consumer_lag`): end offset − committed offset per consumed partition of the service's
  own group, sampled every `health_sample_s` from the consumer's last fetch (no broker round trip).

The progress logic (`ProgressTracker`, `WatchedThreadPool`) is plain code with an injectable clock; only
`HealthSampler` reads Faust.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

Clock = Callable[[], float]
Partition = tuple[str, int]

CONSUMER_LAG = Gauge("flywheel_consumer_lag", "Records not yet processed: end offset minus committed offset",
                     ["service", "group", "topic", "partition"])
PROGRESS_AGE = Gauge("flywheel_consumer_stalled_seconds",
                     "Seconds a partition has had records waiting with no committed-offset advance (0 = no lag)",
                     ["service", "group", "topic", "partition"])
POOL_OLDEST = Gauge("flywheel_worker_pool_oldest_task_seconds",
                    "Age of the oldest task of a watched worker pool, queued or running (0 = idle)", ["service", "pool"])
LIVE = Gauge("flywheel_live", "1 when the service reports live on /livez", ["service"])
READY = Gauge("flywheel_ready", "1 when the service reports ready on /readyz", ["service"])

_loading: Counter[str] = Counter()
_loading_lock = threading.Lock()


@contextmanager
def loading(name: str) -> Iterator[None]:
    """Mark this process as loading state (not ready, stall clock paused) for the duration of the block."""
    with _loading_lock:
        _loading[name] += 1
    try:
        yield
    finally:
        with _loading_lock:
            _loading[name] -= 1
            if _loading[name] <= 0:
                del _loading[name]


def loading_now() -> list[str]:
    """The names of the loads in progress in this process."""
    with _loading_lock:
        return sorted(_loading)


@dataclass
class _Seen:
    committed: int
    end: int
    since: float  # when it last advanced or last had nothing waiting


@dataclass(frozen=True)
class Stall:
    partition: Partition
    lag: int
    seconds: float


class ProgressTracker:
    """Per partition: lag, and how long records have waited with no committed-offset advance."""

    def __init__(self, stall_after_s: float, clock: Clock = time.monotonic) -> None:
        self.stall_after_s = stall_after_s
        self.clock = clock
        self._seen: dict[Partition, _Seen] = {}

    def observe(self, offsets: Mapping[Partition, tuple[int, int]]) -> None:
        """The current assignment's (committed, end) per partition; partitions no longer present are dropped."""
        now = self.clock()
        for gone in set(self._seen) - set(offsets):
            del self._seen[gone]
        for tp, (committed, end) in offsets.items():
            prev = self._seen.get(tp)
            if prev is None or committed > prev.committed or committed >= end:
                self._seen[tp] = _Seen(committed, end, now)
            else:
                prev.end = max(prev.end, end)

    def pause(self) -> None:
        """Restart every stall clock now (state is loading: waiting is expected)."""
        now = self.clock()
        for seen in self._seen.values():
            seen.since = now

    def lag(self) -> dict[Partition, int]:
        return {tp: max(s.end - s.committed, 0) for tp, s in self._seen.items()}

    def waiting_s(self) -> dict[Partition, float]:
        """Seconds each partition has had records waiting without progress (0 when none wait)."""
        now = self.clock()
        return {tp: (now - s.since if s.end > s.committed else 0.0) for tp, s in self._seen.items()}

    def stalled(self) -> list[Stall]:
        lag, waiting = self.lag(), self.waiting_s()
        return [Stall(tp, lag[tp], waiting[tp]) for tp in sorted(self._seen)
                if lag[tp] > 0 and waiting[tp] >= self.stall_after_s]


class WatchedThreadPool(ThreadPoolExecutor):
    """A ThreadPoolExecutor that knows the age of its oldest unfinished task (queued or running)."""

    def __init__(self, max_workers: int, *, name: str, max_task_s: float | None,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(max_workers, thread_name_prefix=name)
        self.name, self.max_task_s, self.clock = name, max_task_s, clock
        self._pending: dict[int, float] = {}
        self._lock = threading.Lock()
        self._next = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            self._next += 1
            token = self._next
            self._pending[token] = self.clock()
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(lambda _: self._done(token))
        return future

    def _done(self, token: int) -> None:
        with self._lock:
            self._pending.pop(token, None)

    def oldest_s(self) -> float:
        with self._lock:
            first = min(self._pending.values(), default=None)
        return 0.0 if first is None else self.clock() - first

    def overdue(self) -> bool:
        return self.max_task_s is not None and self.oldest_s() > self.max_task_s


class Health:
    """What /livez and /readyz answer for one service."""

    def __init__(self, service: str, stall_after_s: float, clock: Clock = time.monotonic,
                 loads: Callable[[], list[str]] = loading_now) -> None:
        self.service = service
        self.progress = ProgressTracker(stall_after_s, clock)
        self.pools: list[WatchedThreadPool] = []
        self.assigned = False  # the first partition assignment completed
        self.needs_assignment = True
        self.extra_loads: Callable[[], list[str]] = lambda: []
        self._loads = loads

    def watch(self, pool: WatchedThreadPool) -> WatchedThreadPool:
        self.pools.append(pool)
        return pool

    def loads(self) -> list[str]:
        return [*self._loads(), *self.extra_loads()]

    def live(self) -> tuple[bool, list[str]]:
        reasons = [f"{s.partition[0]}[{s.partition[1]}]: {s.lag} records waiting, no progress for {s.seconds:.0f}s"
                   for s in self.progress.stalled()]
        reasons += [f"pool {p.name}: oldest task {p.oldest_s():.0f}s > {p.max_task_s:.0f}s"
                    for p in self.pools if p.overdue()]
        LIVE.labels(self.service).set(0 if reasons else 1)
        return not reasons, reasons

    def ready(self) -> tuple[bool, list[str]]:
        reasons = [f"loading {name}" for name in self.loads()]
        if self.needs_assignment and not self.assigned:
            reasons.append("waiting for the first partition assignment")
        READY.labels(self.service).set(0 if reasons else 1)
        return not reasons, reasons


class HealthSampler:
    """Reads the Faust consumer's assignment, committed offsets and last-fetched high watermarks into a
    Health and the lag gauges. Every topic the group consumes counts except Faust's own (table changelogs
    and repartition topics, named `<app id>-...`), which the group restores rather than consumes."""

    def __init__(self, app: Any, health: Health) -> None:
        self.app, self.health = app, health
        self.group = str(app.conf.id)
        self._internal = f"{self.group}-"
        self._exported: set[Partition] = set()
        self._earliest: dict[Partition, int] = {}

    async def sample(self) -> None:
        if self.app.producer_only:
            self.health.needs_assignment = False
            self._export({}, {})
        else:
            offsets = await self._offsets()
            if offsets is not None:
                self.health.progress.observe(offsets)
            if self.health.loads():
                self.health.progress.pause()
            self._export(self.health.progress.lag(), self.health.progress.waiting_s())
        for pool in self.health.pools:
            POOL_OLDEST.labels(self.health.service, pool.name).set(pool.oldest_s())
        self.health.live()
        self.health.ready()

    async def _offsets(self) -> dict[Partition, tuple[int, int]] | None:
        consumer = self.app.consumer
        try:
            tps = [tp for tp in consumer.assignment() if not tp.topic.startswith(self._internal)]
        except Exception:  # no consumer yet (starting): nothing to say
            return None
        if tps:
            self.health.assigned = True
        # Faust's own record of what it committed for the group (the next offset to process); None before
        # the group's first commit, when the position is the partition's earliest offset.
        committed: Mapping[Any, int | None] = getattr(consumer, "_committed_offset", {})
        missing = [tp for tp in tps if committed.get(tp) is None and (tp.topic, tp.partition) not in self._earliest]
        if missing:
            try:
                starts = await consumer.earliest_offsets(*missing)
                self._earliest.update({(tp.topic, tp.partition): int(o or 0) for tp, o in starts.items()})
            except Exception:
                return None
        out: dict[Partition, tuple[int, int]] = {}
        for tp in tps:
            try:
                end = consumer.highwater(tp)
            except Exception:
                end = None
            key = (tp.topic, tp.partition)
            position = committed.get(tp)
            if position is None:
                position = self._earliest.get(key, 0)
            if end is None:  # nothing fetched yet: the position is all we know
                end = position
            out[key] = (int(position), int(end))
        return out

    def _export(self, lag: Mapping[Partition, int], waiting: Mapping[Partition, float]) -> None:
        service = self.health.service
        for gone in self._exported - set(lag):
            for gauge in (CONSUMER_LAG, PROGRESS_AGE):
                with suppress(KeyError):
                    gauge.remove(service, self.group, gone[0], str(gone[1]))
        for tp, value in lag.items():
            CONSUMER_LAG.labels(service, self.group, tp[0], str(tp[1])).set(value)
            PROGRESS_AGE.labels(service, self.group, tp[0], str(tp[1])).set(waiting.get(tp, 0.0))
        self._exported = set(lag)
