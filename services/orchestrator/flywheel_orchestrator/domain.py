"""What the orchestrator reasons about: datasets, triggers, runs and the decisions it takes (pure data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flywheel_orchestrator.policy import Kind


@dataclass(frozen=True)
class DatasetRef:
    """A dataset version as announced by DatasetVersionReady."""

    model_id: str
    dataset_version_id: str
    manifest_uri: str
    row_count: int
    objects: tuple[tuple[str, str, int], ...] = ()  # (key, etag, rows)
    landed_at_ms: int | None = None
    prefix: str = ""  # <dataset prefix><model_id>/<version>/: the version name tells feedback (trainingdata.py)


@dataclass(frozen=True)
class Trigger:
    """A request for a run: new data, or a retrain request with its evidence."""

    kind: Kind
    model_id: str
    event_id: str
    causation: dict[str, Any]  # the causing event's envelope: the chain's lineage carries on from it
    received_at_ms: int
    dataset: DatasetRef | None = None  # only for NEW_DATA
    evidence: dict[str, str] = field(default_factory=dict)  # rule, metric, threshold... of a breach


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to launch, resume or report one run; rebuilt from TrainingRunStarted after a crash."""

    run_id: str
    model_id: str
    dataset_version_id: str
    kind: Kind
    manifest_uri: str
    trigger_event_id: str
    correlation_id: str
    data_landed_at_ms: int | None = None
    lineage: dict[str, str] = field(default_factory=dict)
    # Every version the run trains on, (dataset_version_id, manifest_uri), base first (trainingdata.py);
    # empty: the one version above alone (a run recorded before the training-data policy).
    training_data: tuple[tuple[str, str], ...] = ()

    @property
    def job_name(self) -> str:
        return self.run_id

    @property
    def training_versions(self) -> tuple[tuple[str, str], ...]:
        return self.training_data or ((self.dataset_version_id, self.manifest_uri),)

    @property
    def training_version_ids(self) -> list[str]:
        return [version for version, _ in self.training_versions]


@dataclass(frozen=True)
class Launch:
    spec: RunSpec
    trigger: Trigger | None


@dataclass(frozen=True)
class Supersede:
    stale: RunSpec
    by: RunSpec


@dataclass(frozen=True)
class Skip:
    model_id: str
    kind: Kind
    trigger_event_id: str
    reason: str
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Defer:
    """Held back, not dropped: a debounce window or a full run slot; it launches later."""

    model_id: str
    kind: Kind
    trigger_event_id: str
    reason: str
    until_ms: int | None = None


Decision = Launch | Supersede | Skip | Defer


def kind_of(decision: Decision) -> Kind:
    """The trigger kind a decision is about (for metrics and logs)."""
    if isinstance(decision, Launch):
        return decision.spec.kind
    if isinstance(decision, Supersede):
        return decision.by.kind
    return decision.kind
