"""Durable per-model run state in S3, fenced by an owner epoch (docs/decisions/0009-orchestrator-scale-out.md).

One JSON document per model, `s3://<artifact bucket>/orchestrator/models/<model_id>/state.json`:

    {"format": 1, "model_id": "...", "epoch": 7, "owner": "<worker>", "updated_at": ms,
     "state": {...ModelState...},              # datasets, runs in flight, cooldowns, debounced/queued triggers
     "started": {"<run_id>": {envelope}},      # each in-flight run's TrainingRunStarted envelope (its causation)
     "outbox": [{"kind": "event", "topic": "...", "record": {...}}, {"kind": "stop", "job_name": "..."}, ...]}

Every write is conditional on the ETag this worker last read or wrote (`IfMatch`; `IfNoneMatch: *` for a
model's first document), so a worker whose epoch another worker replaced can write nothing more: its write
fails with 412 and it lets the model go. `runs/<run_id>.json` is created once (`IfNoneMatch: *`) before a
run's first effect: a run id, and so a training job name, is never used by two decisions. Each write keeps
the document bounded: the ids of the last KEEP_FINISHED finished runs, never what a decision still reads
(`prune`).
Blocking boto3 calls: use from a worker thread.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flywheel.events import to_millis
from flywheel.s3conditional import get_json_etag, put_json_if
from flywheel_orchestrator.core import ModelState, OrderedIds
from flywheel_orchestrator.domain import DatasetRef, RunSpec, Trigger
from flywheel_orchestrator.policy import Kind
from flywheel_orchestrator.trainingdata import is_feedback

FORMAT = 1
PREFIX = "orchestrator/"
MODELS = PREFIX + "models/"
MIGRATED_KEY = PREFIX + "migrated.json"  # the one-time fold of the event log into state documents is done
KEEP_FINISHED = 256  # per model: finished runs (ids, triggers, trained versions) kept in the document (prune)


def state_key(model_id: str) -> str:
    return f"{MODELS}{model_id}/state.json"


def run_key(run_id: str) -> str:
    return f"{PREFIX}runs/{run_id}.json"


# --- ModelState <-> JSON (pure) ----------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """JSON-safe copy: decoded Avro timestamps (datetimes) become epoch milliseconds, tuples lists."""
    if isinstance(value, datetime):
        return to_millis(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return value


def dataset_to_dict(ref: DatasetRef) -> dict[str, Any]:
    return {"model_id": ref.model_id, "dataset_version_id": ref.dataset_version_id, "manifest_uri": ref.manifest_uri,
            "row_count": ref.row_count, "objects": [list(o) for o in ref.objects], "landed_at_ms": ref.landed_at_ms,
            "prefix": ref.prefix}


def dataset_from_dict(doc: dict[str, Any]) -> DatasetRef:
    return DatasetRef(model_id=doc["model_id"], dataset_version_id=doc["dataset_version_id"],
                      manifest_uri=doc["manifest_uri"], row_count=int(doc["row_count"]),
                      objects=tuple((k, e, int(r)) for k, e, r in doc.get("objects") or ()),
                      landed_at_ms=doc.get("landed_at_ms"), prefix=str(doc.get("prefix") or ""))


def trigger_to_dict(trigger: Trigger) -> dict[str, Any]:
    return {"kind": trigger.kind.value, "model_id": trigger.model_id, "event_id": trigger.event_id,
            "causation": plain(trigger.causation), "received_at_ms": trigger.received_at_ms,
            "dataset": dataset_to_dict(trigger.dataset) if trigger.dataset else None,
            "evidence": dict(trigger.evidence)}


def trigger_from_dict(doc: dict[str, Any]) -> Trigger:
    return Trigger(kind=Kind(doc["kind"]), model_id=doc["model_id"], event_id=doc["event_id"],
                   causation=dict(doc.get("causation") or {}), received_at_ms=int(doc.get("received_at_ms") or 0),
                   dataset=dataset_from_dict(doc["dataset"]) if doc.get("dataset") else None,
                   evidence=dict(doc.get("evidence") or {}))


def spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    return {"run_id": spec.run_id, "model_id": spec.model_id, "dataset_version_id": spec.dataset_version_id,
            "kind": spec.kind.value, "manifest_uri": spec.manifest_uri, "trigger_event_id": spec.trigger_event_id,
            "correlation_id": spec.correlation_id, "data_landed_at_ms": spec.data_landed_at_ms,
            "lineage": dict(spec.lineage), "training_data": [list(pair) for pair in spec.training_data]}


def spec_from_dict(doc: dict[str, Any]) -> RunSpec:
    return RunSpec(run_id=doc["run_id"], model_id=doc["model_id"], dataset_version_id=doc["dataset_version_id"],
                   kind=Kind(doc["kind"]), manifest_uri=doc["manifest_uri"], trigger_event_id=doc["trigger_event_id"],
                   correlation_id=doc["correlation_id"], data_landed_at_ms=doc.get("data_landed_at_ms"),
                   lineage=dict(doc.get("lineage") or {}),
                   training_data=tuple((v, uri) for v, uri in doc.get("training_data") or ()))


def live_versions(st: ModelState) -> set[str]:
    """The dataset versions a later decision can need: the latest, the next run's set, those of runs and held
    triggers."""
    needed = {r.dataset_version_id for r in st.in_flight.values()}
    needed |= {t.dataset.dataset_version_id for t in (st.pending, st.queued) if t is not None and t.dataset}
    if st.latest is not None:
        needed.add(st.latest.dataset_version_id)
    needed |= {d.dataset_version_id for d in ([st.base] if st.base else []) + st.feedback}  # the next run's set
    return needed


def prune(st: ModelState, keep: int | None = None) -> None:
    """Forget (in place) the oldest finished runs beyond `keep` per model (KEEP_FINISHED): their run ids, their
    trigger ids, their trained dataset versions and those versions' attempt counters.

    Never pruned: runs in flight and their triggers; cooldowns (last launch per kind); the attempt counters
    and trained mark of every live version (the latest, the next run's set, held triggers', runs'), so a
    retrain, which always runs on the latest version, numbers its attempt from the full count. A version
    whose counter was pruned can only come back through a DatasetVersionReady older than the last `keep`
    runs; its run id is then checked against the run claims (`runs/<run_id>.json`, runs.py): a claimed name
    is skipped, never reused (docs/decisions/0009-orchestrator-scale-out.md, "State size")."""
    keep = KEEP_FINISHED if keep is None else keep
    live = live_versions(st)
    _keep_newest(st.ended, keep, set())  # read by the event-log migration only
    _keep_newest(st.seen_triggers, keep, {r.trigger_event_id for r in st.in_flight.values()})
    _keep_newest(st.trained_versions, keep, live)
    kept = set(st.trained_versions) | live
    for key in [key for key in st.attempts if key[0] not in kept]:
        del st.attempts[key]


def _keep_newest(ids: OrderedIds, keep: int, protect: set[str]) -> None:
    for item in [i for i in ids if i not in protect][: max(0, len(ids) - keep)]:
        del ids[item]


def state_to_dict(st: ModelState) -> dict[str, Any]:
    """Only the datasets a later decision can need (live_versions); id sets oldest first (prune)."""
    needed = live_versions(st)
    return {
        "latest": dataset_to_dict(st.latest) if st.latest else None,
        "datasets": {v: dataset_to_dict(d) for v, d in st.datasets.items() if v in needed},
        "base": st.base.dataset_version_id if st.base else None,
        "feedback": [d.dataset_version_id for d in st.feedback],
        "trained_objects": sorted([k, e] for k, e in st.trained_objects),
        "trained_versions": list(st.trained_versions),
        "in_flight": {run_id: spec_to_dict(spec) for run_id, spec in st.in_flight.items()},
        "ended": list(st.ended),
        "pending": trigger_to_dict(st.pending) if st.pending else None,
        "pending_due_ms": st.pending_due_ms,
        "queued": trigger_to_dict(st.queued) if st.queued else None,
        "last_launch_ms": {k.value: v for k, v in st.last_launch_ms.items()},
        "attempts": [[v, k.value, n] for (v, k), n in st.attempts.items()],
        "seen_triggers": list(st.seen_triggers),
    }


def state_from_dict(doc: dict[str, Any]) -> ModelState:
    latest = dataset_from_dict(doc["latest"]) if doc.get("latest") else None
    datasets = {v: dataset_from_dict(d) for v, d in (doc.get("datasets") or {}).items()}
    base = datasets.get(doc["base"]) if doc.get("base") else None
    if "base" not in doc and latest is not None and not is_feedback(latest):  # a document from before 0012
        base = latest
    return ModelState(
        latest=latest,
        datasets=datasets,
        base=base,
        feedback=[datasets[v] for v in doc.get("feedback") or () if v in datasets],
        trained_objects=frozenset((k, e) for k, e in doc.get("trained_objects") or ()),
        trained_versions=OrderedIds.fromkeys(doc.get("trained_versions") or ()),
        in_flight={run_id: spec_from_dict(s) for run_id, s in (doc.get("in_flight") or {}).items()},
        ended=OrderedIds.fromkeys(doc.get("ended") or ()),
        pending=trigger_from_dict(doc["pending"]) if doc.get("pending") else None,
        pending_due_ms=int(doc.get("pending_due_ms") or 0),
        queued=trigger_from_dict(doc["queued"]) if doc.get("queued") else None,
        last_launch_ms={Kind(k): int(v) for k, v in (doc.get("last_launch_ms") or {}).items()},
        attempts=Counter({(v, Kind(k)): int(n) for v, k, n in doc.get("attempts") or ()}),
        seen_triggers=OrderedIds.fromkeys(doc.get("seen_triggers") or ()),
    )


@dataclass
class Snapshot:
    """What one model's document holds: the run state, the fence (epoch, owner) and the effects not yet done."""

    model_id: str
    state: ModelState = field(default_factory=ModelState)
    epoch: int = 0
    owner: str = ""
    started: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_id -> TrainingRunStarted envelope
    outbox: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, now_ms: int = 0) -> dict[str, Any]:
        prune(self.state)
        live = set(self.state.in_flight)
        return {"format": FORMAT, "model_id": self.model_id, "epoch": self.epoch, "owner": self.owner,
                "updated_at": now_ms, "state": state_to_dict(self.state),
                "started": {r: plain(e) for r, e in self.started.items() if r in live},
                "outbox": plain(self.outbox)}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Snapshot:
        if int(doc.get("format", FORMAT)) > FORMAT:
            raise ValueError(f"state document format {doc['format']} is newer than this orchestrator ({FORMAT})")
        return cls(model_id=doc["model_id"], state=state_from_dict(doc.get("state") or {}),
                   epoch=int(doc.get("epoch") or 0), owner=str(doc.get("owner") or ""),
                   started=dict(doc.get("started") or {}), outbox=list(doc.get("outbox") or []))


def same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for the write time: an unchanged state is not written again."""
    return {**a, "updated_at": 0} == {**b, "updated_at": 0}


class StateStore:
    """The state documents and run claims in S3 (blocking boto3: call from a thread)."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3, self.bucket = s3, bucket

    def load(self, model_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """(document, ETag), or (None, None) for a model with no state yet."""
        return get_json_etag(self.s3, self.bucket, state_key(model_id))

    def save(self, model_id: str, doc: dict[str, Any], etag: str | None) -> str | None:
        """Write if the document is still the version `etag` names (None: create it); the new ETag, or None when
        another worker wrote in between (this worker is fenced out)."""
        return put_json_if(self.s3, self.bucket, state_key(model_id), doc, etag)

    def models(self) -> list[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        found = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=MODELS):
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(MODELS):]
                if rest.endswith("/state.json") and rest.count("/") == 1:
                    found.append(rest.split("/", 1)[0])
        return sorted(found)

    def claim_run(self, spec: RunSpec, owner: str, epoch: int, at_ms: int) -> dict[str, Any]:
        """Create `runs/<run_id>.json` once; the claim that holds the name (this one, or an earlier one)."""
        claim = {"run_id": spec.run_id, "model_id": spec.model_id, "dataset_version_id": spec.dataset_version_id,
                 "trigger": spec.kind.value, "trigger_event_id": spec.trigger_event_id, "owner": owner,
                 "epoch": epoch, "claimed_at": at_ms}
        if put_json_if(self.s3, self.bucket, run_key(spec.run_id), claim, None) is not None:
            return claim
        doc, _ = get_json_etag(self.s3, self.bucket, run_key(spec.run_id))
        return doc or claim

    def migrated(self) -> bool:
        doc, _ = get_json_etag(self.s3, self.bucket, MIGRATED_KEY)
        return doc is not None

    def mark_migrated(self, summary: dict[str, Any]) -> None:
        put_json_if(self.s3, self.bucket, MIGRATED_KEY, summary, None)




