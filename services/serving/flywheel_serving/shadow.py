"""Shadow evaluation: a model's candidate scores the same texts as production, off the response path, and labelled
feedback yields paired correctness, sent per window as `model.shadow-evaluated` (docs/decisions/0013).

- `sampled` picks the requests shadowed (a stable hash of the request id against `fraction`).
- `ShadowBook` keeps the candidate's labels by request id (bounded, oldest forgotten first).
- `ShadowWindows` pairs them with production's labels and the true labels when feedback arrives: per
  (model, production version, candidate version) n, each side's correct count, McNemar b and c. Pure.
- `ShadowEmitter` closes the windows at wall-clock boundaries and publishes them off the event loop, keeping
  what the broker did not take.

Only `model.shadow-evaluated` carries the candidate's live numbers: `model.metrics-observed` stays about the
version that answers, so the monitor's rules never fire on a version no client sees.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flywheel.catalogue import Service
from flywheel.events import envelope, now_ms
from flywheel.mcnemar import mcnemar_exact_p
from flywheel_serving.background import WindowEmitter
from flywheel_serving.ports import Publisher

log = logging.getLogger(__name__)
TOPIC = "model.shadow-evaluated"
MAX_PENDING = 10_000


def sampled(request_id: str, fraction: float) -> bool:
    """Whether a request is shadowed: stable per id (a retried request is sampled the same way)."""
    if fraction >= 1.0:
        return True
    return fraction > 0 and zlib.crc32(request_id.encode()) % 10_000 < fraction * 10_000


@dataclass(frozen=True, slots=True)
class Scored:
    """What the candidate answered for one request, and the production answer it shadows."""

    model: str
    production_version: str
    candidate_version: str
    production_labels: tuple[str, ...]
    candidate_labels: tuple[str, ...]


class ShadowBook:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Scored] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def remember(self, request_id: str, scored: Scored) -> None:
        self._items.pop(request_id, None)
        self._items[request_id] = scored
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def take(self, model: str, request_id: str) -> Scored | None:
        scored = self._items.get(request_id)
        if scored is None or scored.model != model:
            return None
        del self._items[request_id]
        return scored


@dataclass(slots=True)
class _Window:
    start_ms: int
    n: int = 0
    production_correct: int = 0
    candidate_correct: int = 0
    b: int = 0
    c: int = 0


@dataclass(frozen=True, slots=True)
class Paired:
    """One labelled request's paired outcome (for the Prometheus counters)."""

    production_correct: int
    candidate_correct: int
    n: int


class ShadowWindows:
    def __init__(self, window_s: float, replica: str = "") -> None:
        self.window_ms = max(1, int(window_s * 1000))
        self.replica = replica
        self._windows: dict[tuple[str, str, str], _Window] = {}

    def next_boundary(self, at_ms: int) -> int:
        return (at_ms // self.window_ms + 1) * self.window_ms

    def pair(self, scored: Scored, production_version: str, true_labels: Sequence[str], at_ms: int) -> Paired | None:
        """Feedback for a shadowed request; None when it cannot pair (another version answered, or the label
        count does not fit)."""
        if production_version != scored.production_version or len(true_labels) != len(scored.candidate_labels):
            return None
        key = (scored.model, scored.production_version, scored.candidate_version)
        w = self._windows.get(key)
        if w is None:
            w = self._windows[key] = _Window(at_ms)
        prod = cand = 0
        for old, new, true in zip(scored.production_labels, scored.candidate_labels, true_labels, strict=True):
            old_right, new_right = old == true, new == true
            prod, cand = prod + old_right, cand + new_right
            w.b += old_right and not new_right
            w.c += new_right and not old_right
        w.n += len(true_labels)
        w.production_correct += prod
        w.candidate_correct += cand
        return Paired(prod, cand, len(true_labels))

    def close(self, boundary_ms: int, *, everything: bool = False) -> list[dict[str, Any]]:
        """Records of every window with pairs that opened before `boundary_ms` (`everything`: all of them)."""
        records = []
        for key, w in list(self._windows.items()):
            if w.n and (everything or w.start_ms < boundary_ms):
                records.append(evaluated_record(*key, w, boundary_ms, self.replica))
                del self._windows[key]
        return records


def evaluated_record(model: str, production: str, candidate: str, w: _Window, end_ms: int,
                     replica: str) -> dict[str, Any]:
    return {"envelope": envelope(Service.SERVING, correlation_id=f"shadow:{model}:{candidate}",
                                 occurred_at_ms=end_ms),
            "model_id": model, "production_version": production, "candidate_version": candidate,
            "window_start": w.start_ms, "window_end": max(end_ms, w.start_ms), "pairs": w.n,
            "production_correct": w.production_correct, "candidate_correct": w.candidate_correct,
            "b": w.b, "c": w.c, "p_value": mcnemar_exact_p(w.b, w.c), "replica": replica}


class ShadowEmitter(WindowEmitter):
    """Closes the shadow windows at each boundary and publishes them in a worker thread."""

    what = "shadow evaluation"

    def __init__(self, windows: ShadowWindows, publisher: Publisher, on_outcome: Callable[[str], None],
                 clock: Callable[[], int] = now_ms) -> None:
        self.windows, self.publisher, self.on_outcome, self.clock = windows, publisher, on_outcome, clock
        self._pending: deque[dict[str, Any]] = deque()

    async def stop(self) -> None:
        await self._cancel()
        self._keep(self.windows.close(self.clock() + 1, everything=True))
        await asyncio.to_thread(self.publish_pending)

    def _close(self, boundary_ms: int) -> None:
        self._keep(self.windows.close(boundary_ms))

    def _keep(self, records: list[dict[str, Any]]) -> None:
        self._pending.extend(records)
        while len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self.on_outcome("dropped")

    def publish_pending(self) -> None:
        while self._pending:
            record = self._pending[0]
            try:
                self.publisher.publish(TOPIC, record)
            except Exception as exc:
                self.on_outcome("failed")
                log.warning("model.shadow-evaluated not published (%s: %s); %d kept for the next window",
                            type(exc).__name__, exc, len(self._pending),
                            extra={"event_id": record["envelope"]["event_id"], "model_id": record["model_id"]})
                return
            self._pending.popleft()
            self.on_outcome("published")
            log.info("shadow %s vs %s of %s: %d pairs, correct %d vs %d, b=%d c=%d", record["candidate_version"],
                     record["production_version"], record["model_id"], record["pairs"],
                     record["candidate_correct"], record["production_correct"], record["b"], record["c"],
                     extra={"event_id": record["envelope"]["event_id"],
                            "correlation_id": record["envelope"]["correlation_id"], "model_id": record["model_id"]})
