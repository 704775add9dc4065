"""Faust app factory shared by the three services: Tansu-safe settings, metrics page, dead-letter routing."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest

from flywheel.catalogue import TopicSpec, dead_letter_topic, durability, produced_by, topic
from flywheel.codec import AvroCodec, Decoded, decode_for_topic
from flywheel.deadletter import SourceRecord, dead_letter
from flywheel.errors import CodecError, RegistryUnavailable
from flywheel.events import ids
from flywheel.health import Health, HealthSampler, WatchedThreadPool
from flywheel.msk import faust_auth
from flywheel.publish import TopicEncoder
from flywheel.registry import SchemaRegistry
from flywheel.settings import FlywheelSettings
from flywheel.topicadmin import environment_of

log = logging.getLogger(__name__)

TRANSPORT_SCHEME = "flywheel"
DEAD_LETTERS = Counter("flywheel_dead_letters_total", "Records sent to a dead-letter topic",
                       ["service", "source_topic", "error_type"])
REGISTRY_WAITS = Counter("flywheel_registry_unavailable_total",
                         "Times a record waited for an unavailable schema registry (it is retried, not dead-lettered)",
                         ["service", "source_topic"])


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust hard-codes fetch_max_wait_ms=1500 for workers; Tansu waits that long on every fetch."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.app.conf.flywheel_fetch_max_wait_ms  # read by Fetcher at start()
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class FlywheelTransport(faust_aiokafka.Transport):
    Consumer = _Consumer


def register_transport() -> None:
    drivers.TRANSPORTS.aliases[TRANSPORT_SCHEME] = f"{__name__}:FlywheelTransport"


def make_app(service: str, settings: FlywheelSettings, **overrides: Any) -> faust.App:
    """A Faust app wired only from `settings` (env={} keeps Faust from reading its own env names)."""
    register_transport()
    (settings.data_dir / service).mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = dict(
        broker=f"{TRANSPORT_SCHEME}://{settings.kafka_bootstrap}",
        env={},
        store="memory://",
        datadir=str(settings.data_dir / service),
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=max(settings.kafka_session_timeout_s / 5, 0.5),
        broker_rebalance_timeout=settings.kafka_session_timeout_s,
        producer_linger=0.0,
        producer_max_batch_size=1 if settings.one_record_per_batch else 16384,
        producer_acks=-1,
        topic_allow_declare=True,
        # Faust's own topics (table changelogs) as durable as the catalogue's: on MSK a topic with fewer
        # replicas than min.insync.replicas refuses every acks=all write (docs/decisions/0006-topic-provisioning.md).
        topic_replication_factor=durability(environment_of(settings)).replication_factor,
        topic_disable_leader=True,
        logging_config=None,
        **faust_auth(settings),
    )
    options.update(overrides)
    app = faust.App(f"flywheel-{service}", **options)
    app.conf.flywheel_fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
    _add_pages(app, _add_health(app, service, settings))
    return app


def health_of(app: faust.App) -> Health:
    """The service's Health: watch a worker pool with `health_of(app).watch(WatchedThreadPool(...))`."""
    return app.conf.flywheel_health


def _add_health(app: faust.App, service: str, settings: FlywheelSettings) -> Health:
    health = Health(service, settings.liveness_stall_s)
    health.extra_loads = lambda: ["faust-table-recovery"] if getattr(app, "in_recovery", False) else []
    app.conf.flywheel_health = health
    sampler = HealthSampler(app, health)

    @app.on_rebalance_complete.connect
    async def assigned(sender: Any, **_: Any) -> None:
        health.assigned = True

    @app.task
    async def watch_default_executor() -> None:
        # asyncio.to_thread and run_in_executor(None, ...) land here (registry lookups, replays, S3 reads):
        # a call wedged past liveness_task_max_s fails /livez instead of silently holding a thread.
        pool = WatchedThreadPool(min(32, (os.cpu_count() or 1) + 4), name="default",
                                 max_task_s=settings.liveness_task_max_s)
        asyncio.get_running_loop().set_default_executor(health.watch(pool))

    @app.timer(settings.health_sample_s)
    async def sample_health() -> None:
        await sampler.sample()

    return health


def _add_pages(app: faust.App, health: Health) -> None:
    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    def answer(web: Any, ok: bool, reasons: list[str], good: str, bad: str) -> Any:
        return web.json({"status": good if ok else bad, "service": app.conf.id, "reasons": reasons},
                        status=200 if ok else 503)

    @app.page("/livez")
    async def livez(web: Any, request: Any) -> Any:
        return answer(web, *health.live(), "live", "stalled")

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        return answer(web, *health.ready(), "ready", "loading")

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:  # readiness under its historical name (the k8s probe's)
        return answer(web, *health.ready(), "ready", "loading")


def raw_topic(app: faust.App, spec: TopicSpec) -> faust.TopicT:
    """Topics carry framed Avro bytes; the codec, not Faust, decodes them, so bad bytes never crash an agent."""
    return app.topic(spec.name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=spec.partitions)


def raw_topics(app: faust.App, names: tuple[str, ...]) -> faust.TopicT:
    """One Faust topic object over several catalogue topics (an agent that consumes them all)."""
    if len(names) == 1:
        return raw_topic(app, topic(names[0]))
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


class FaustPublisher:
    """publish(topic, record) from inside a service: schema, key and framing from the catalogue.

    It refuses a topic the service does not produce (one writer per topic). With `acked=True` it returns
    only once the broker acknowledged the record (ingest records its effect in S3 only then).
    """

    def __init__(self, app: faust.App, codec: AvroCodec, service: str) -> None:
        self.service = service
        self.encoder = TopicEncoder(codec)
        self._topics = {name: raw_topic(app, topic(name)) for name in produced_by(service)}

    async def publish(self, topic_name: str, record: dict[str, Any], *, acked: bool = False) -> None:
        target = self._topics.get(topic_name)
        if target is None:
            raise ValueError(f"{self.service} does not produce {topic_name} (the catalogue names "
                             f"{topic(topic_name).producer} as its one writer)")
        out = self.encoder.outgoing(topic_name, record)
        pending = await target.send(key=out.key, value=out.value)
        if acked:
            await pending


class DeadLetters:
    """Sends records a service cannot process to that service's dead-letter topic."""

    def __init__(self, publisher: FaustPublisher) -> None:
        self.service = publisher.service
        self.publisher = publisher
        self.topic = dead_letter_topic(self.service).name

    async def send(self, source: SourceRecord, error: BaseException) -> None:
        record = dead_letter(source, error, self.service)
        await self.publisher.publish(self.topic, record)
        # Counted once it is handed to the producer: a send that fails and is retried counts once.
        DEAD_LETTERS.labels(self.service, source.topic, type(error).__name__).inc()
        log.warning("dead-lettered %s/%s@%s: %s", source.topic, source.partition, source.offset, error,
                    extra={**ids(record), "error_type": type(error).__name__})


def source_of(message: Any) -> SourceRecord:
    return SourceRecord(message.topic, message.partition, message.offset, message.key, message.value)


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff between retries of one record while the schema registry is unavailable."""

    first_s: float = 0.5
    max_s: float = 30.0

    def after(self, attempt: int) -> float:
        return min(self.first_s * 2 ** (attempt - 1), self.max_s)


REGISTRY_BACKOFF = Backoff()


async def decode_or_dead_letter(message: Any, decode: Callable[[str, Any], Decoded], registry: SchemaRegistry,
                                dead_letters: DeadLetters, backoff: Backoff = REGISTRY_BACKOFF) -> Decoded | None:
    """Decode one message with `decode(topic, value)`: the Decoded, or None once it was dead-lettered.

    Bad bytes (a CodecError) go to the dead-letter topic. An unavailable or access-denying registry
    (RegistryUnavailable) says nothing about the bytes: the same record is retried with capped backoff until
    the registry answers, so it is neither lost nor dead-lettered and the stream does not move past it. A
    lookup that needs a remote call runs in a thread, off the event loop."""
    attempt = 0
    while True:
        try:
            try:
                if registry.resolves_locally(message.value):
                    return decode(message.topic, message.value)
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(None, decode, message.topic, message.value)
            except CodecError as exc:
                await dead_letters.send(source_of(message), exc)  # may need the registry too
                return None
        except RegistryUnavailable as exc:
            attempt += 1
            delay = backoff.after(attempt)
            REGISTRY_WAITS.labels(dead_letters.service, message.topic).inc()
            log.warning("schema registry unavailable for %s/%s@%s, retrying in %.1fs (attempt %d): %s",
                        message.topic, message.partition, message.offset, delay, attempt, exc)
            await asyncio.sleep(delay)


async def decoded(stream: Any, codec: AvroCodec, dead_letters: DeadLetters,
                  backoff: Backoff = REGISTRY_BACKOFF) -> AsyncIterator[tuple[Any, Decoded]]:
    """Decode each record of a raw stream; undecodable or wrong-schema ones go to the dead-letter topic, and
    a record that meets an unavailable registry is retried in place (see `decode_or_dead_letter`)."""

    def decode(topic_name: str, value: Any) -> Decoded:
        return decode_for_topic(codec, topic_name, value)

    async for event in stream.events():
        message = event.message
        item = await decode_or_dead_letter(message, decode, codec.registry, dead_letters, backoff)
        if item is not None:
            yield message, item
