"""Prometheus metrics of the ingest service (default registry, served on the Faust web port at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

OBJECTS_SEEN = Counter("flywheel_ingest_objects_seen_total", "S3 objects reported, before dedup", ["source"])
DUPLICATES = Counter("flywheel_ingest_duplicates_dropped_total", "Reports of an object already known", ["source"])
BYTES_VALIDATED = Counter("flywheel_ingest_bytes_validated_total", "Bytes read and validated", ["format"])
VERSIONS_READY = Counter("flywheel_ingest_versions_ready_total", "DatasetVersionReady events produced")
VERSIONS_REJECTED = Counter("flywheel_ingest_versions_rejected_total", "DatasetRejected events produced", ["reason"])
DEAD_LETTERED = Counter("flywheel_ingest_notifications_dead_lettered_total", "Undecodable SQS messages")
CLOSE_RETRIES = Counter("flywheel_ingest_close_retries_total",
                        "Version closes retried after an error, by cause (transient, permanent, publish)", ["cause"])
UNPUBLISHABLE = Counter("flywheel_ingest_unpublishable_total",
                        "Records refused for good (over FLYWHEEL_MAX_EVENT_BYTES, or by the broker), by topic",
                        ["topic"])
CLAIMS = Counter("flywheel_ingest_claims_total",
                 "Claims on a version or refused object that did not simply succeed, by outcome: held (another "
                 "replica's live claim), lost (taken over while this replica held it), taken_over (an expired "
                 "claim of a dead or stalled replica, announced with its event id)", ["outcome"])
DETECTION_LATENCY = Histogram(
    "flywheel_ingest_detection_latency_seconds",
    "Newest object's LastModified (the marker, usually) -> event produced",
    buckets=(0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900))
