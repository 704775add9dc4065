"""Serving settings (FLYWHEEL_* environment variables), validated at start-up."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from flywheel.settings import FlywheelSettings

_PREFIX_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ServingSettings(FlywheelSettings):
    # Where training writes artifacts and the lifecycle keeps models/<model_id>/stages.json.
    artifact_bucket: str = "flywheel-artifacts"
    # Models to serve (comma-separated in the environment); empty: every model with a stage document, and
    # any model a promotion names later.
    models: Annotated[tuple[str, ...], NoDecode] = ()
    # Extracted artifacts, one directory per model version (an emptyDir in the cluster).
    cache_dir: Path | None = None
    # Intra-op threads of the forward; pods set CPU requests = limits = this (a shared core costs 50x).
    torch_threads: int = Field(default=2, ge=1, le=64)
    # Dynamic batching: a batch closes at max_batch texts or max_wait_ms after its first request.
    max_batch: int = Field(default=16, ge=1, le=1024)
    max_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    # Tokens per text (longer texts are truncated) and request bounds (larger ones get a 413/400).
    max_length: int = Field(default=128, ge=8, le=512)
    max_texts_per_request: int = Field(default=64, ge=1)
    max_request_bytes: int = Field(default=1_000_000, ge=1024)
    # Follow model.version-promoted / -rolled-back live (off: the stage store at start-up only).
    follow_events: bool = True
    # Download and extract each registered version ahead of its promotion (a promotion then only loads it).
    prefetch_registered: bool = True
    stage_read_timeout_s: float = Field(default=30.0, gt=0)
    # Answers kept for joining feedback (POST /v2/models/{m}/feedback), by request id, oldest dropped first.
    feedback_capacity: int = Field(default=100_000, ge=0)
    # Feedback for an id this replica did not answer goes to serving.feedback-forwarded, which every replica
    # follows, and the replica that answered joins it (202 {"forwarded": true}); needs follow_events. Off: such
    # feedback is counted as unknown and dropped (404).
    feedback_forward: bool = True
    # Live metrics (live.py): model.metrics-observed per (model, version) every window; a window with fewer
    # labelled (or answered) texts than min_samples carries over into the next one.
    metrics_window_s: float = Field(default=10.0, gt=0, le=3600)
    metrics_min_samples: int = Field(default=20, ge=1)
    # Shadow evaluation (shadow.py, docs/decisions/0013-shadow-evaluation.md): the candidate of a model scores
    # this fraction of requests after their response (each costs one more forward of its texts); beyond shadow_max_pending texts waiting for it, a request
    # is not shadowed. Its answers are kept by request id (shadow_capacity) for the feedback join; the paired
    # counts go out as model.shadow-evaluated every metrics_window_s.
    shadow_fraction: float = Field(default=0.25, ge=0, le=1)
    shadow_max_pending: int = Field(default=64, ge=1)
    shadow_capacity: int = Field(default=20_000, ge=1)
    # Texts kept with those answers, in characters (the oldest answers are forgotten first beyond it).
    feedback_text_chars: int = Field(default=16_000_000, ge=0)
    # Data flywheel (harvest.py): labelled feedback becomes dataset versions
    # s3://<data_bucket>/<dataset_prefix><model_id>/feedback-<UTC time>-<replica>/ that ingest validates.
    # Off: texts are not kept past the answer and nothing is written (where texts may hold personal data).
    harvest_enabled: bool = True
    data_bucket: str = "flywheel-data"
    dataset_prefix: str = "datasets/"  # one of ingest's FLYWHEEL_DATASET_PREFIXES
    # The columns ingest requires of a model's data, same variables and defaults as ingest's: the text goes in
    # the first required column that is not the label column.
    required_columns: tuple[str, ...] = ("text", "label")
    model_columns: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    label_column: str = "label"
    # A model's rows are written every harvest_interval_s (once there are harvest_min_rows) or at once at
    # harvest_max_rows; rows S3 does not take are kept, up to harvest_max_pending_rows, and retried.
    harvest_interval_s: float = Field(default=300.0, gt=0)
    harvest_max_rows: int = Field(default=500, ge=1)
    harvest_min_rows: int = Field(default=20, ge=1)
    harvest_max_pending_rows: int = Field(default=50_000, ge=1)
    # This replica's name in version names (the pod name; the host name when unset).
    replica_id: str | None = None

    @field_validator("models", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("dataset_prefix")
    @classmethod
    def _dataset_prefix(cls, value: str) -> str:
        parts = value.split("/")
        if not value.endswith("/") or not all(_PREFIX_PART.match(p) for p in parts[:-1]):
            raise ValueError(f"{value!r}: expected a relative prefix like 'datasets/' (safe parts, ending in '/')")
        return value

    @model_validator(mode="after")
    def _harvest_bounds(self) -> ServingSettings:
        if self.harvest_min_rows > self.harvest_max_rows:
            raise ValueError("harvest_min_rows must not exceed harvest_max_rows")
        return self

    def columns_for(self, model_id: str) -> tuple[str, ...]:
        return self.model_columns.get(model_id, self.required_columns)

    @property
    def model_cache(self) -> Path:
        return self.cache_dir or self.data_dir / "serving-models"
