"""Live metrics: feedback and served traffic folded per (model, version) into tumbling windows and sent as
`model.metrics-observed` summaries, one event per metric per window.

- From feedback joined to its prediction (core.RecentPredictions): `accuracy` (a summary with buckets
  wrong / right, like one observation per labelled text) and `macro_f1` (the window's value, sample_count =
  labelled texts) — measured, not estimated.
- From every text answered (inputs.FeaturePredictor): `feature:prediction` (label index),
  `feature:confidence`, `feature:text_length`, and with a reference `feature:oov_rate` and
  `feature:centroid_distance`, each a histogram over the bounds of the version's reference.json
  (flywheel.features), which the monitor compares with the registration's reference of the same buckets.

Windows are aligned to wall-clock multiples of `window_s`; at each boundary a part (feedback, or served
traffic) with at least `min_samples` observations is sent and reset. A smaller part carries over into the
next window (its window_start stays), so quiet models are reported later rather than never, and a part is
sent whatever its size once it spans MAX_CARRY_MS. `LiveWindows` is pure (the clock is passed in);
`LiveEmitter` sleeps to each boundary and publishes off the event loop, keeping what it could not send.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram

from flywheel import features as fx
from flywheel.catalogue import Service
from flywheel.events import envelope, now_ms
from flywheel_serving.background import WindowEmitter
from flywheel_serving.core import Joined, Prediction
from flywheel_serving.inputs import Profile
from flywheel_serving.ports import Publisher

log = logging.getLogger(__name__)
TOPIC = "model.metrics-observed"
MAX_CARRY_MS = 3_600_000  # a part is sent after this long whatever its size (the monitor allows 24 h)
MAX_PENDING = 10_000  # events kept while the broker cannot take them; the oldest go first beyond this


@dataclass(slots=True)
class _Served:
    start_ms: int
    profile: Profile
    histograms: dict[str, fx.Histogram]
    count: int = 0


@dataclass(slots=True)
class _Feedback:
    start_ms: int
    first_seen: float  # time.monotonic() of its first label: feedback -> summary latency
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)
    count: int = 0


@dataclass(frozen=True, slots=True)
class Closed:
    """Records of one closed part; `first_seen` set for feedback (the oldest label it carries)."""

    records: list[dict[str, Any]]
    first_seen: float | None = None


def metric_record(model: str, version: str, metric: str, value: float, count: int, start_ms: int, end_ms: int,
                  summary: dict[str, Any] | None) -> dict[str, Any]:
    return {"envelope": envelope(Service.SERVING, occurred_at_ms=end_ms), "model_id": model,
            "model_version": version, "metric": metric, "value": value, "sample_count": count,
            "window_start": start_ms, "window_end": end_ms, "summary": summary}


def feedback_records(model: str, version: str, pairs: Counter[tuple[str, str]], start_ms: int,
                     end_ms: int) -> list[dict[str, Any]]:
    flat = [pair for pair, n in pairs.items() for _ in range(n)]
    n, right = len(flat), sum(n for (p, t), n in pairs.items() if p == t)
    summary = {"count": n, "sum": float(right), "sum_squares": float(right), "min": 0.0 if right < n else 1.0,
               "max": 1.0 if right else 0.0, "bucket_bounds": [0.5], "bucket_counts": [n - right, right]}
    return [metric_record(model, version, "accuracy", right / n, n, start_ms, end_ms, summary),
            metric_record(model, version, "macro_f1", fx.macro_f1(flat), n, start_ms, end_ms, None)]


def served_records(model: str, version: str, part: _Served, end_ms: int) -> list[dict[str, Any]]:
    return [metric_record(model, version, fx.FEATURE_PREFIX + name, h.mean, h.count, part.start_ms, end_ms,
                          h.summary()) for name, h in part.histograms.items() if h.count]


class LiveWindows:
    def __init__(self, window_s: float, min_samples: int) -> None:
        self.window_ms = max(1, int(window_s * 1000))
        self.min_samples = min_samples
        self._served: dict[tuple[str, str], _Served] = {}
        self._feedback: dict[tuple[str, str], _Feedback] = {}

    def next_boundary(self, at_ms: int) -> int:
        return (at_ms // self.window_ms + 1) * self.window_ms

    def served(self, model: str, version: str, predictions: Sequence[Prediction], at_ms: int) -> None:
        """Count the features of one answer (all its predictions come from one version and one forward)."""
        profile = getattr(predictions[0], "profile", None) if predictions else None
        if profile is None:
            return
        key = (model, version)
        part = self._served.get(key)
        if part is None:
            histograms = {name: fx.Histogram(bounds) for name, bounds in profile.bounds.items()}
            part = self._served[key] = _Served(at_ms, profile, histograms)
        h = part.histograms
        for p in predictions:
            h[fx.PREDICTION].add(float(p.index))
            h[fx.CONFIDENCE].add(p.probability)
            h[fx.TEXT_LENGTH].add(float(p.length))
            if fx.OOV_RATE in h and not math.isnan(p.oov):
                h[fx.OOV_RATE].add(p.oov)
            if fx.CENTROID_DISTANCE in h and not math.isnan(p.distance):
                h[fx.CENTROID_DISTANCE].add(p.distance)
        part.count += len(predictions)

    def joined(self, joined: Joined, at_ms: int, seen: float | None = None) -> None:
        key = (joined.model, joined.version)
        part = self._feedback.get(key)
        if part is None:
            part = self._feedback[key] = _Feedback(at_ms, time.monotonic() if seen is None else seen)
        part.pairs.update(joined.pairs)
        part.count += len(joined.pairs)

    def close(self, boundary_ms: int, *, everything: bool = False) -> list[Closed]:
        """Every part due at `boundary_ms`: enough samples, or carried for MAX_CARRY_MS (`everything`: any part
        with an observation, as at shut-down)."""
        closed: list[Closed] = []
        for key, fb in list(self._feedback.items()):
            if self._due(fb.count, fb.start_ms, boundary_ms, everything):
                closed.append(Closed(feedback_records(*key, fb.pairs, fb.start_ms, boundary_ms), fb.first_seen))
                del self._feedback[key]
        for key, part in list(self._served.items()):
            if self._due(part.count, part.start_ms, boundary_ms, everything):
                closed.append(Closed(served_records(*key, part, boundary_ms)))
                del self._served[key]
        return closed

    def _due(self, count: int, start_ms: int, boundary_ms: int, everything: bool) -> bool:
        if start_ms >= boundary_ms or count == 0:
            return False  # empty, or opened after this boundary (a late tick): it belongs to the next window
        return everything or count >= self.min_samples or boundary_ms - start_ms >= MAX_CARRY_MS


class LiveCounters:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = PromCounter("flywheel_serving_metric_events_total", "model.metrics-observed events by "
                                  "outcome (published, failed: kept and retried, dropped: over MAX_PENDING).",
                                  ["outcome"], registry=registry)
        self.latency = PromHistogram("flywheel_serving_feedback_to_metrics_seconds", "Oldest label of a window "
                                     "-> its accuracy summary acknowledged by the broker.",
                                     buckets=(0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300), registry=registry)


class LiveEmitter(WindowEmitter):
    """Closes the windows at each boundary and publishes their events in a worker thread."""

    what = "live metrics"

    def __init__(self, windows: LiveWindows, publisher: Publisher, counters: LiveCounters,
                 clock: Callable[[], int] = now_ms) -> None:
        self.windows, self.publisher, self.counters, self.clock = windows, publisher, counters, clock
        self._pending: deque[tuple[dict[str, Any], float | None]] = deque()

    async def stop(self) -> None:
        await self._cancel()
        for closed in self.windows.close(self.clock() + 1, everything=True):  # nothing observed is left behind
            self._keep(closed)
        await asyncio.to_thread(self.publish_pending)

    def _close(self, boundary_ms: int) -> None:
        for closed in self.windows.close(boundary_ms):
            self._keep(closed)

    def _keep(self, closed: Closed) -> None:
        for i, record in enumerate(closed.records):
            self._pending.append((record, closed.first_seen if i == 0 else None))
        while len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self.counters.events.labels("dropped").inc()

    def publish_pending(self) -> None:
        """Send in order; stop at the first failure and keep the rest for the next boundary."""
        while self._pending:
            record, first_seen = self._pending[0]
            try:
                self.publisher.publish(TOPIC, record)
            except Exception as exc:
                self.counters.events.labels("failed").inc()
                log.warning("model.metrics-observed not published (%s: %s); %d kept for the next window",
                            type(exc).__name__, exc, len(self._pending),
                            extra={"event_id": record["envelope"]["event_id"], "model_id": record["model_id"]})
                return
            self._pending.popleft()
            self.counters.events.labels("published").inc()
            if first_seen is not None:
                self.counters.latency.observe(time.monotonic() - first_seen)
            log.info("live %s of %s %s: %.4f over %d", record["metric"], record["model_id"],
                     record["model_version"], record["value"], record["sample_count"],
                     extra={"event_id": record["envelope"]["event_id"],
                            "correlation_id": record["envelope"]["correlation_id"]})
