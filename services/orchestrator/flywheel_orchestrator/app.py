"""Wiring only: build the Faust app, codec, adapters and the run supervisor from settings; register agents."""

from __future__ import annotations

from typing import Any

import faust

from flywheel.bootstrap import build_codec
from flywheel.catalogue import topic
from flywheel.faust_app import DeadLetters, FaustPublisher, make_app, raw_topic
from flywheel_orchestrator import agents, runtime
from flywheel_orchestrator.runs import Supervisor
from flywheel_orchestrator.settings import OrchestratorSettings
from flywheel_orchestrator.state import Orchestration
from flywheel_orchestrator.topics import PRODUCES
from flywheel_orchestrator.wiring import build_engine, build_runtime

SERVICE = "orchestrator"


def create_app(settings: OrchestratorSettings) -> faust.App:
    app = make_app(SERVICE, settings)
    codec = build_codec(settings)
    dead_letters = DeadLetters(FaustPublisher(app, codec, SERVICE))
    outputs = {name: raw_topic(app, topic(name)) for name in PRODUCES if not name.endswith("dead-letter")}

    async def send(topic_name: str, schema: str, record: dict[str, Any]) -> None:
        await outputs[topic_name].send(key=record["model_id"].encode(), value=codec.encode(schema, record))

    tasks_runtime = build_runtime(settings)
    runtime.bind(tasks_runtime)
    orchestration = Orchestration(settings.policy, settings.policies())
    supervisor = Supervisor(orchestration, build_engine(settings), tasks_runtime, tasks_runtime.launcher, send,
                            settings.hyperparameters)
    agents.register(app, settings, codec, dead_letters, supervisor)
    return app
