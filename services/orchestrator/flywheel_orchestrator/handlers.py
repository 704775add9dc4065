"""Faust handlers: decode -> pure decision -> carry out, for the models on this worker's partitions.

Ownership follows the consumer group's assignment (runs.Supervisor.on_assigned/on_revoked); state is loaded
from S3 when a model is taken, not replayed from the topics. The event log is read once, to migrate a
deployment whose state lived only in the topics (docs/decisions/0009-orchestrator-scale-out.md).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from flywheel.codec import AvroCodec
from flywheel.errors import InvalidEvent
from flywheel.events import ids, now_ms
from flywheel.faust_app import DeadLetters, decoded, raw_topics, source_of
from flywheel.health import loading
from flywheel.topicreader import read_to_end
from flywheel_orchestrator import events
from flywheel_orchestrator.metrics import TRIGGER_RETRIES
from flywheel_orchestrator.ownership import partition_of
from flywheel_orchestrator.promotions import Promotions
from flywheel_orchestrator.replay import snapshots_from_log
from flywheel_orchestrator.runs import Supervisor
from flywheel_orchestrator.settings import OrchestratorSettings
from flywheel_orchestrator.topics import CONSUMES, REPLAYS

log = logging.getLogger("orchestrator")
STAGE_CHANGE_REQUESTED = "model.stage-change-requested"  # operator promote / rollback
MONITOR_RETRAIN = "retrain.requested"  # the monitor's breaches and drift: probation rollback
SHADOW_EVALUATED = "model.shadow-evaluated"  # serving's live paired evidence on a candidate in shadow
SHADOW_TICK_S = 30.0  # how often candidates in shadow are checked against shadow_max_s
DEBOUNCE_TICK_S = 0.25
TRIGGER_ATTEMPTS = 6  # a step failing this often (S3 or the broker away ~30 s) is dead-lettered, not dropped


class IncompleteReplay(RuntimeError):
    """The event log could not be read to its end: migrating from it would start from partial state."""


class NotOwned(InvalidEvent):
    """An event for a model whose partition this worker does not own (a producer with another partitioner)."""


def register(app: faust.App, settings: OrchestratorSettings, codec: AvroCodec, dead_letters: DeadLetters,
             supervisor: Supervisor, promotions: Promotions | None = None) -> None:

    @app.task
    async def migrate() -> None:
        await ensure_migrated(settings, codec, supervisor)

    @app.on_partitions_revoked.connect
    async def revoked(sender: Any, revoked: Any, **_: Any) -> None:
        await supervisor.on_revoked()

    @app.on_partitions_assigned.connect
    async def assigned(sender: Any, assigned: Any, **_: Any) -> None:
        await supervisor.on_assigned(assigned)

    @app.on_before_shutdown.connect
    async def stop_waiting(sender: Any, **_: Any) -> None:
        supervisor.shutdown()  # workflow threads return; jobs go on and are re-attached by the next owner

    @app.timer(DEBOUNCE_TICK_S)
    async def debounce() -> None:
        if supervisor.migrated.is_set():
            await supervisor.tick()

    @app.timer(SHADOW_TICK_S)
    async def shadow_timeouts() -> None:
        if promotions is not None and supervisor.migrated.is_set():
            await promotions.shadow_timeouts(lambda m: settings.manages(m) and supervisor.ownership.owns(m))

    @app.agent(raw_topics(app, CONSUMES))
    async def triggers(stream: Any) -> None:
        async for message, event in decoded(stream, codec, dead_letters):
            await supervisor.migrated.wait()
            await handle(message, event, settings, supervisor, dead_letters, promotions)

async def handle(message: Any, event: Any, settings: OrchestratorSettings, supervisor: Supervisor,
                 dead_letters: DeadLetters, promotions: Promotions | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
    """One consumed record: never raises; a record it cannot decide on ends in the dead-letter topic, with
    the reason, after retries. Only a record that was decided on (or dead-lettered) is acknowledged."""
    model_id = event.record.get("model_id", "")
    if not settings.manages(model_id):
        return
    expected = partition_of(model_id)
    if message.partition != expected:
        await dead_letter(dead_letters, message, NotOwned(
            f"model {model_id!r} belongs on partition {expected} (Kafka's default partitioner of the key), "
            f"this record came on {message.partition}: its producer partitions differently"), sleep)
        return
    if message.topic == STAGE_CHANGE_REQUESTED:
        if promotions is not None:
            await promotions.stage_change(event.record)  # fenced by the stage store; logs its failures
        return
    if message.topic == SHADOW_EVALUATED:
        if promotions is not None:
            await promotions.shadow_evaluated(event.record)  # fenced and idempotent like the stage changes
        return
    try:
        trigger = events.trigger_of(event.name, message.topic, event.record, now_ms())
    except InvalidEvent as exc:
        await dead_letter(dead_letters, message, exc, sleep)
        return
    log.info("trigger %s for %s", trigger.kind.value, model_id, extra={
        **ids(event.record), "model_id": model_id, "topic": message.topic, "trigger": trigger.kind.value})
    if promotions is not None and message.topic == MONITOR_RETRAIN:
        await promotions.breach(trigger)  # a version in probation goes back first; the retrain goes on
    for attempt in range(1, TRIGGER_ATTEMPTS + 1):
        if supervisor.stopping:
            await asyncio.Future()  # shutting down: never acknowledge a trigger that was not decided
        try:
            if await supervisor.on_trigger(trigger):
                return
            if supervisor.stopping:
                await asyncio.Future()
            await dead_letter(dead_letters, message, NotOwned(
                f"model {model_id!r} (partition {expected}) is not owned by this worker"), sleep)
            return
        except Exception as exc:  # S3 or the broker: the model's state is reloaded and the record retried
            TRIGGER_RETRIES.inc()
            log.exception("trigger step failed (attempt %d/%d)", attempt, TRIGGER_ATTEMPTS, extra={
                **ids(event.record), "model_id": model_id, "attempt": attempt})
            if attempt == TRIGGER_ATTEMPTS:
                await dead_letter(dead_letters, message, exc, sleep)
                return
            await sleep(min(0.5 * 2 ** (attempt - 1), 10.0))


async def dead_letter(dead_letters: DeadLetters, message: Any, error: BaseException,
                      sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
    """Dead-letter the record, retrying while the broker refuses: the record is never acknowledged unhandled."""
    for attempt in itertools.count(1):
        try:
            await dead_letters.send(source_of(message), error)
            return
        except Exception:
            log.exception("could not dead-letter %s/%s@%s (attempt %d)", message.topic, message.partition,
                          message.offset, attempt)
            await sleep(min(0.5 * 2 ** (attempt - 1), 30.0))


async def ensure_migrated(settings: OrchestratorSettings, codec: AvroCodec, supervisor: Supervisor) -> None:
    """Once per deployment: fold the event log into state documents (models that have one keep it). A replay
    that does not reach the end of every partition is retried, never used: no decision from partial state."""
    attempt = 0
    with loading("orchestrator-migration"):
        while not supervisor.stopping:
            attempt += 1
            try:
                if not await asyncio.to_thread(supervisor.store.migrated):
                    await migrate_from_log(settings, codec, supervisor)
                break
            except Exception:
                log.exception("migrating run state from the event log failed (attempt %d); deciding nothing "
                              "until it completes", attempt)
                await asyncio.sleep(min(2.0 * attempt, 30.0))
    supervisor.migrated.set()


async def migrate_from_log(settings: OrchestratorSettings, codec: AvroCodec, supervisor: Supervisor) -> None:
    started = now_ms()
    replay = await asyncio.to_thread(read_to_end, settings, codec, REPLAYS, reader="orchestrator-replay")
    if not replay.complete:
        raise IncompleteReplay(f"the event log was not read to its end (unfinished: {replay.unfinished})")
    items = replay.by_time()
    snapshots = snapshots_from_log(((t, d.name, d.record) for t, d in items), settings.manages)
    written = 0
    for model_id, snapshot in snapshots.items():  # a model that has a document already keeps it
        if await asyncio.to_thread(supervisor.store.save, model_id, snapshot.to_dict(now_ms()), None):
            written += 1
    summary = {"events": len(items), "models": len(snapshots), "written": written, "at": now_ms(),
               "by": supervisor.worker_id}
    await asyncio.to_thread(supervisor.store.mark_migrated, summary)
    log.info("migrated run state from the event log", extra={**summary, "took_ms": now_ms() - started})
