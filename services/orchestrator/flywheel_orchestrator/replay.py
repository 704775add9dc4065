"""Fold the event log into run state (pure: records in, state and work list out).

Used once per deployment, to migrate run state that lived only in the topics into the per-model state
documents (statestore.py); after that, state is loaded from S3 and topic retention no longer matters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flywheel.events import to_millis
from flywheel_orchestrator import events
from flywheel_orchestrator.core import Orchestration
from flywheel_orchestrator.domain import RunSpec, Trigger
from flywheel_orchestrator.policy import TriggerPolicy
from flywheel_orchestrator.statestore import Snapshot, plain, spec_to_dict

ENDINGS = ("TrainingRunSucceeded", "TrainingRunFailed", "TrainingRunSuperseded")


@dataclass
class Recovered:
    """Runs started but never ended (to resume), datasets that arrived but never launched, and each model's
    newest succeeded run with its TrainingRunSucceeded envelope (for the promotion gate to catch up)."""

    in_flight: dict[str, tuple[RunSpec, dict[str, Any]]] = field(default_factory=dict)
    untrained: list[Trigger] = field(default_factory=list)
    last_succeeded: dict[str, tuple[RunSpec, dict[str, Any]]] = field(default_factory=dict)


def fold(orch: Orchestration, items: Iterable[tuple[str, str, dict[str, Any]]],
         manages: Callable[[str], bool] = lambda _: True) -> Recovered:
    """`items` are (topic, schema name, record), oldest first."""
    out, latest_event, specs, newest_success = Recovered(), {}, {}, {}
    for topic_name, name, record in items:
        model_id = record.get("model_id", "")
        if not manages(model_id):
            continue
        short = name.rsplit(".", 1)[-1]
        if short == "DatasetVersionReady":
            orch.record_dataset(events.dataset_ref(record))
            latest_event[model_id] = (topic_name, name, record)
        elif short == "TrainingRunStarted":
            manifests = {v: d.manifest_uri for v, d in orch.state(model_id).datasets.items()}
            spec = specs[record["run_id"]] = events.spec_of_started(record, manifests)
            orch.record_started(spec, to_millis(record["envelope"]["occurred_at"]))
            if spec.run_id in orch.state(model_id).in_flight:
                out.in_flight[spec.run_id] = (spec, record["envelope"])
        elif short in ENDINGS:
            orch.record_ended(model_id, record["run_id"])
            out.in_flight.pop(record["run_id"], None)
            if short == "TrainingRunSucceeded":
                newest_success[model_id] = (record["run_id"], record["envelope"])
    # Resolved after the fold: a run's end may precede its start in the merged log (same millisecond).
    out.last_succeeded = {model_id: (specs[run_id], succeeded) for model_id, (run_id, succeeded)
                          in newest_success.items() if run_id in specs}
    for model_id, (topic_name, name, record) in latest_event.items():
        if record["dataset_version_id"] not in orch.state(model_id).trained_versions:
            out.untrained.append(events.trigger_of(name, topic_name, record, to_millis(
                record["envelope"]["occurred_at"])))
    return out



def snapshots_from_log(items: Iterable[tuple[str, str, dict[str, Any]]],
                       manages: Callable[[str], bool] = lambda _: True) -> dict[str, Snapshot]:
    """Per-model state documents from the event log: runs never ended stay in flight (the owner re-attaches),
    a newest dataset version never trained waits as a due debounced trigger, and the newest succeeded run
    is handed to the promotion gate's catch-up (idempotent by its TrainingRunSucceeded id)."""
    orch = Orchestration(TriggerPolicy())
    recovered = fold(orch, items, manages)
    snapshots = {model_id: Snapshot(model_id, st, owner="migration") for model_id, st in orch.models.items()}
    for run_id, (spec, envelope) in recovered.in_flight.items():
        snapshots[spec.model_id].started[run_id] = plain(envelope)
    for trigger in recovered.untrained:
        st = snapshots[trigger.model_id].state
        st.pending, st.pending_due_ms = trigger, 0
    for model_id, (spec, succeeded) in recovered.last_succeeded.items():
        snapshots[model_id].outbox.append({"kind": "catch_up", "spec": spec_to_dict(spec),
                                           "succeeded": plain(succeeded)})
    return snapshots
