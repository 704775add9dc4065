"""The model manager: which predictor answers for each model, loads in the background, atomic swaps.

Forwards run in one worker thread (the event loop never blocks on torch), loads in another. The current
predictor of a model is read by the batcher at the start of each batch and replaced on the event loop, so a
swap lands between two batches: the batch in flight finishes on the old version, the next one runs the new
one, and no request fails or is dropped."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from flywheel_serving.batching import Batcher
from flywheel_serving.core import Answer, BadRequest, Plan, Prediction, Target
from flywheel_serving.events import load_failed
from flywheel_serving.metrics import ServingMetrics
from flywheel_serving.ports import ArtifactStore, ModelLoader, Predictor, Publisher, StageReader
from flywheel_serving.topics import LOAD_FAILED_TOPIC, SERVICE

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, stages: StageReader, artifacts: ArtifactStore, loader: ModelLoader, publisher: Publisher,
                 metrics: ServingMetrics, *, max_batch: int, max_wait_s: float, models: tuple[str, ...] = ()) -> None:
        self.stages, self.artifacts, self.loader, self.publisher = stages, artifacts, loader, publisher
        self.metrics, self.max_batch, self.max_wait_s = metrics, max_batch, max_wait_s
        self.plan = Plan(models=frozenset(models))
        self.current: dict[str, Predictor] = {}
        self.batchers: dict[str, Batcher[Prediction]] = {}
        self.started = False
        self._forward_pool = ThreadPoolExecutor(1, thread_name_prefix="forward")
        self._load_pool = ThreadPoolExecutor(1, thread_name_prefix="load")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Future[bool]] = set()

    # -- life cycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the production version of each model from the stage store; failures are reported, not fatal."""
        self._loop = asyncio.get_running_loop()
        targets = await self._loop.run_in_executor(self._load_pool, self._production_targets)
        await asyncio.gather(*(self.want(t) for t in targets))
        self.started = True

    async def stop(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()
        self._load_pool.shutdown(wait=False, cancel_futures=True)
        self._forward_pool.shutdown(wait=False, cancel_futures=True)

    def ready(self) -> bool:
        return self.started and all(m in self.current for m in self.plan.wanted)

    def model_ready(self, model_id: str) -> bool:
        return model_id in self.current

    # -- swaps --------------------------------------------------------------------------------------------
    def want_from_thread(self, target: Target) -> None:
        """For the event follower's thread: ask the loop to load and swap to `target`."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._schedule, target)

    def _schedule(self, target: Target) -> None:
        task = asyncio.ensure_future(self.want(target))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def prefetch_from_thread(self, target: Target) -> None:
        """For the event follower's thread: a registered version, fetched into the cache (not loaded)."""
        if self.plan.models and target.model_id not in self.plan.models:
            return
        self._load_pool.submit(self._prefetch, target)  # in line with loads: never two fetches of one version

    def _prefetch(self, target: Target) -> None:
        started = time.perf_counter()
        try:
            self.artifacts.fetch(target)
        except Exception as exc:  # the promotion, if it comes, fetches again and reports a failure then
            log.warning("prefetch of %s %s failed: %s", target.model_id, target.version, exc,
                        extra={"model_id": target.model_id, "model_version": target.version})
            return
        log.info("prefetched %s %s in %.2fs", target.model_id, target.version, time.perf_counter() - started,
                 extra={"model_id": target.model_id, "model_version": target.version, **(target.cause or {})})

    async def want(self, target: Target) -> bool:
        """Load `target` in the background and swap to it; True when it serves now."""
        if not self.plan.want(target):
            return self.plan.serving.get(target.model_id) == target.version
        loop = asyncio.get_running_loop()
        predictor = await loop.run_in_executor(self._load_pool, self._load, target)
        if predictor is None or not self.plan.still_wanted(target):
            return False
        old = self.current.get(target.model_id)
        self.current[target.model_id] = predictor  # on the loop: the next batch runs the new version
        self.plan.served(target)
        self.metrics.served(target.model_id, old.version if old else None, target.version)
        log.info("serving %s %s", target.model_id, target.version,
                 extra={"model_id": target.model_id, "model_version": target.version,
                        "previous_version": old.version if old else None, **(target.cause or {})})
        return True

    def _production_targets(self) -> list[Target]:
        try:
            models = sorted(self.plan.models) or self.stages.models()
            return [t for t in (self.stages.production(m) for m in models) if t is not None]
        except Exception:
            log.exception("cannot read the stage store; serving what promotions bring")
            return []

    def _load(self, target: Target) -> Predictor | None:
        if not self.plan.still_wanted(target):
            return None  # superseded while it waited for the loader
        started = time.perf_counter()
        try:
            directory = self.artifacts.fetch(target)
            fetched = time.perf_counter()
            predictor = self.loader.load(directory, target.version)
        except Exception as exc:
            self._report_failure(target, exc)
            return None
        done = time.perf_counter()
        self.metrics.load_seconds.labels(target.model_id).observe(done - started)
        log.info("loaded %s %s: fetch %.2fs, load + warm-up %.2fs", target.model_id, target.version,
                 fetched - started, done - fetched, extra={"model_id": target.model_id,
                                                           "model_version": target.version})
        return predictor

    def _report_failure(self, target: Target, exc: Exception) -> None:
        serving = self.plan.serving.get(target.model_id)
        reason = f"{type(exc).__name__}: {exc}"
        log.error("cannot load %s %s: %s; %s keeps serving", target.model_id, target.version, reason, serving,
                  extra={"model_id": target.model_id, "model_version": target.version, **(target.cause or {})})
        self.metrics.load_failures.labels(target.model_id).inc()
        try:
            self.publisher.publish(LOAD_FAILED_TOPIC, load_failed(target, serving, reason, SERVICE))
        except Exception:
            log.exception("could not publish model.load-failed", extra={"model_id": target.model_id})

    # -- predictions --------------------------------------------------------------------------------------
    async def predict(self, model_id: str, texts: list[str]) -> Answer:
        if model_id not in self.current:
            raise BadRequest(f"model {model_id!r} is not served here (known: {sorted(self.current)})", 404)
        batcher = self.batchers.get(model_id)
        if batcher is None:
            batcher = self.batchers[model_id] = Batcher(
                lambda batch: self._forward(model_id, batch), self.max_batch, self.max_wait_s,
                self.metrics.batch_size.labels(model_id).observe)
        version, predictions = await batcher.submit(texts)
        return Answer(version, predictions)

    async def _forward(self, model_id: str, texts: list[str]) -> tuple[str, list[Prediction]]:
        predictor = self.current[model_id]  # read once per batch: the swap point
        loop = asyncio.get_running_loop()
        return predictor.version, await loop.run_in_executor(self._forward_pool, predictor.predict, texts)
