"""Model lifecycle: the stages of each model's versions, held durably in S3.

One JSON document per model, `s3://<artifact bucket>/models/<model_id>/stages.json`, records every
version's stage (registered -> candidate -> production -> archived, or rejected), the production
version and a history of every decision with its evidence. The transitions below are pure functions
on `ModelStages`; `StageStore` is the only code that touches S3. It writes with optimistic
concurrency: a conditional put keyed on the ETag it read (`IfMatch`, or `IfNoneMatch="*"` for a
model's first document), and on 412 PreconditionFailed it re-reads, re-applies the change and tries
again, so two writers never lose each other's update. See docs/decisions/0008-model-lifecycle.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from flywheel.s3conditional import get_json_etag, put_json_if

STAGES = ("registered", "candidate", "production", "archived", "rejected")
PROMOTABLE = frozenset({"registered", "candidate", "archived", "rejected"})
JUDGEABLE = frozenset({"registered", "candidate"})
STAGES_KEY = "models/{model_id}/stages.json"


class IllegalTransition(ValueError):
    """A stage change the lifecycle does not allow (unknown version, rollback with nothing before...)."""


class StageConflict(RuntimeError):
    """Another writer kept changing the document: the update gave up after its retries."""


@dataclass(frozen=True)
class VersionRecord:
    version: str
    stage: str
    artifact_uri: str
    metrics: dict[str, Any] = field(default_factory=dict)
    registered_at: int = 0
    promoted_at: int | None = None
    dataset_version_id: str = ""
    # A candidate in shadow (docs/decisions/0013-shadow-evaluation.md): started_at, against (the production
    # version it is paired with), the live paired counts n, b, c, and the windows already counted.
    shadow: dict[str, Any] = field(default_factory=dict)
    # Every dataset version it was trained on, base first (docs/decisions/0012-retrain-data-policy.md).
    training_dataset_version_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        doc = {"stage": self.stage, "artifact_uri": self.artifact_uri, "metrics": dict(self.metrics),
               "registered_at": self.registered_at, "promoted_at": self.promoted_at,
               "dataset_version_id": self.dataset_version_id}
        if self.training_dataset_version_ids:
            doc["training_dataset_version_ids"] = list(self.training_dataset_version_ids)
        return {**doc, "shadow": dict(self.shadow)} if self.shadow else doc

    def shadow_counts(self) -> dict[str, float]:
        return {k: float(self.shadow.get(k, 0)) for k in SHADOW_COUNTS} if self.shadow else {}

    @classmethod
    def from_dict(cls, version: str, doc: dict[str, Any]) -> VersionRecord:
        return cls(version=version, stage=doc["stage"], artifact_uri=doc.get("artifact_uri", ""),
                   metrics=dict(doc.get("metrics") or {}), registered_at=int(doc.get("registered_at") or 0),
                   promoted_at=doc.get("promoted_at"), dataset_version_id=doc.get("dataset_version_id", ""),
                   shadow=dict(doc.get("shadow") or {}),
                   training_dataset_version_ids=tuple(doc.get("training_dataset_version_ids") or ()))


@dataclass(frozen=True)
class ModelStages:
    model_id: str
    generation: int = 0
    production: str | None = None
    versions: dict[str, VersionRecord] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def production_record(self) -> VersionRecord | None:
        return self.versions.get(self.production) if self.production else None

    def previous_production(self) -> str | None:
        """The version a rollback would restore: the one in production before the current one."""
        lineage = production_lineage(self.history)
        return lineage[-2] if len(lineage) >= 2 else None

    def promoted_at(self) -> int | None:
        record = self.production_record()
        return record.promoted_at if record else None

    def shadow_record(self) -> VersionRecord | None:
        """The candidate serving shadows beside production (start_shadow), if any."""
        shadows = [r for r in self.versions.values() if r.stage == "candidate" and r.shadow]
        return max(shadows, key=lambda r: r.shadow.get("started_at", 0)) if shadows else None

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "generation": self.generation, "production": self.production,
                "versions": {v: r.to_dict() for v, r in self.versions.items()},
                "history": [dict(h) for h in self.history]}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ModelStages:
        versions = {v: VersionRecord.from_dict(v, r) for v, r in (doc.get("versions") or {}).items()}
        return cls(model_id=doc["model_id"], generation=int(doc.get("generation", 0)),
                   production=doc.get("production"), versions=versions,
                   history=list(doc.get("history") or []))


def production_lineage(history: list[dict[str, Any]]) -> list[str]:
    """Versions that were production, oldest first; a rollback pops the one it took out."""
    lineage: list[str] = []
    for entry in history:
        if entry.get("action") == "promote":
            lineage = [v for v in lineage if v != entry["version"]] + [entry["version"]]
        elif entry.get("action") == "rollback" and lineage:
            lineage.pop()
    return lineage


def empty(model_id: str) -> ModelStages:
    return ModelStages(model_id=model_id)


def _entry(at: int, action: str, version: str, from_version: str | None, reason: str,
           evidence: dict[str, Any] | None, extra: dict[str, str] | None = None) -> dict[str, Any]:
    return {**(extra or {}), "at": at, "action": action, "version": version, "from_version": from_version,
            "reason": reason, "evidence": dict(evidence or {})}


def entry_caused_by(stages: ModelStages, cause: str) -> dict[str, Any] | None:
    """The history entry a request (by its event id, `extra={"cause": ...}`) already made, if any."""
    return next((h for h in reversed(stages.history) if cause and h.get("cause") == cause), None)


def _record(stages: ModelStages, version: str) -> VersionRecord:
    record = stages.versions.get(version)
    if record is None:
        raise IllegalTransition(f"model {stages.model_id!r} has no version {version!r}")
    return record


def _with(stages: ModelStages, *records: VersionRecord, production: str | None, entry: dict[str, Any]) -> ModelStages:
    versions = dict(stages.versions)
    versions.update({r.version: r for r in records})
    return replace(stages, versions=versions, production=production, history=[*stages.history, entry])


def register(stages: ModelStages, version: str, artifact_uri: str, *, at: int, metrics: dict[str, Any] | None = None,
             dataset_version_id: str = "", reason: str = "registered",
             training_dataset_version_ids: tuple[str, ...] = ()) -> ModelStages:
    """Record a new version (stage registered); registering a known version again changes nothing."""
    if version in stages.versions:
        return stages
    record = VersionRecord(version, "registered", artifact_uri, dict(metrics or {}), at, None, dataset_version_id,
                           training_dataset_version_ids=tuple(training_dataset_version_ids))
    return _with(stages, record, production=stages.production,
                 entry=_entry(at, "register", version, None, reason, None))


def nominate(stages: ModelStages, version: str) -> ModelStages:
    """registered -> candidate: the version is being judged against the champion (no history entry)."""
    record = _record(stages, version)
    if record.stage == "candidate":
        return stages
    if record.stage != "registered":
        raise IllegalTransition(f"{version!r} is {record.stage}, only a registered version becomes a candidate")
    return replace(stages, versions={**stages.versions, version: replace(record, stage="candidate")})


SHADOW_COUNTS = ("n", "b", "c", "production_correct", "shadow_correct")
MAX_SHADOW_WINDOWS = 2000  # window ids kept per candidate for idempotency (a window redelivered later is ignored)


def start_shadow(stages: ModelStages, version: str, *, at: int, reason: str, evidence: dict[str, Any] | None = None,
                 extra: dict[str, str] | None = None) -> ModelStages:
    """A candidate that passed the offline gate goes into shadow beside production (stage stays candidate); a
    candidate shadowed before it is rejected, superseded (its entry's cause is this one's + '/superseded')."""
    record = _record(stages, version)
    if record.stage not in JUDGEABLE:
        raise IllegalTransition(f"{version!r} is {record.stage}; only a registered or candidate version is shadowed")
    if stages.production is None:
        raise IllegalTransition(f"model {stages.model_id!r} has no production version to shadow {version!r} against")
    old = stages.shadow_record()
    if old is not None and old.version != version:
        cause = {"cause": f"{(extra or {}).get('cause', '')}/superseded"}
        stages = _with(stages, replace(old, stage="rejected"), production=stages.production,
                       entry=_entry(at, "reject", old.version, stages.production,
                                    f"superseded in shadow by {version}", old.shadow_counts(), cause))
    shadow = {"started_at": at, "against": stages.production, **dict.fromkeys(SHADOW_COUNTS, 0), "windows": []}
    return _with(stages, replace(record, stage="candidate", shadow=shadow), production=stages.production,
                 entry=_entry(at, "shadow", version, stages.production, reason, evidence, extra))


def add_shadow_window(stages: ModelStages, version: str, window_id: str, counts: dict[str, int]) -> ModelStages:
    """Add one window of live paired counts to the shadowed candidate (a window already counted changes nothing)."""
    record = _record(stages, version)
    if record.stage != "candidate" or not record.shadow:
        raise IllegalTransition(f"{version!r} is {record.stage}, not a candidate in shadow")
    shadow = record.shadow
    if window_id in shadow.get("windows", []):
        return stages
    updated = {**shadow, **{k: int(shadow.get(k, 0)) + int(counts.get(k, 0)) for k in SHADOW_COUNTS},
               "windows": [*shadow.get("windows", []), window_id][-MAX_SHADOW_WINDOWS:]}
    return replace(stages, versions={**stages.versions, version: replace(record, shadow=updated)})


def promote(stages: ModelStages, version: str, *, at: int, reason: str,
            evidence: dict[str, Any] | None = None, extra: dict[str, str] | None = None) -> ModelStages:
    """Make `version` production; the old production version is archived."""
    record = _record(stages, version)
    if record.stage not in PROMOTABLE:
        raise IllegalTransition(f"{version!r} is already {record.stage}; nothing to promote")
    records = [replace(record, stage="production", promoted_at=at)]
    old = stages.production_record()
    if old is not None:
        records.append(replace(old, stage="archived"))
    return _with(stages, *records, production=version,
                 entry=_entry(at, "promote", version, stages.production, reason, evidence, extra))


def reject(stages: ModelStages, version: str, *, at: int, reason: str,
           evidence: dict[str, Any] | None = None, extra: dict[str, str] | None = None) -> ModelStages:
    """Keep a registered or candidate version out of production."""
    record = _record(stages, version)
    if record.stage not in JUDGEABLE:
        raise IllegalTransition(f"{version!r} is {record.stage}; only a registered or candidate version is rejected")
    return _with(stages, replace(record, stage="rejected"), production=stages.production,
                 entry=_entry(at, "reject", version, stages.production, reason, evidence, extra))


def rollback(stages: ModelStages, *, at: int, reason: str, evidence: dict[str, Any] | None = None,
             extra: dict[str, str] | None = None) -> ModelStages:
    """Put the previous production version back; the current one is archived."""
    current = stages.production_record()
    if current is None:
        raise IllegalTransition(f"model {stages.model_id!r} has no production version to roll back")
    target = stages.previous_production()
    if target is None or target not in stages.versions:
        raise IllegalTransition(f"model {stages.model_id!r} has no previous production version to roll back to")
    restored = replace(stages.versions[target], stage="production", promoted_at=at)
    return _with(stages, replace(current, stage="archived"), restored, production=target,
                 entry=_entry(at, "rollback", target, current.version, reason, evidence, extra))


def now_ms() -> int:
    return int(time.time() * 1000)


class StageStore:
    """The stage documents in S3, updated with conditional puts (blocking boto3: call from a thread)."""

    def __init__(self, s3: Any, bucket: str, *, max_attempts: int = 8) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._max_attempts = max_attempts

    def key(self, model_id: str) -> str:
        return STAGES_KEY.format(model_id=model_id)

    def read(self, model_id: str) -> ModelStages | None:
        stages, _ = self._read(model_id)
        return stages

    def update(self, model_id: str, fn: Callable[[ModelStages], ModelStages]) -> ModelStages:
        """Apply `fn` to the current document and write it back unless another writer got there first.

        `fn` receives an empty document for a model that has none; it must be pure (it may run
        again after a conflict). A result equal to its input is not written. IllegalTransition from
        `fn` propagates unchanged.
        """
        for _ in range(self._max_attempts):
            current, etag = self._read(model_id)
            base = current or empty(model_id)
            changed = fn(base)
            if current is not None and changed.to_dict() == current.to_dict():
                return current
            written = replace(changed, generation=base.generation + 1)
            if self._put(model_id, written, etag):
                return written
        raise StageConflict(f"stages of {model_id!r} kept changing under {self._max_attempts} attempts")

    def models(self) -> list[str]:
        paginator = self._s3.get_paginator("list_objects_v2")
        found = []
        for page in paginator.paginate(Bucket=self._bucket, Prefix="models/"):
            for obj in page.get("Contents", []):
                parts = obj["Key"].split("/")
                if len(parts) == 3 and parts[2] == "stages.json":
                    found.append(parts[1])
        return sorted(found)

    def _read(self, model_id: str) -> tuple[ModelStages | None, str | None]:
        doc, etag = get_json_etag(self._s3, self._bucket, self.key(model_id))
        return (ModelStages.from_dict(doc), etag) if doc is not None else (None, None)

    def _put(self, model_id: str, stages: ModelStages, etag: str | None) -> bool:
        return put_json_if(self._s3, self._bucket, self.key(model_id), stages.to_dict(), etag, indent=1) is not None
