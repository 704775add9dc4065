"""The Faust-facing part: decode -> core -> publish, with metrics and dead letters. No decisions live here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.errors import MessageSizeTooLargeError

from flywheel.catalogue import dead_letter_topic
from flywheel.codec import AvroCodec, Decoded
from flywheel.deadletter import SourceRecord
from flywheel.errors import CodecError, InvalidEvent
from flywheel.events import ids, now_ms, to_millis
from flywheel.faust_app import DeadLetters, decode_or_dead_letter, raw_topics, source_of
from flywheel.health import loading
from flywheel_monitor import metrics as m
from flywheel_monitor.core import Assessment, MonitorCore
from flywheel_monitor.decoding import MillisDecoder
from flywheel_monitor.events import retrain_requested
from flywheel_monitor.ports import Publisher
from flywheel_monitor.recovery import recover
from flywheel_monitor.rules import Rule
from flywheel_monitor.settings import MonitorSettings
from flywheel_monitor.statestore import Fenced, ModelStates
from flywheel_monitor.topics import CONSUMES, RETRAIN_TOPIC

log = logging.getLogger("monitor")

RUN_STATUS = {"flywheel.TrainingRunStarted": "started", "flywheel.TrainingRunSucceeded": "succeeded",
              "flywheel.TrainingRunFailed": "failed", "flywheel.TrainingRunSuperseded": "superseded"}


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between attempts of a failing publish: `initial_s`, doubling, capped at `max_s`; no give-up."""

    initial_s: float = 0.2
    max_s: float = 30.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * 2, self.max_s)


def is_permanent(exc: BaseException) -> bool:
    """A publish failure that no retry can cure: the record itself does not encode, or the broker says it is
    too large. Everything else (timeouts, connection errors, a broker away) is worth waiting out."""
    return isinstance(exc, CodecError | MessageSizeTooLargeError)


class MonitorHandlers:
    def __init__(self, core: MonitorCore, publisher: Publisher, dead_letters: DeadLetters, service: str,
                 max_models: int, backoff: Backoff | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep, states: ModelStates | None = None) -> None:
        self.core, self.publisher, self.dead_letters = core, publisher, dead_letters
        # Durable, fenced per-model rule state (statestore.py); None: memory only (one worker, unit tests).
        self.states = states
        self.service = service
        self.backoff, self.sleep = backoff or Backoff(), sleep
        self._dead_letter_topic = dead_letter_topic(service).name
        for topic_name in (RETRAIN_TOPIC, self._dead_letter_topic):  # zero series: the first retry shows in rate()
            m.PUBLISH_RETRIES.labels(topic_name)
        self.model_label = m.ModelLabels(max_models)
        # per-event metric children, looked up once: event name -> (kind, events, processing)
        self._kinds: dict[str, tuple[str, Any, Any]] = {}
        self._observations = m.Children(m.OBSERVATIONS)
        self._series: dict[tuple[str, str], m.RuleSeries] = {}

    async def handle(self, message: Any, event: Decoded) -> None:
        """One decoded event. Bad input (a CodecError, or any error while interpreting this record) goes to
        the dead-letter topic; a failing publish is retried here until it succeeds, so the stream waits at
        this record rather than lose its effect or dead-letter a good record."""
        kind, events, processing = self._kinds.get(event.name) or self._kind(event.name)
        started = time.perf_counter()
        events.inc()
        try:
            await self._dispatch(event)
        except CodecError as exc:
            await self.dead_letter(message, exc, event.record)
        except Exception as exc:  # a bug on one record must not stop the stream; keep the record to replay
            log.exception("failed to process %s", kind, extra=ids(event.record))
            await self.dead_letter(message, exc, event.record)
        processing.observe(time.perf_counter() - started)

    async def dead_letter(self, message: Any, error: BaseException,
                          record: dict[str, Any] | None = None) -> None:
        """Send `message` to the dead-letter topic, retrying while the broker fails. A dead letter the broker
        can never take (too large) is logged with where the record stays, and the stream goes on."""
        await self.send_dead_letter(source_of(message), error, ids(record or {}))

    async def send_dead_letter(self, source: SourceRecord, error: BaseException,
                               context: dict[str, Any] | None = None) -> None:
        context = {**(context or {}), "source_topic": source.topic, "source_partition": source.partition,
                   "source_offset": source.offset}
        try:
            await self._retrying(lambda: self.dead_letters.send(source, error), self._dead_letter_topic,
                                 context)
        except Exception as exc:
            log.error("cannot dead-letter %s/%s@%s (%r); the record stays there", source.topic,
                      source.partition, source.offset, exc,
                      extra={**context, "error_type": type(exc).__name__})

    async def publish(self, topic_name: str, record: dict[str, Any]) -> None:
        """Publish and wait for the broker's ack (so a failed delivery is seen), retrying transient failures
        with capped backoff; raises only for a permanent one (is_permanent)."""
        await self._retrying(lambda: self.publisher.publish(topic_name, record, acked=True), topic_name,
                             {**ids(record), "causation_id": record["envelope"]["causation_id"]})

    async def _retrying(self, attempt: Callable[[], Awaitable[None]], topic_name: str,
                        context: dict[str, Any]) -> None:
        for tries, delay in enumerate(self.backoff.delays(), start=1):
            try:
                await attempt()
                return
            except Exception as exc:
                if is_permanent(exc):
                    raise
                m.PUBLISH_RETRIES.labels(topic_name).inc()
                log.warning("publishing to %s failed (attempt %d: %r); retrying in %.1f s", topic_name, tries,
                            exc, delay, extra={**context, "error_type": type(exc).__name__})
            await self.sleep(delay)

    def _kind(self, name: str) -> tuple[str, Any, Any]:
        kind = name.rsplit(".", 1)[-1]
        entry = self._kinds[name] = (kind, m.EVENTS.labels(kind), m.PROCESSING.labels(kind))
        return entry

    async def _dispatch(self, event: Decoded) -> None:
        record = event.record
        if event.name == "flywheel.ModelMetricsObserved":
            await self.on_metrics(record)
        elif event.name == "flywheel.ModelVersionRegistered":
            await self.on_registered(record)
        elif event.name in RUN_STATUS:
            self.on_training(RUN_STATUS[event.name], record)
        else:
            raise InvalidEvent(f"the monitor does not consume {event.name}")

    async def on_metrics(self, record: dict[str, Any]) -> None:
        states, model_id = self.states, record["model_id"]
        if states is not None and not states.loaded(model_id):  # first event since an assignment: S3 once
            await self._durably(lambda: states.load(model_id, self._resend), model_id)
        assessment = self.core.observe(record)
        if assessment.ignored:
            m.IGNORED.labels(assessment.ignored).inc()
            return
        model = self.model_label(model_id)
        summary = record.get("summary")
        self._observations(model).inc(summary["count"] if summary else record["sample_count"])
        self._export(model, assessment)
        if not assessment.triggers and not assessment.changed:
            return
        # A rule fired or recovered (rare): claim it in the model's state document before sending anything, so
        # a worker another one replaced sends nothing (docs/decisions/0015-monitor-scale-out.md).
        retrains = [retrain_requested(d, record["envelope"], self.core.rules, self.service)
                    for d in assessment.triggers]
        if states is not None:
            try:
                await self._durably(lambda: states.save(model_id, retrains), model_id)
            except Fenced:
                m.FENCED.inc()
                log.warning("another worker decided for this model meanwhile; its state adopted, nothing sent",
                            extra={**ids(record), "model_id": model_id})
                return
        for decision, retrain in zip(assessment.triggers, retrains, strict=True):
            await self.publish(RETRAIN_TOPIC, retrain)
            m.TRIGGERS.labels(model, decision.rule.name, decision.kind).inc()
            m.BREACH_TO_TRIGGER.observe(max(0, now_ms() - to_millis(record["envelope"]["occurred_at"])) / 1000)
            log.info("retrain requested: %s", retrain["detail"],
                     extra={**ids(retrain), "causation_id": retrain["envelope"]["causation_id"],
                            "model_id": decision.model_id, "rule": decision.rule.name})
        if retrains and states is not None:
            try:  # the outbox is empty again; a crash before this re-sends them with the same event ids
                await self._durably(lambda: states.save(model_id), model_id)
            except Fenced:
                m.FENCED.inc()

    async def _resend(self, record: dict[str, Any]) -> None:
        await self.publish(RETRAIN_TOPIC, record)
        m.TRIGGERS.labels(self.model_label(record["model_id"]), record["rule"], record["trigger"]).inc()

    async def _durably(self, step: Callable[[], Awaitable[None]], model_id: str) -> None:
        """A state load or save, retried with backoff while S3 fails (the stream waits at this record, as for a
        failing publish); Fenced is an answer, not a failure, and goes to the caller."""
        for tries, delay in enumerate(self.backoff.delays(), start=1):
            try:
                await step()
                return
            except Fenced:
                raise
            except Exception as exc:
                m.STATE_RETRIES.inc()
                log.warning("model state in S3 unavailable (attempt %d: %r); retrying in %.1f s", tries, exc,
                            delay, extra={"model_id": model_id, "error_type": type(exc).__name__})
            await self.sleep(delay)

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

    async def on_registered(self, record: dict[str, Any]) -> None:
        states, model_id = self.states, record["model_id"]
        if states is not None and not states.loaded(model_id):
            await self._durably(lambda: states.load(model_id, self._resend), model_id)
        if self.core.register(record):
            m.REGISTRATIONS.inc()
            log.info("model version registered", extra={**ids(record), "model_id": model_id,
                                                          "model_version": record["model_version"]})
            if states is not None:
                await self._save_fact(model_id)
        m.KNOWN_MODELS.set(len(self.core.models))

    async def _save_fact(self, model_id: str) -> None:
        """A registration is a fact, not a decision: when another worker wrote meanwhile, its state is adopted
        (a newer version it knows stays) and the merge is written again."""
        states = self.states
        assert states is not None
        for _ in range(5):
            try:
                await self._durably(lambda: states.save(model_id), model_id)
                return
            except Fenced:
                m.FENCED.inc()
        log.warning("model state kept changing under this worker; the registration stays in memory",
                    extra={"model_id": model_id})

    def on_training(self, status: str, record: dict[str, Any]) -> None:
        m.RUNS.labels(status).inc()
        if status == "started" and record.get("data_landed_at") is not None:
            waited = to_millis(record["envelope"]["occurred_at"]) - to_millis(record["data_landed_at"])
            m.DATA_TO_TRAINING.observe(max(waited, 0) / 1000)
        if status in ("succeeded", "failed") and record.get("duration_seconds"):
            m.RUN_DURATION.labels(status).observe(record["duration_seconds"])


class RetryingDeadLetters:
    """The DeadLetters interface (`service`, `send`) over MonitorHandlers.send_dead_letter, which retries."""

    def __init__(self, handlers: MonitorHandlers) -> None:
        self.service = handlers.service
        self.send = handlers.send_dead_letter


async def consume(stream: Any, decoder: MillisDecoder, handlers: MonitorHandlers,
                  handle: Callable[[Any, Decoded], Awaitable[None]]) -> None:
    """Decode each record of a raw stream and hand it to `handle`; undecodable or wrong-schema records go to
    the dead-letter topic, and a record that meets an unavailable schema registry is retried in place
    (flywheel.faust_app.decode_or_dead_letter). (One loop, not an async generator in front of the agent: a
    hop less per event.)"""
    dead_letters, registry = RetryingDeadLetters(handlers), decoder.codec.registry
    async for event in stream.events():
        message = event.message
        item = await decode_or_dead_letter(message, decoder.decode_for_topic, registry, dead_letters)
        if item is not None:
            await handle(message, item)


def register(app: faust.App, settings: MonitorSettings, codec: AvroCodec, handlers: MonitorHandlers,
             decoder: MillisDecoder) -> None:
    """The monitor's one agent: recover state from the event log, then consume CONSUMES."""

    async def recover_state() -> None:
        if not settings.recover_on_start:
            return
        loop, pause = asyncio.get_running_loop(), 1.0
        with loading("monitor-recovery"):  # not ready, and no stall counted, until state is back
            while True:  # without its registrations the monitor would refuse every metric as unknown: wait
                try:
                    models, triggers = await loop.run_in_executor(None, recover, handlers.core, settings, codec,
                                                                  handlers.service)
                    break
                except Exception:  # the broker still starting, the registry unavailable: both pass
                    log.exception("recovering state from the event log failed; retrying in %.0f s", pause)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 30.0)
        m.KNOWN_MODELS.set(len(handlers.core.models))
        log.info("recovered state", extra={"models": models, "retrain_requests": triggers})

    @app.on_partitions_revoked.connect
    async def revoked(sender: Any, revoked: Any, **_: Any) -> None:
        # another worker may decide for these models next: each is loaded again on its next event
        if handlers.states is not None:
            handlers.states.forget()

    @app.on_partitions_assigned.connect
    async def assigned(sender: Any, assigned: Any, **_: Any) -> None:
        if handlers.states is not None:
            handlers.states.forget()
        mine = sorted({tp.partition for tp in assigned if tp.topic in CONSUMES})  # the consumed topics only
        log.info("assigned partitions %s", mine)

    @app.agent(raw_topics(app, CONSUMES))
    async def monitor(stream: faust.StreamT) -> None:
        await recover_state()  # before the first event, so known models and cooldowns are in place
        await consume(stream, decoder, handlers, handlers.handle)
