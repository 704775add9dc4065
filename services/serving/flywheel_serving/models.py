"""The model manager: which predictor answers for each model, loads in the background, atomic swaps.

Forwards run in one worker thread (the event loop never blocks on torch), loads in another. The current
predictor of a model is read by the batcher at the start of each batch and replaced on the event loop, so a
swap lands between two batches: the batch in flight finishes on the old version, the next one runs the new
one, and no request fails or is dropped.

A model may also have a shadow: its candidate (docs/decisions/0013-shadow-evaluation.md), loaded beside
production in the same load thread and run after the response is sent, in the same forward thread and only
when no production forward is running (a forward sharing its cores slows down many times, decisions/0007), so
a production batch waits for at most one shadow forward; a sampled fraction of requests is shadowed and at
most `shadow_max_pending` texts wait for it (beyond that a request is not shadowed), so no response waits on
more than that, or fails because of, the shadow. Its answers go to the ShadowBook by request id, for the
feedback join. A promotion of the shadowed version swaps to the predictor already loaded."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flywheel_serving.batching import Batcher
from flywheel_serving.core import Answer, BadRequest, Plan, Prediction, Target
from flywheel_serving.events import load_failed
from flywheel_serving.metrics import ServingMetrics
from flywheel_serving.ports import ArtifactStore, ModelLoader, Predictor, Publisher, StageReader
from flywheel_serving.shadow import Scored, ShadowBook, sampled
from flywheel_serving.topics import LOAD_FAILED_TOPIC, SERVICE

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, stages: StageReader, artifacts: ArtifactStore, loader: ModelLoader, publisher: Publisher,
                 metrics: ServingMetrics, *, max_batch: int, max_wait_s: float, models: tuple[str, ...] = (),
                 shadow_fraction: float = 0.25, shadow_max_pending: int = 64, shadow_capacity: int = 20_000) -> None:
        self.stages, self.artifacts, self.loader, self.publisher = stages, artifacts, loader, publisher
        self.metrics, self.max_batch, self.max_wait_s = metrics, max_batch, max_wait_s
        self.plan = Plan(models=frozenset(models))
        self.current: dict[str, Predictor] = {}
        self.batchers: dict[str, Batcher[Prediction]] = {}
        self.started = False
        self._forward_pool = ThreadPoolExecutor(1, thread_name_prefix="forward")
        self._load_pool = ThreadPoolExecutor(1, thread_name_prefix="load")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        # the shadows (candidates) and what they answered, by request id
        self.shadows: dict[str, Predictor] = {}
        self.shadow_wanted: dict[str, Target] = {}
        self.shadow_book = ShadowBook(shadow_capacity)
        self.shadow_fraction, self.shadow_max_pending = shadow_fraction, shadow_max_pending
        self._shadow_batchers: dict[str, Batcher[Prediction]] = {}
        self._shadow_texts = 0
        self._forwarding = 0  # production forwards running or queued: the shadow waits for none
        self._production_idle = asyncio.Event()
        self._production_idle.set()

    # -- life cycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the production version of each model from the stage store; failures are reported, not fatal."""
        self._loop = asyncio.get_running_loop()
        targets = await self._loop.run_in_executor(self._load_pool, self._production_targets)
        await asyncio.gather(*(self.want(t) for t in targets))
        self.started = True
        shadows = await self._loop.run_in_executor(self._load_pool, self._shadow_targets)
        for target in shadows:  # after production: readiness never waits on a shadow
            self._spawn(self.want_shadow(target))

    async def stop(self) -> None:
        for batcher in (*self.batchers.values(), *self._shadow_batchers.values()):
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
        self._spawn(self.want(target))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def shadow_from_thread(self, target: Target) -> None:
        """For the event follower's thread: a candidate to shadow (model.version-shadowed)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: self._spawn(self.want_shadow(target)))

    def rejected_from_thread(self, target: Target) -> None:
        """For the event follower's thread: a rejected version stops being shadowed."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.drop_shadow, target.model_id, target.version, "rejected")

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
        shadow = self.shadows.get(target.model_id)
        if shadow is not None and shadow.version == target.version:  # the promoted candidate is loaded already
            predictor: Predictor | None = shadow
        else:
            predictor = await loop.run_in_executor(self._load_pool, self._load, target)
        if predictor is None or not self.plan.still_wanted(target):
            return False
        old = self.current.get(target.model_id)
        self.current[target.model_id] = predictor  # on the loop: the next batch runs the new version
        self.plan.served(target)
        self.drop_shadow(target.model_id, target.version, "promoted")
        self.metrics.served(target.model_id, old.version if old else None, target.version)
        log.info("serving %s %s", target.model_id, target.version,
                 extra={"model_id": target.model_id, "model_version": target.version,
                        "previous_version": old.version if old else None, **(target.cause or {})})
        return True

    # -- the shadow -------------------------------------------------------------------------------------------
    async def want_shadow(self, target: Target) -> bool:
        """Load a candidate as the model's shadow; a load failure leaves production as it is (model.load-failed)."""
        model = target.model_id
        if (self.plan.models and model not in self.plan.models) or self.plan.serving.get(model) == target.version:
            return False
        wanted = self.shadow_wanted.get(model)
        if wanted is not None and wanted.version == target.version:
            return model in self.shadows and self.shadows[model].version == target.version
        self.shadow_wanted[model] = target
        loop = asyncio.get_running_loop()
        predictor = await loop.run_in_executor(self._load_pool, self._load_shadow, target)
        if predictor is None or self.shadow_wanted.get(model) != target:
            if predictor is None and self.shadow_wanted.get(model) == target:
                del self.shadow_wanted[model]  # failed: a later model.version-shadowed tries again
            return False
        old = self.shadows.get(model)
        self.shadows[model] = predictor
        self.metrics.shadowing(model, old.version if old else None, target.version)
        log.info("shadowing %s %s beside %s", model, target.version, self.plan.serving.get(model),
                 extra={"model_id": model, "model_version": target.version, **(target.cause or {})})
        return True

    def _load_shadow(self, target: Target) -> Predictor | None:
        if self.shadow_wanted.get(target.model_id) != target:
            return None
        started = time.perf_counter()
        try:
            predictor = self.loader.load(self.artifacts.fetch(target), target.version)
        except Exception as exc:
            self._report_failure(target, exc)
            return None
        self.metrics.load_seconds.labels(target.model_id).observe(time.perf_counter() - started)
        log.info("loaded shadow %s %s", target.model_id, target.version,
                 extra={"model_id": target.model_id, "model_version": target.version})
        return predictor

    def drop_shadow(self, model: str, version: str, why: str) -> None:
        wanted = self.shadow_wanted.get(model)
        if wanted is not None and wanted.version == version:
            del self.shadow_wanted[model]
        shadow = self.shadows.get(model)
        if shadow is not None and shadow.version == version:
            del self.shadows[model]
            self.metrics.shadowing(model, version, None)
            log.info("no longer shadowing %s %s: %s", model, version, why,
                     extra={"model_id": model, "model_version": version, "outcome": why})

    def shadow_score(self, model: str, request_id: str, texts: list[str], answer: Answer) -> None:
        """After the response: the shadow scores the same texts, if sampled and not too far behind."""
        if model not in self.shadows:
            return
        if not sampled(request_id, self.shadow_fraction):
            self.metrics.shadow_requests.labels(model, "unsampled").inc()
            return
        if self._shadow_texts + len(texts) > self.shadow_max_pending:
            self.metrics.shadow_requests.labels(model, "busy").inc()
            return
        self._shadow_texts += len(texts)
        self._spawn(self._shadow(model, request_id, texts, answer))

    async def _shadow(self, model: str, request_id: str, texts: list[str], answer: Answer) -> None:
        try:
            batcher = self._shadow_batchers.get(model)
            if batcher is None:
                batcher = self._shadow_batchers[model] = Batcher(
                    lambda batch: self._shadow_forward(model, batch), self.max_batch, self.max_wait_s)
            version, predictions = await batcher.submit(texts)
        except Exception as exc:  # the response went out already; the shadow only loses this pair
            self.metrics.shadow_requests.labels(model, "failed").inc()
            log.warning("shadow forward failed for %s: %s: %s", model, type(exc).__name__, exc,
                        extra={"model_id": model, "request_id": request_id})
            return
        finally:
            self._shadow_texts -= len(texts)
        if not version:
            return  # dropped (promoted or rejected) while it waited
        self.shadow_book.remember(request_id, Scored(model, answer.model_version, version,
                                                     tuple(p.label for p in answer.predictions),
                                                     tuple(p.label for p in predictions)))
        self.metrics.shadow_requests.labels(model, "scored").inc()

    async def _shadow_forward(self, model: str, texts: list[str]) -> tuple[str, list[Prediction]]:
        predictor = self.shadows.get(model)
        if predictor is None:
            return "", [Prediction("", 0.0)] * len(texts)
        while self._forwarding:  # production first
            await self._production_idle.wait()
        predictor = self.shadows.get(model)
        if predictor is None:
            return "", [Prediction("", 0.0)] * len(texts)
        loop = asyncio.get_running_loop()
        return predictor.version, await loop.run_in_executor(self._forward_pool, predictor.predict, texts)

    def _shadow_targets(self) -> list[Target]:
        read = getattr(self.stages, "shadow", None)
        if read is None:
            return []
        try:
            models = sorted(self.plan.models) or self.stages.models()
            return [t for t in (read(m) for m in models) if t is not None]
        except Exception:
            log.exception("cannot read the shadow candidates from the stage store")
            return []

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
        self._forwarding += 1
        self._production_idle.clear()
        try:
            return predictor.version, await loop.run_in_executor(self._forward_pool, predictor.predict, texts)
        finally:
            self._forwarding -= 1
            if not self._forwarding:
                self._production_idle.set()
