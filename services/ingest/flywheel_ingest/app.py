"""Assembly only: the Faust app (producer-only), the publisher, the adapters chosen from settings, the closer
and the handlers. The only module that turns settings into adapters."""

from __future__ import annotations

import faust

from flywheel.bootstrap import aws_client, build_codec
from flywheel.faust_app import FaustPublisher, health_of, make_app
from flywheel.health import WatchedThreadPool
from flywheel_ingest import metrics
from flywheel_ingest.adapters import AckedPublish, S3Store, SqsQueue, transient_store_error
from flywheel_ingest.closer import CloseConfig, VersionCloser, replica_id
from flywheel_ingest.handlers import Ingestor, register
from flywheel_ingest.settings import IngestSettings
from flywheel_ingest.topics import SERVICE
from flywheel_ingest.validation import Rules


def create_app(settings: IngestSettings) -> faust.App:
    app = make_app(SERVICE, settings)
    # Ingest consumes SQS, not Kafka: with no topic to subscribe, Faust's consumer would crash at start-up.
    app.producer_only = True
    register(app, build_ingestor(app, settings))
    return app


def build_ingestor(app: faust.App, settings: IngestSettings) -> Ingestor:
    store = S3Store(aws_client(settings, "s3"))
    queue = None
    if settings.notification_queue_url:
        queue = SqsQueue(aws_client(settings, "sqs"), settings.notification_queue_url, settings.sqs_wait_s,
                         settings.sqs_visibility_timeout_s, settings.sqs_max_messages)
    closer = VersionCloser(store, close_config(settings),
                           lambda fmt, n: metrics.BYTES_VALIDATED.labels(fmt).inc(n))
    # One thread for the SQS long-poll, one for the scan, the rest for closes. Watched: a task older than
    # liveness_task_max_s (a wedged S3 read, a full pool) fails /livez (flywheel/health.py).
    executor = health_of(app).watch(WatchedThreadPool(settings.close_workers + 2, name="ingest-io",
                                                      max_task_s=settings.liveness_task_max_s))
    # acked: only once the broker acknowledged an event is its effect recorded in S3 and SQS cleaned up.
    publish = AckedPublish(FaustPublisher(app, build_codec(settings), SERVICE))
    return Ingestor(settings, store, closer, publish.publish, executor, queue, event_size=publish.size,
                    transient=transient_store_error)


def close_config(settings: IngestSettings) -> CloseConfig:
    def rules_for(model_id: str) -> Rules:
        return Rules(settings.columns_for(model_id), settings.label_column, settings.max_distinct_labels,
                     settings.max_line_bytes, settings.max_distinct_columns)

    return CloseConfig(settings.dataset_prefixes, settings.manifest_prefix, settings.state_prefix,
                       settings.marker_name, settings.max_object_bytes, settings.read_chunk_bytes, rules_for,
                       settings.data_dir / SERVICE / "spool", lease_ms=int(settings.claim_lease_s * 1000),
                       owner=replica_id(settings.replica_id))
