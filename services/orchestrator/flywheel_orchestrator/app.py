"""Wiring: build the Faust app, codec and dead-letter sink from settings; register agents."""

from __future__ import annotations

import logging

import faust

from flywheel.bootstrap import build_codec
from flywheel.events import ids
from flywheel.faust_app import DeadLetters, decoded, make_app, raw_topics
from flywheel_orchestrator.settings import OrchestratorSettings
from flywheel_orchestrator.topics import CONSUMES

SERVICE = "orchestrator"
log = logging.getLogger(SERVICE)


def create_app(settings: OrchestratorSettings) -> faust.App:
    app = make_app(SERVICE, settings)
    codec = build_codec(settings)
    dead_letters = DeadLetters(app, codec, SERVICE)
    @app.agent(raw_topics(app, CONSUMES))
    async def triggers(stream):  # noqa: ANN001 - Faust passes a StreamT
        async for message, event in decoded(stream, codec, dead_letters):
            log.info("received %s", event.name, extra={**ids(event.record), "topic": message.topic})

    return app
