"""Ingest settings (FLYWHEEL_* environment variables); a bad value fails at start-up naming the field."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from flywheel.settings import FlywheelSettings

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class IngestSettings(FlywheelSettings):
    data_bucket: str = "flywheel-data"
    # Objects under these prefixes form datasets: <prefix><model_id>/<version>/<files>.
    dataset_prefixes: tuple[str, ...] = ("datasets/",)
    manifest_prefix: str = "manifests/"
    # Scan cursor and done-records (the durable dedup guard) live here, outside every dataset prefix.
    state_prefix: str = "ingest-state/"
    marker_name: str = "_SUCCESS"
    # A version without a marker closes once its newest object is this old.
    quiet_period_s: float = Field(300.0, gt=0)
    # None: scan-only detection (no S3 -> SQS wiring).
    notification_queue_url: str | None = None
    sqs_wait_s: int = Field(1, ge=0, le=20)
    sqs_max_messages: int = Field(10, ge=1, le=10)
    # A message not deleted (worker died mid-version) is redelivered after this long.
    sqs_visibility_timeout_s: int = Field(60, ge=1, le=43200)
    scan_interval_s: float = Field(60.0, gt=0)
    scan_page_size: int = Field(1000, ge=1, le=1000)
    scan_max_keys_per_tick: int = Field(10_000, ge=1)
    max_object_bytes: int = Field(512 * 1024 * 1024, ge=1)
    read_chunk_bytes: int = Field(1024 * 1024, ge=1024)
    required_columns: tuple[str, ...] = ("text", "label")
    # Per-model override of required_columns, e.g. {"sentiment": ["review", "label"]}.
    model_columns: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    label_column: str = "label"
    max_distinct_labels: int = Field(10_000, ge=1)
    # Bounded reading (flywheel.datareader): a longer line or CSV record is refused before it is parsed.
    max_line_bytes: int = Field(1024 * 1024, ge=1024)
    max_distinct_columns: int = Field(1_000, ge=1)
    close_workers: int = Field(4, ge=1, le=64)
    # Permanent S3 errors (access denied, ...) before a READ_ERROR rejection; transient ones (throttling, 5xx,
    # timeouts, dropped connections) are retried without limit and never recorded as final.
    max_read_attempts: int = Field(3, ge=1)
    # Back-off after a failed close or publish: doubles per attempt from retry_backoff_s up to this cap.
    retry_backoff_s: float = Field(0.5, gt=0)
    retry_max_backoff_s: float = Field(60.0, gt=0)
    # The largest event ingest publishes (key + framed value). Kafka producers and brokers refuse records over
    # ~1 MB; a DatasetVersionReady over this limit (a version of ~10,000 objects) is rejected as
    # VERSION_TOO_LARGE instead of retried forever.
    max_event_bytes: int = Field(900_000, ge=16_384, le=1_000_000)
    # Bounded memory for "already handled" object ids; S3 done-records cover what it forgets.
    dedup_cache_size: int = Field(100_000, ge=100)
    # N replicas (docs/decisions/0010-ingest-scale-out.md): a replica announces a version only under its claim
    # in S3. A claim not renewed for claim_lease_s (its owner died) is taken over, with the same event id;
    # a replica that finds another's live claim looks again every claim_recheck_s. replica_id names this
    # process in claims and logs (the pod name; the host name when unset), suffixed per process.
    replica_id: str | None = None
    claim_lease_s: float = Field(60.0, ge=1)
    claim_recheck_s: float = Field(2.0, gt=0)

    @field_validator("data_bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not _BUCKET.match(value):
            raise ValueError(f"{value!r} is not a valid S3 bucket name")
        return value

    @field_validator("dataset_prefixes")
    @classmethod
    def _dataset_prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one dataset prefix is needed")
        return tuple(_prefix(p) for p in value)

    @field_validator("manifest_prefix", "state_prefix")
    @classmethod
    def _other_prefix(cls, value: str) -> str:
        return _prefix(value)

    @field_validator("marker_name")
    @classmethod
    def _marker(cls, value: str) -> str:
        if not value.startswith("_") or "/" in value:
            raise ValueError("the marker must be a '_'-prefixed file name without '/'")
        return value

    @field_validator("required_columns")
    @classmethod
    def _columns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not c for c in value):
            raise ValueError("required_columns needs at least one non-empty name")
        return value

    @model_validator(mode="after")
    def _outputs_outside_datasets(self) -> IngestSettings:
        # Ingest's own writes must never look like new data to its own scan and notifications.
        for name in ("manifest_prefix", "state_prefix"):
            own = getattr(self, name)
            if any(own.startswith(p) or p.startswith(own) for p in self.dataset_prefixes):
                raise ValueError(f"{name}={own!r} overlaps the dataset_prefixes {self.dataset_prefixes}")
        return self

    def columns_for(self, model_id: str) -> tuple[str, ...]:
        return self.model_columns.get(model_id, self.required_columns)


def _prefix(value: str) -> str:
    """'a/b/' style: relative, '/'-terminated, no empty, '.' or '..' parts."""
    parts = value.split("/")
    if not value.endswith("/") or not all(_PREFIX_PART.match(p) for p in parts[:-1]):
        raise ValueError(f"{value!r}: expected a relative prefix like 'datasets/' (safe parts, ending in '/')")
    return value
