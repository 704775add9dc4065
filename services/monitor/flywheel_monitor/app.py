"""Wiring: build the Faust app, codec, window tables, engine and dead-letter sink from settings."""

from __future__ import annotations

import asyncio
import logging

import faust

from flywheel.bootstrap import build_codec
from flywheel.catalogue import topic
from flywheel.faust_app import DeadLetters, FaustPublisher, make_app, raw_topic, raw_topics
from flywheel_monitor import metrics
from flywheel_monitor.agents import MonitorHandlers
from flywheel_monitor.decoding import MillisDecoder, consume
from flywheel_monitor.engine import MonitorEngine
from flywheel_monitor.recovery import recover
from flywheel_monitor.settings import MonitorSettings
from flywheel_monitor.tables import FaustWindowStore
from flywheel_monitor.topics import CONSUMES, RETRAIN_TOPIC

SERVICE = "monitor"
log = logging.getLogger(SERVICE)


def window_sizes(settings: MonitorSettings) -> set[int]:
    rules = settings.rule_set
    return {r.window_ms for r in rules.rules} | ({rules.drift.window_ms} if rules.drift else set())


def create_app(settings: MonitorSettings) -> faust.App:
    app = make_app(SERVICE, settings)
    codec = build_codec(settings)
    dead_letters = DeadLetters(FaustPublisher(app, codec, SERVICE))
    engine = MonitorEngine(settings.rule_set, FaustWindowStore(app, window_sizes(settings)))
    decoder = MillisDecoder(codec)  # timestamps as epoch ms: no datetime round trip per event
    handlers = MonitorHandlers(engine, codec, dead_letters, raw_topic(app, topic(RETRAIN_TOPIC)), SERVICE,
                               settings.metrics_max_models)

    async def recover_state() -> None:
        if not settings.recover_on_start:
            return
        loop = asyncio.get_running_loop()
        models, triggers = await loop.run_in_executor(None, recover, engine, settings, codec, SERVICE)
        metrics.KNOWN_MODELS.set(len(engine.models))
        log.info("recovered state", extra={"models": models, "retrain_requests": triggers})

    @app.agent(raw_topics(app, CONSUMES))
    async def monitor(stream: faust.StreamT) -> None:
        await recover_state()  # before the first event, so known models and cooldowns are in place
        await consume(stream, decoder, dead_letters, handlers.handle)

    app.flywheel_engine = engine  # for tests and benchmarks that drive the app in-process
    return app
