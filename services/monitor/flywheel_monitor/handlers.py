"""The Faust-facing part: decode -> core -> publish, with metrics and dead letters. No decisions live here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from flywheel.codec import AvroCodec, Decoded
from flywheel.errors import CodecError, InvalidEvent
from flywheel.events import ids, now_ms, to_millis
from flywheel.faust_app import DeadLetters, raw_topics, source_of
from flywheel_monitor import metrics as m
from flywheel_monitor.core import Assessment, MonitorCore
from flywheel_monitor.decoding import MillisDecoder
from flywheel_monitor.events import retrain_requested
from flywheel_monitor.ports import Publisher
from flywheel_monitor.recovery import recover
from flywheel_monitor.rules import Rule
from flywheel_monitor.settings import MonitorSettings
from flywheel_monitor.topics import CONSUMES, RETRAIN_TOPIC

log = logging.getLogger("monitor")

RUN_STATUS = {"flywheel.TrainingRunStarted": "started", "flywheel.TrainingRunSucceeded": "succeeded",
              "flywheel.TrainingRunFailed": "failed", "flywheel.TrainingRunSuperseded": "superseded"}


class MonitorHandlers:
    def __init__(self, core: MonitorCore, publisher: Publisher, dead_letters: DeadLetters, service: str,
                 max_models: int) -> None:
        self.core, self.publisher, self.dead_letters = core, publisher, dead_letters
        self.service = service
        self.model_label = m.ModelLabels(max_models)
        # per-event metric children, looked up once: event name -> (kind, events, processing)
        self._kinds: dict[str, tuple[str, Any, Any]] = {}
        self._observations = m.Children(m.OBSERVATIONS)
        self._series: dict[tuple[str, str], m.RuleSeries] = {}

    async def handle(self, message: Any, event: Decoded) -> None:
        """One decoded event; anything it cannot process goes to the dead-letter topic, never up."""
        kind, events, processing = self._kinds.get(event.name) or self._kind(event.name)
        started = time.perf_counter()
        events.inc()
        try:
            await self._dispatch(event)
        except InvalidEvent as exc:
            await self.dead_letters.send(source_of(message), exc)
        except Exception as exc:  # a bug on one record must not stop the stream; keep the record to replay
            log.exception("failed to process %s", kind, extra=ids(event.record))
            await self.dead_letters.send(source_of(message), exc)
        processing.observe(time.perf_counter() - started)

    def _kind(self, name: str) -> tuple[str, Any, Any]:
        kind = name.rsplit(".", 1)[-1]
        entry = self._kinds[name] = (kind, m.EVENTS.labels(kind), m.PROCESSING.labels(kind))
        return entry

    async def _dispatch(self, event: Decoded) -> None:
        record = event.record
        if event.name == "flywheel.ModelMetricsObserved":
            await self.on_metrics(record)
        elif event.name == "flywheel.ModelVersionRegistered":
            self.on_registered(record)
        elif event.name in RUN_STATUS:
            self.on_training(RUN_STATUS[event.name], record)
        else:
            raise InvalidEvent(f"the monitor does not consume {event.name}")

    async def on_metrics(self, record: dict[str, Any]) -> None:
        assessment = self.core.observe(record)
        if assessment.ignored:
            m.IGNORED.labels(assessment.ignored).inc()
            return
        model = self.model_label(record["model_id"])
        summary = record.get("summary")
        self._observations(model).inc(summary["count"] if summary else record["sample_count"])
        self._export(model, assessment)
        for decision in assessment.triggers:  # only here, when a rule fires, does the hot path publish
            retrain = retrain_requested(decision, record["envelope"], self.core.rules, self.service)
            await self.publisher.publish(RETRAIN_TOPIC, retrain)
            m.TRIGGERS.labels(model, decision.rule.name, decision.kind).inc()
            m.BREACH_TO_TRIGGER.observe(max(0, now_ms() - to_millis(record["envelope"]["occurred_at"])) / 1000)
            log.info("retrain requested: %s", retrain["detail"],
                     extra={**ids(retrain), "causation_id": retrain["envelope"]["causation_id"],
                            "model_id": decision.model_id, "rule": decision.rule.name})

    def _export(self, model: str, assessment: Assessment) -> None:
        for ev in assessment.evaluations:
            series = self._series.get((model, ev.rule.name)) or self._new_series(model, ev.rule)
            series.value.set(ev.value)
            series.samples.set(ev.samples)
            if ev.breached:
                series.breached()

    def _new_series(self, model: str, rule: Rule) -> m.RuleSeries:
        drift = self.core.rules.drift
        threshold = drift.psi_threshold if drift is not None and rule.name == drift.name else rule.threshold
        series = self._series[(model, rule.name)] = m.RuleSeries(model, rule.name, threshold)
        return series

    def on_registered(self, record: dict[str, Any]) -> None:
        if self.core.register(record):
            m.REGISTRATIONS.inc()
            log.info("model version registered", extra={**ids(record), "model_id": record["model_id"],
                                                          "model_version": record["model_version"]})
        m.KNOWN_MODELS.set(len(self.core.models))

    def on_training(self, status: str, record: dict[str, Any]) -> None:
        m.RUNS.labels(status).inc()
        if status == "started" and record.get("data_landed_at") is not None:
            waited = to_millis(record["envelope"]["occurred_at"]) - to_millis(record["data_landed_at"])
            m.DATA_TO_TRAINING.observe(max(waited, 0) / 1000)
        if status in ("succeeded", "failed") and record.get("duration_seconds"):
            m.RUN_DURATION.labels(status).observe(record["duration_seconds"])


async def consume(stream: Any, decoder: MillisDecoder, dead_letters: DeadLetters,
                  handle: Callable[[Any, Decoded], Awaitable[None]]) -> None:
    """Decode each record of a raw stream and hand it to `handle`; undecodable or wrong-schema records go to
    the dead-letter topic. (One loop, not an async generator in front of the agent: a hop less per event.)"""
    async for event in stream.events():
        message = event.message
        try:
            item = decoder.decode_for_topic(message.topic, message.value)
        except CodecError as exc:
            await dead_letters.send(source_of(message), exc)
            continue
        await handle(message, item)


def register(app: faust.App, settings: MonitorSettings, codec: AvroCodec, handlers: MonitorHandlers,
             decoder: MillisDecoder) -> None:
    """The monitor's one agent: recover state from the event log, then consume CONSUMES."""

    async def recover_state() -> None:
        if not settings.recover_on_start:
            return
        loop = asyncio.get_running_loop()
        models, triggers = await loop.run_in_executor(None, recover, handlers.core, settings, codec,
                                                      handlers.service)
        m.KNOWN_MODELS.set(len(handlers.core.models))
        log.info("recovered state", extra={"models": models, "retrain_requests": triggers})

    @app.agent(raw_topics(app, CONSUMES))
    async def monitor(stream: faust.StreamT) -> None:
        await recover_state()  # before the first event, so known models and cooldowns are in place
        await consume(stream, decoder, handlers.dead_letters, handlers.handle)
