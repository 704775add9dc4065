"""Event handlers: decode -> engine -> send, with metrics and dead letters. No decisions live here."""

from __future__ import annotations

import logging
import time
from typing import Any

from flywheel.codec import AvroCodec, Decoded
from flywheel.errors import InvalidEvent
from flywheel.events import ids, now_ms, to_millis
from flywheel.faust_app import DeadLetters, source_of
from flywheel_monitor import metrics as m
from flywheel_monitor.engine import MonitorEngine, Outcome
from flywheel_monitor.evidence import retrain_requested
from flywheel_monitor.rules import Rule

log = logging.getLogger("monitor")

RUN_STATUS = {"flywheel.TrainingRunStarted": "started", "flywheel.TrainingRunSucceeded": "succeeded",
              "flywheel.TrainingRunFailed": "failed", "flywheel.TrainingRunSuperseded": "superseded"}


class MonitorHandlers:
    def __init__(self, engine: MonitorEngine, codec: AvroCodec, dead_letters: DeadLetters, retrain_topic: Any,
                 service: str, max_models: int) -> None:
        self.engine, self.codec, self.dead_letters = engine, codec, dead_letters
        self.retrain_topic, self.service = retrain_topic, service
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
        outcome = self.engine.observe(record)
        if outcome.ignored:
            m.IGNORED.labels(outcome.ignored).inc()
            return
        model = self.model_label(record["model_id"])
        summary = record.get("summary")
        self._observations(model).inc(summary["count"] if summary else record["sample_count"])
        self._export(model, outcome)
        for trigger in outcome.triggers:
            retrain = retrain_requested(trigger, record["envelope"], self.engine.rules, self.service)
            await self.retrain_topic.send(key=trigger.model_id.encode(),
                                          value=self.codec.encode("RetrainRequested", retrain))
            m.TRIGGERS.labels(model, trigger.rule.name, trigger.kind).inc()
            m.BREACH_TO_TRIGGER.observe(max(0, now_ms() - to_millis(record["envelope"]["occurred_at"])) / 1000)
            log.info("retrain requested: %s", retrain["detail"],
                     extra={**ids(retrain), "causation_id": retrain["envelope"]["causation_id"],
                            "model_id": trigger.model_id, "rule": trigger.rule.name})

    def _export(self, model: str, outcome: Outcome) -> None:
        for ev in outcome.evaluations:
            series = self._series.get((model, ev.rule.name)) or self._new_series(model, ev.rule)
            series.value.set(ev.value)
            series.samples.set(ev.samples)
            if ev.breached:
                series.breached()

    def _new_series(self, model: str, rule: Rule) -> m.RuleSeries:
        drift = self.engine.rules.drift
        threshold = drift.psi_threshold if drift is not None and rule.name == drift.name else rule.threshold
        series = self._series[(model, rule.name)] = m.RuleSeries(model, rule.name, threshold)
        return series

    def on_registered(self, record: dict[str, Any]) -> None:
        if self.engine.register(record):
            m.REGISTRATIONS.inc()
            log.info("model version registered", extra={**ids(record), "model_id": record["model_id"],
                                                          "model_version": record["model_version"]})
        m.KNOWN_MODELS.set(len(self.engine.models))

    def on_training(self, status: str, record: dict[str, Any]) -> None:
        m.RUNS.labels(status).inc()
        if status == "started" and record.get("data_landed_at") is not None:
            waited = to_millis(record["envelope"]["occurred_at"]) - to_millis(record["data_landed_at"])
            m.DATA_TO_TRAINING.observe(max(waited, 0) / 1000)
        if status in ("succeeded", "failed") and record.get("duration_seconds"):
            m.RUN_DURATION.labels(status).observe(record["duration_seconds"])
