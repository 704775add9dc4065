"""Assembly only: settings -> stage store, artifact cache, loader, publisher, model manager, event follower,
HTTP app. Nothing connects at import time; the FastAPI lifespan starts and stops what connects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from flywheel.bootstrap import aws_client, build_codec
from flywheel_serving.adapters import (
    EventFollower,
    LifecycleStages,
    S3Artifacts,
    ServingPublisher,
    TransformersLoader,
)
from flywheel_serving.core import Limits, RecentPredictions
from flywheel_serving.handlers import Forwarding, Handlers, register
from flywheel_serving.harvest import Harvest, HarvestConfig, replica_name
from flywheel_serving.harvest_store import FeedbackStore, S3FeedbackStore
from flywheel_serving.harvester import HarvestCounters, Harvester
from flywheel_serving.live import LiveCounters, LiveEmitter, LiveWindows
from flywheel_serving.metrics import ServingMetrics
from flywheel_serving.models import ModelManager
from flywheel_serving.ports import ArtifactStore, ModelLoader, Publisher, StageReader
from flywheel_serving.settings import ServingSettings
from flywheel_serving.shadow import ShadowEmitter, ShadowWindows
from flywheel_serving.topics import CONSUMES, FORWARDED_TOPIC, REGISTERED_TOPIC

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """The adapters create_app wires; tests and benchmarks may hand in their own. Without a feedback store
    nothing is harvested (build_parts makes one when FLYWHEEL_HARVEST_ENABLED)."""

    stages: StageReader
    artifacts: ArtifactStore
    loader: ModelLoader
    publisher: Publisher
    feedback: FeedbackStore | None = None


def configure_torch(threads: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # artifacts are complete: never reach for the Hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already fixed by earlier parallel work in this process
        torch.set_num_interop_threads(1)


def build_parts(settings: ServingSettings) -> Parts:
    from flywheel.lifecycle import StageStore

    s3 = aws_client(settings, "s3")
    return Parts(LifecycleStages(StageStore(s3, settings.artifact_bucket)), S3Artifacts(s3, settings.model_cache),
                 TransformersLoader(settings.max_length), ServingPublisher(settings, build_codec(settings)),
                 S3FeedbackStore(s3, settings.data_bucket) if settings.harvest_enabled else None)


def build_harvester(settings: ServingSettings, store: FeedbackStore | None,
                    metrics: ServingMetrics) -> Harvester | None:
    if not settings.harvest_enabled or store is None:
        return None
    from flywheel.datareader import Rules

    config = HarvestConfig(settings.dataset_prefix, replica_name(settings.replica_id or socket.gethostname()),
                           int(settings.harvest_interval_s * 1000), settings.harvest_max_rows,
                           settings.harvest_min_rows)
    harvest = Harvest(config, lambda model: Rules(settings.columns_for(model), settings.label_column))
    return Harvester(harvest, store, HarvestCounters(metrics.registry), settings.harvest_max_pending_rows)


def create_app(settings: ServingSettings, parts: Parts | None = None) -> FastAPI:
    configure_torch(settings.torch_threads)
    parts = parts or build_parts(settings)
    metrics = ServingMetrics()
    manager = ModelManager(parts.stages, parts.artifacts, parts.loader, parts.publisher, metrics,
                           max_batch=settings.max_batch, max_wait_s=settings.max_wait_ms / 1000,
                           models=settings.models, shadow_fraction=settings.shadow_fraction,
                           shadow_max_pending=settings.shadow_max_pending, shadow_capacity=settings.shadow_capacity)
    shadow = ShadowWindows(settings.metrics_window_s, settings.replica_id or socket.gethostname())
    shadow_emitter = ShadowEmitter(shadow, parts.publisher, lambda outcome: metrics.shadow_events.labels(outcome).inc())
    live = LiveWindows(settings.metrics_window_s, settings.metrics_min_samples)
    emitter = LiveEmitter(live, parts.publisher, LiveCounters(metrics.registry))
    harvester = build_harvester(settings, parts.feedback, metrics)
    limits = Limits(settings.max_texts_per_request, settings.max_request_bytes)
    recent = RecentPredictions(settings.feedback_capacity, settings.feedback_text_chars)
    handlers = Handlers(manager, metrics, limits, recent, live, harvester, shadow)
    forward = settings.feedback_forward and settings.follow_events  # forwarded labels arrive through the follower
    if forward:  # unique per process: a restarted replica is a new origin
        handlers.forwarding = Forwarding(parts.publisher, f"{settings.replica_id or socket.gethostname()}-"
                                                          f"{uuid.uuid4().hex[:8]}")
    topics = tuple(t for t in CONSUMES if (settings.prefetch_registered or t != REGISTERED_TOPIC)
                   and (forward or t != FORWARDED_TOPIC))
    follower = (EventFollower(settings, build_codec(settings), topics, manager.want_from_thread,
                              manager.prefetch_from_thread, parts.publisher, metrics.dead_letters.inc,
                              manager.shadow_from_thread, manager.rejected_from_thread,
                              handlers.forwarded_from_thread)
                if settings.follow_events else None)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        handlers.loop = asyncio.get_running_loop()
        if follower is not None:  # follow first: what is published after the stage read still arrives
            following = await asyncio.to_thread(follower.start, settings.stage_read_timeout_s)
            if not following:
                log.warning("event follower not assigned yet; promotions before it is may be missed until restart")
        await manager.start()
        emitter.start()
        shadow_emitter.start()
        if harvester is not None:
            harvester.start()
        try:
            yield
        finally:
            if follower is not None:
                await asyncio.to_thread(follower.stop)
            await emitter.stop()
            await shadow_emitter.stop()
            if harvester is not None:
                await harvester.stop()
            await manager.stop()

    api = FastAPI(title="flywheel-serving", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    api.state.manager = manager
    api.state.harvester = harvester
    api.state.handlers = handlers
    register(api, handlers, metrics)
    return api
