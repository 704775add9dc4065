"""Wiring: build the Faust app and adapters from settings, register the detection loops."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import faust

from flywheel.bootstrap import aws_client, build_codec
from flywheel.catalogue import topic
from flywheel.faust_app import make_app, raw_topic
from flywheel_ingest import metrics
from flywheel_ingest.adapters import S3Store, SqsQueue
from flywheel_ingest.closer import CloseConfig, VersionCloser
from flywheel_ingest.runtime import Ingestor, Send
from flywheel_ingest.settings import IngestSettings
from flywheel_ingest.sources import NotificationPoller, ReconciliationScan
from flywheel_ingest.topics import PRODUCES
from flywheel_ingest.validation import Rules

SERVICE = "ingest"
TICK_S = 0.5  # quiet-period closes and retries; marker closes do not wait for it


def create_app(settings: IngestSettings) -> faust.App:
    app = make_app(SERVICE, settings)
    # Ingest consumes SQS, not Kafka: with no topic to subscribe, Faust's consumer would crash at start-up.
    app.producer_only = True
    ingestor = build_ingestor(app, settings)
    if ingestor.queue is not None:
        app.task(NotificationPoller(ingestor, ingestor.queue).run)
    app.task(ReconciliationScan(ingestor).run)

    @app.timer(TICK_S)
    async def close_quiet_versions() -> None:
        ingestor.close_due()

    return app


def build_ingestor(app: faust.App, settings: IngestSettings) -> Ingestor:
    store = S3Store(aws_client(settings, "s3"))
    queue = None
    if settings.notification_queue_url:
        queue = SqsQueue(aws_client(settings, "sqs"), settings.notification_queue_url, settings.sqs_wait_s,
                         settings.sqs_visibility_timeout_s, settings.sqs_max_messages)
    closer = VersionCloser(store, close_config(settings),
                           lambda fmt, n: metrics.BYTES_VALIDATED.labels(fmt).inc(n))
    # One thread for the SQS long-poll, one for the scan, the rest for closes.
    executor = ThreadPoolExecutor(settings.close_workers + 2, thread_name_prefix="ingest-io")
    return Ingestor(settings, store, closer, acknowledged_sender(app), build_codec(settings), executor, queue)


def close_config(settings: IngestSettings) -> CloseConfig:
    def rules_for(model_id: str) -> Rules:
        return Rules(settings.columns_for(model_id), settings.label_column, settings.max_distinct_labels)

    return CloseConfig(settings.dataset_prefixes, settings.manifest_prefix, settings.state_prefix,
                       settings.marker_name, settings.max_object_bytes, settings.read_chunk_bytes, rules_for,
                       settings.data_dir / SERVICE / "spool")


def acknowledged_sender(app: faust.App) -> Send:
    topics = {name: raw_topic(app, topic(name)) for name in PRODUCES}

    async def send(name: str, key: bytes, value: bytes) -> None:
        pending = await topics[name].send(key=key, value=value)
        await pending  # the broker's acknowledgement: only then is the effect recorded and SQS cleaned up

    return send
