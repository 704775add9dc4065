"""Faust handlers: decode -> pure decision -> carry out. Recovery from the event log runs before the first decision."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from flywheel.codec import AvroCodec
from flywheel.errors import InvalidEvent
from flywheel.events import ids, now_ms
from flywheel.faust_app import DeadLetters, decoded, raw_topics, source_of
from flywheel.topicreader import read_to_end
from flywheel_orchestrator import events
from flywheel_orchestrator.replay import fold
from flywheel_orchestrator.runs import Supervisor
from flywheel_orchestrator.settings import OrchestratorSettings
from flywheel_orchestrator.topics import CONSUMES, REPLAYS

log = logging.getLogger("orchestrator")
DEBOUNCE_TICK_S = 0.25
RECOVERY_ATTEMPTS = 5


def register(app: faust.App, settings: OrchestratorSettings, codec: AvroCodec, dead_letters: DeadLetters,
             supervisor: Supervisor) -> None:
    orchestration = supervisor.orchestration
    ready = asyncio.Event()

    @app.task
    async def recover() -> None:
        for attempt in range(1, RECOVERY_ATTEMPTS + 1):
            try:
                await recover_state(settings, codec, supervisor)
                break
            except Exception:  # the broker may still be starting; launches stay idempotent without it
                log.exception("event log replay failed (attempt %d/%d)", attempt, RECOVERY_ATTEMPTS)
                await asyncio.sleep(2.0 * attempt)
        ready.set()

    @app.on_before_shutdown.connect
    async def stop_waiting(sender: Any, **_: Any) -> None:
        supervisor.context.stopping.set()  # workflow threads return; jobs go on and are re-attached on restart

    @app.timer(DEBOUNCE_TICK_S)
    async def debounce() -> None:
        if ready.is_set():
            await supervisor.carry_out(orchestration.on_tick(now_ms()))

    @app.agent(raw_topics(app, CONSUMES))
    async def triggers(stream: Any) -> None:
        async for message, event in decoded(stream, codec, dead_letters):
            await ready.wait()
            model_id = event.record.get("model_id", "")
            if not settings.manages(model_id):
                continue
            try:
                trigger = events.trigger_of(event.name, message.topic, event.record, now_ms())
            except InvalidEvent as exc:
                await dead_letters.send(source_of(message), exc)
                continue
            log.info("trigger %s for %s", trigger.kind.value, model_id, extra={
                **ids(event.record), "model_id": model_id, "topic": message.topic, "trigger": trigger.kind.value})
            await supervisor.carry_out(orchestration.on_trigger(trigger, now_ms()))


async def recover_state(settings: OrchestratorSettings, codec: AvroCodec, supervisor: Supervisor) -> None:
    """Fold the log, re-attach to runs that never ended, and launch datasets that never got a decision."""
    started = now_ms()
    replay = await asyncio.to_thread(read_to_end, settings, codec, REPLAYS, reader="orchestrator-replay")
    items = replay.by_time()
    recovered = fold(supervisor.orchestration, ((t, d.name, d.record) for t, d in items), settings.manages)
    for spec, envelope in recovered.in_flight.values():
        log.info("resuming run %s", spec.run_id, extra={"run_id": spec.run_id, "model_id": spec.model_id})
        supervisor.resume(spec, envelope)
    for trigger in recovered.untrained:
        await supervisor.carry_out(supervisor.orchestration.on_trigger(trigger, now_ms()))
    log.info("recovered run state from the event log", extra={"events": len(items), "resumed": len(
        recovered.in_flight), "relaunched": len(recovered.untrained), "took_ms": now_ms() - started})
